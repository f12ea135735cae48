"""API keys for the inference gateway, without a database round trip per request.

A key's hash maps to a `Principal` (key, tenant, weight, limits) or to the refusal it
earned, cached in this process for `TTL_S`. So a revoked key, a suspended tenant or a new
weight is seen within a second by every process, and at once by the one that made the
change (its saves clear the cache). A miss loads once per key however many requests ask
at the same moment (single flight), so a flood of one key — valid or not — costs the
database one query a second, not one per request. A key used in the last minute is
reloaded in the background before its entry lapses, so its requests do not wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from gateway.errors import OpenAIError

logger = logging.getLogger(__name__)
TTL_S = 1.0
RECENT_S = 60.0  # keys used this recently are kept fresh in the background
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="parity"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: what the gateway needs of the key and its tenant."""

    key_id: int
    key_prefix: str
    tenant: str
    tenant_id: int
    weight: float
    max_concurrent_requests: int | None
    expires_at: datetime | None


class KeyCache:
    # A class attribute, as in DRF's throttles, so tests can move time.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal | OpenAIError]] = {}
        self._loading: dict[tuple[int, str], asyncio.Future[Principal | OpenAIError]] = {}
        self._recent: dict[str, tuple[str, float]] = {}  # digest -> (secret, last used)
        self._refreshers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._refreshers = weakref.WeakKeyDictionary()

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = _bearer_secret(authorization)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = self.clock()
        self._recent[digest] = (secret, now)
        self._keep_fresh()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            outcome = cached[1]
        else:
            outcome = await self._load_once(digest, secret)
        if isinstance(outcome, OpenAIError):
            raise outcome
        if outcome.expires_at is not None and outcome.expires_at <= timezone.now():
            raise _invalid_key()
        return outcome

    def clear(self) -> None:
        self._entries.clear()

    def _keep_fresh(self) -> None:
        """Keys used in the last `RECENT_S` are reloaded in the background before their
        entries expire, so their requests never wait for a reload. Under a flood a reload
        (a thread hop and a query on a busy machine) took up to 1.4 s, and a light tenant,
        whose requests come less often than its entry's lifetime, waited on one nearly
        every time. Entries still expire at `TTL_S`: a revocation is seen as soon as
        before, and a reload that is late only makes a request wait as it did."""
        loop = asyncio.get_running_loop()
        task = self._refreshers.get(loop)
        if task is None or task.done():
            self._refreshers[loop] = loop.create_task(self._refresh_recent())

    async def _refresh_recent(self) -> None:
        while self._recent:
            await asyncio.sleep(self.ttl_s / 4)
            now = self.clock()
            for digest, (secret, used_at) in list(self._recent.items()):
                if now - used_at > RECENT_S:
                    del self._recent[digest]
                    continue
                entry = self._entries.get(digest)
                if entry is not None and entry[0] - now > self.ttl_s / 2:
                    continue  # fresh enough
                try:
                    await self._load_once(digest, secret)
                except Exception:  # the next request loads it, or the next round
                    logger.warning("reloading an API key failed", exc_info=True)

    async def _load_once(self, digest: str, secret: str) -> Principal | OpenAIError:
        slot = (id(asyncio.get_running_loop()), digest)
        pending = self._loading.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        future = self._loading[slot] = asyncio.get_running_loop().create_future()
        try:
            # Thread-sensitive: the gateway gives requests no thread of their own, so misses
            # share Django's one sync thread (a test's, under the test client). A miss is
            # one query, once per key per TTL (single flight): that thread never backs up.
            outcome = await sync_to_async(_load)(secret)
            self._entries[digest] = (self.clock() + self.ttl_s, outcome)
            future.set_result(outcome)
            return outcome
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters see it, the loop need not warn
            raise
        finally:
            del self._loading[slot]


def _bearer_secret(authorization: str | None) -> str:
    if not authorization:
        raise OpenAIError(
            "You didn't provide an API key: send 'Authorization: Bearer <your key>'.",
            status=401,
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1].isascii():
        raise OpenAIError(
            "Malformed Authorization header: use 'Bearer <api key>'.",
            status=401,
            code="invalid_api_key",
            headers=_CHALLENGE,
        )
    return parts[1]


def _invalid_key() -> OpenAIError:
    return OpenAIError(
        "Invalid, revoked or expired API key.",
        status=401,
        code="invalid_api_key",
        headers=_CHALLENGE,
    )


def _load(secret: str) -> Principal | OpenAIError:
    """The key's principal or refusal, from the database (on a worker thread)."""
    from tenants.authentication import touch_last_used
    from tenants.models import ApiKey

    try:
        now = timezone.now()
        key = ApiKey.find(secret)
        if key is None or not key.is_usable(now):
            return _invalid_key()
        tenant = key.tenant
        if not tenant.is_active:
            return OpenAIError(
                "This tenant is suspended; contact the operator.",
                status=403,
                code="tenant_suspended",
            )
        touch_last_used(key, now)
        return Principal(
            key_id=key.pk,
            key_prefix=key.prefix,
            tenant=tenant.slug,
            tenant_id=tenant.pk,
            weight=float(tenant.weight),
            max_concurrent_requests=tenant.max_concurrent_requests,
            expires_at=key.expires_at,
        )
    finally:
        # The pool gets the connection back now, not when this thread happens to end.
        if not connection.in_atomic_block:
            connection.close()


keys = KeyCache()


def _forget_all(**_: Any) -> None:
    keys.clear()


for _model in ("tenants.ApiKey", "tenants.Tenant"):
    post_save.connect(_forget_all, sender=_model, dispatch_uid=f"gateway-keys-{_model}-save")
    post_delete.connect(_forget_all, sender=_model, dispatch_uid=f"gateway-keys-{_model}-del")
