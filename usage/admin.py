"""Usage in the admin: the rows and minute rollups, read-only, and the quarantine, each row
with its error and a retry for when its cause is fixed (the payload is editable, say to
remove a control character from `app`)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from usage.models import QuarantinedUsage, UsageMinute, UsageRecord
from usage.records import RequestUsage
from usage.sink import check_usage
from usage.store_db import DatabaseUsageStore


def retry_row(row: QuarantinedUsage, store: DatabaseUsageStore) -> str | None:
    """Bill the row now; None once it is stored (and out of quarantine), else the error."""
    try:
        usage = RequestUsage.from_dict(json.loads(row.payload))
        check_usage(usage)
        store.write([usage])
    except Exception as exc:  # shown to the operator, kept with the row
        row.error = f"{type(exc).__name__}: {exc}"
        row.retried_at = timezone.now()
        row.save(update_fields=["error", "retried_at"])
        return row.error
    row.delete()
    return None


@admin.register(QuarantinedUsage)
class QuarantinedUsageAdmin(admin.ModelAdmin):
    list_display = ("request_id", "error", "source", "created_at", "retried_at")
    search_fields = ("request_id", "error", "source")
    readonly_fields = ("fingerprint", "request_id", "error", "source", "created_at", "retried_at")
    actions = ("retry",)

    @admin.action(description="Retry billing the selected rows")
    def retry(self, request: HttpRequest, queryset: QuerySet[QuarantinedUsage]) -> None:
        store = DatabaseUsageStore()
        rows = list(queryset)
        errors = [error for row in rows if (error := retry_row(row, store)) is not None]
        if len(errors) < len(rows):
            self.message_user(request, f"{len(rows) - len(errors)} rows billed.", messages.SUCCESS)
        if errors:
            message = f"{len(errors)} rows still refused; the first: {errors[0]}"
            self.message_user(request, message, messages.ERROR)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the system writes (usage): operators look, nobody edits."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "finished_at",
        "request_id",
        "tenant",
        "model",
        "app",
        "status",
        "prompt_tokens",
        "output_tokens",
        "kv_gib_seconds",
        "latency_ms",
    ]
    list_filter = ["tenant", "status", "model"]
    list_select_related = ["tenant"]
    search_fields = ["request_id", "tenant__slug", "app"]
    date_hierarchy = "finished_at"


@admin.register(UsageMinute)
class UsageMinuteAdmin(ReadOnlyAdmin):
    list_display = [
        "minute",
        "tenant",
        "api_key_id",
        "model",
        "app",
        "num_requests",
        "num_aborted",
        "num_errors",
        "prompt_tokens",
        "output_tokens",
        "kv_gib_seconds",
    ]
    list_filter = ["tenant", "model"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__slug", "app"]
    date_hierarchy = "minute"
