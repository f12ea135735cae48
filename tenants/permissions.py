"""Who may call what: staff do everything; a tenant key sees only its own tenant's objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission

from tenants.audit import Actor
from tenants.authentication import TenantPrincipal

if TYPE_CHECKING:  # DRF imports its default permissions while rest_framework.views loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


def principal_of(request: Request) -> TenantPrincipal | None:
    user = request.user
    return user if isinstance(user, TenantPrincipal) else None


def actor_of(request: Request) -> Actor:
    principal = principal_of(request)
    if principal is not None:
        return Actor.for_key(principal.key)
    return Actor.for_user(request.user)


def _is_staff(request: Request) -> bool:
    return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class IsStaff(BasePermission):
    message = "Staff only: sign in as a staff user."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _is_staff(request)


class IsStaffOrTenantKey(BasePermission):
    message = "Use a staff login or this tenant's API key."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _is_staff(request) or principal_of(request) is not None


class IsTenantKey(BasePermission):
    message = "This endpoint needs a tenant API key (Authorization: Bearer <key>)."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return principal_of(request) is not None


class IsStaffHidingOthers(IsStaff):
    """Staff only, but a tenant key asking for another tenant's object gets 404, not 403,
    so that keys cannot probe which tenants exist. The view scopes its queryset to the key's
    own tenant; the object lookup then fails before this permission is asked."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        is_detail = bool(getattr(view, "detail", False))
        return _is_staff(request) or (is_detail and principal_of(request) is not None)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        return _is_staff(request)
