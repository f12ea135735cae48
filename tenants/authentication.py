"""Tenant API keys as DRF authentication: `Authorization: Bearer <secret>`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from tenants.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

# last_used_at is written at most once a minute per key: a database write per request
# would cost more than the request's own bookkeeping.
LAST_USED_RESOLUTION_S = 60


class TenantPrincipal:
    """The `request.user` of a request made with a tenant's key. Never staff."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True
    pk = None

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.tenant = key.tenant

    def get_username(self) -> str:
        return f"{self.tenant.slug}/{self.key.prefix}"

    def __str__(self) -> str:
        return self.get_username()


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"
    # A class attribute, as in DRF's throttles, so tests can move time.
    clock: Callable[[], datetime] = staticmethod(timezone.now)

    def authenticate(self, request: Request) -> tuple[TenantPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer <api key>'."
            )
        key = self._usable_key(parts[1])
        if not key.tenant.is_active:
            raise exceptions.PermissionDenied("This tenant is suspended; contact the operator.")
        touch_last_used(key, self.clock())
        return TenantPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="parity"'

    def _usable_key(self, raw: bytes) -> ApiKey:
        try:
            secret = raw.decode("ascii")
        except UnicodeDecodeError:
            secret = ""
        key = ApiKey.find(secret) if secret else None
        if key is None or not key.is_usable(self.clock()):
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        return key


def touch_last_used(key: ApiKey, now: datetime) -> None:
    try:
        due = cache.add(f"parity:key-used:{key.pk}", 1, timeout=LAST_USED_RESOLUTION_S)
    except Exception:
        # Bookkeeping, not authentication: a cache that does not answer must not fail the
        # request. The next request that reaches the cache records the use.
        logger.warning("cache unavailable; last use of key %s not recorded", key.prefix)
        return
    if due:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
