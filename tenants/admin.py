"""Django admin for the domain model. Every save and delete goes through `tenants.services`,
so changes made here are audited exactly like changes made through the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from tenants import services
from tenants.audit import Actor
from tenants.models import ApiKey, AuditEvent, Plan, Tenant

admin.site.site_header = "Parity administration"
admin.site.site_title = "Parity admin"
admin.site.index_title = "Tenants, weights, keys and plans"


class AuditedAdmin(admin.ModelAdmin):
    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        if change:
            changes = {name: getattr(obj, name) for name in form.changed_data}
            services.update(actor, obj, changes)
        else:
            services.create(actor, obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.delete(Actor.for_user(request.user), obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    list_display = [
        "name",
        "currency",
        "price_input_per_mtok",
        "price_cached_input_per_mtok",
        "price_output_per_mtok",
        "price_kv_gib_hour",
    ]
    search_fields = ["name"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are created on their own page, which shows the secret once


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin):
    list_display = ["slug", "name", "weight", "status", "plan", "max_concurrent_requests"]
    list_editable = ["weight", "status"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name"]
    inlines = [ApiKeyInline]


@admin.action(description="Revoke selected keys")
def revoke_keys(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
    actor = Actor.for_user(request.user)
    num_revoked = sum(services.revoke_key(actor, key) for key in queryset)
    modeladmin.message_user(request, f"Revoked {num_revoked} key(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    list_display = ["prefix", "tenant", "name", "created_at", "expires_at", "revoked_at"]
    list_filter = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "created_at", "revoked_at", "last_used_at"]
    actions = [revoke_keys]

    add_fields = ("tenant", "name", "expires_at")
    change_fields = (
        "tenant",
        "name",
        "prefix",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.change_fields if obj is not None else self.add_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "tenant"] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted: usage and audit rows point at them

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = services.issue_key(
            Actor.for_user(request.user), obj.tenant, obj.name, obj.expires_at
        )
        obj.pk = issued.key.pk
        # Held on the request only: the page that follows shows it once, and nothing stores it.
        request._issued_secret = issued.secret  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None
    ) -> HttpResponse:
        secret = getattr(request, "_issued_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "key": ApiKey.objects.get(pk=obj.pk),
            "secret": secret,
            "opts": self.opts,
            "title": "API key created",
        }
        return TemplateResponse(request, "admin/tenants/apikey/secret_once.html", context)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type", "actor_type"]
    search_fields = ["actor_label", "object_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
