"""The operations that change tenants, keys and plans. Each one is atomic and audited, and
both the REST API and the admin call them, so there is one way to change anything."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from tenants import audit
from tenants.audit import Actor
from tenants.models import ApiKey, AuditAction, IssuedKey, Tenant


@transaction.atomic
def create(actor: Actor, obj: models.Model) -> models.Model:
    obj.full_clean()
    obj.save()
    audit.record(actor, AuditAction.CREATE, obj, after=audit.snapshot(obj))
    return obj


@transaction.atomic
def update(actor: Actor, obj: models.Model, changes: dict[str, Any]) -> models.Model:
    """Apply `changes` to a row locked for the duration, so concurrent edits serialise."""
    locked = type(obj)._default_manager.select_for_update().get(pk=obj.pk)
    before = audit.snapshot(locked)
    for name, value in changes.items():
        setattr(locked, name, value)
    locked.full_clean()
    if _changed(before, audit.snapshot(locked)):
        locked.save()
        audit.record(actor, AuditAction.UPDATE, locked, before=before, after=audit.snapshot(locked))
    return locked


def _changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    # A save that only moves the updated_at stamp is no change worth a row.
    return {k: v for k, v in before.items() if k != "updated_at"} != {
        k: v for k, v in after.items() if k != "updated_at"
    }


@transaction.atomic
def delete(actor: Actor, obj: models.Model) -> None:
    before = audit.snapshot(obj)
    audit.record(actor, AuditAction.DELETE, obj, before=before)
    obj.delete()


@transaction.atomic
def issue_key(
    actor: Actor, tenant: Tenant, name: str, expires_at: datetime | None = None
) -> IssuedKey:
    issued = ApiKey.issue(tenant, name, expires_at)
    audit.record(actor, AuditAction.CREATE, issued.key, after=audit.snapshot(issued.key))
    return issued


@transaction.atomic
def revoke_key(actor: Actor, key: ApiKey) -> bool:
    """Revoke once; revoking an already revoked key changes nothing and returns False."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.is_revoked:
        return False
    before = audit.snapshot(locked)
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    audit.record(actor, AuditAction.REVOKE, locked, before=before, after=audit.snapshot(locked))
    return True
