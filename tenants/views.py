"""REST API views. Thin: scoping and permissions here, changes in `tenants.services`."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import services
from tenants.filters import ApiKeyFilter, AuditEventFilter, TenantFilter
from tenants.models import ApiKey, AuditEvent, Plan, Tenant
from tenants.permissions import (
    IsStaffHidingOthers,
    IsStaffOrTenantKey,
    IsTenantKey,
    actor_of,
    principal_of,
)
from tenants.serializers import (
    ApiKeySerializer,
    AuditEventSerializer,
    IssuedKeySerializer,
    MeSerializer,
    PlanSerializer,
    TenantSerializer,
)


def visible_tenants(request: Request) -> QuerySet[Tenant]:
    """All tenants for staff; only its own for a tenant key."""
    tenants = Tenant.objects.select_related("plan")
    principal = principal_of(request)
    return tenants.filter(pk=principal.tenant.pk) if principal else tenants


class TenantViewSet(viewsets.ModelViewSet):
    serializer_class = TenantSerializer
    permission_classes = [IsStaffHidingOthers]
    filterset_class = TenantFilter
    lookup_field = "slug"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Tenant]:
        return visible_tenants(self.request)

    def perform_destroy(self, instance: Tenant) -> None:
        services.delete(actor_of(self.request), instance)


class ApiKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """A tenant's keys. DELETE revokes: the row stays for the audit trail and usage reports."""

    serializer_class = ApiKeySerializer
    permission_classes = [IsStaffOrTenantKey]
    filterset_class = ApiKeyFilter

    def tenant(self) -> Tenant:
        if not hasattr(self, "_tenant"):
            slug = self.kwargs["tenant_slug"]
            self._tenant = get_object_or_404(visible_tenants(self.request), slug=slug)
        return self._tenant

    def get_queryset(self) -> QuerySet[ApiKey]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no URL kwargs
            return ApiKey.objects.none()
        return ApiKey.objects.filter(tenant=self.tenant()).select_related("tenant")

    @extend_schema(request=ApiKeySerializer, responses={201: IssuedKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.issue_key(
            actor_of(request),
            self.tenant(),
            serializer.validated_data["name"],
            serializer.validated_data.get("expires_at"),
        )
        body = IssuedKeySerializer(issued.key, context=self.get_serializer_context()).data
        body["secret"] = issued.secret
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiKey) -> None:
        services.revoke_key(actor_of(self.request), instance)


class PlanViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Plan.objects.all()
    serializer_class = PlanSerializer
    filterset_fields = ["currency"]
    http_method_names = ["get", "post", "patch", "head", "options"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter


class MeView(APIView):
    """The tenant that owns the calling key."""

    permission_classes = [IsTenantKey]

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        if principal is None:  # IsTenantKey already refused; this keeps the type checker honest
            raise PermissionDenied(IsTenantKey.message)
        return Response(MeSerializer(principal.tenant).data)
