"""Audit trail: every change to a tenant, weight, key or plan records who did it and how.

Callers hold a transaction open around the change and the record, so an audit event exists
exactly when the change does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import models

from tenants.models import ActorType, ApiKey, AuditAction, AuditEvent

# Fields that never enter an audit record: a hash of a secret is still a credential.
_HIDDEN_FIELDS = frozenset({"secret_hash"})


@dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    label: str
    user: Any = None  # the Django user, when a user acted
    key: ApiKey | None = None

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(ActorType.USER, user.get_username(), user=user)

    @classmethod
    def for_key(cls, key: ApiKey) -> Actor:
        return cls(ActorType.API_KEY, f"{key.tenant.slug}/{key.prefix}", key=key)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, label)


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The object's concrete fields as JSON-safe values (Decimals as strings, to stay exact)."""
    data: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.name not in _HIDDEN_FIELDS:
            data[field.name] = _json_safe(field, field.value_from_object(obj))
    return data


def _json_safe(field: models.Field[Any, Any], value: Any) -> Any:
    if isinstance(value, Decimal):
        # At the column's scale, so "7" typed in a form and "7.0000" read back compare equal.
        places = getattr(field, "decimal_places", None)
        return str(value.quantize(Decimal(1).scaleb(-places)) if places is not None else value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def record(
    actor: Actor,
    action: AuditAction,
    obj: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor_type=actor.type,
        actor_user=actor.user,
        actor_key=actor.key,
        actor_label=actor.label,
        action=action,
        object_type=obj._meta.model_name or type(obj).__name__.lower(),
        object_id=str(obj.pk),
        before=before,
        after=after,
    )
