"""The API's side of a generation: admission, hand-off to the engine pool, the event stream.

A `Call` is one request in flight from the API's point of view. It holds an admission
slot from `admit()` until `close()`, and cancels the request in the engine if the client
leaves (`abort()`); the worker still records the partial usage, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from celery import current_app
from django.conf import settings
from kombu.exceptions import OperationalError

from tenants.inference.errors import OpenAIError
from tenants.models import Tenant
from workers.channels import Channels, Event, SlotRequest
from workers.protocol import GenerationRequest

logger = logging.getLogger(__name__)

# How long a read waits before the caller gets a chance to send an SSE keep-alive, which
# is also how fast a client that hung up is noticed while its request is still queued.
POLL_S = 1.0
SUBMIT_ATTEMPTS = 3
UNLIMITED = 2**31  # a tenant with no concurrency limit of its own


class Call:
    def __init__(self, channels: Channels, request: GenerationRequest, tenant: Tenant) -> None:
        self.channels = channels
        self.request = request
        self.tenant = tenant
        self._admitted = False
        self._finished = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def admit(self) -> None:
        """Take a slot or refuse with 429: over the tenant's own limit, or over its
        weighted share of a full pool (then its backlog waits with the client, not in
        the broker's FIFO where it would delay everyone behind it)."""
        if not _engine_alive(self.channels):
            raise OpenAIError(
                "No engine worker is running; start one (see README: Workers) and retry.",
                status=503,
                code="no_engine",
            )
        slot = SlotRequest(
            tenant=self.tenant.slug,
            request_id=self.request_id,
            weight=float(self.tenant.weight),
            tenant_limit=self.tenant.max_concurrent_requests or UNLIMITED,
            pool_slots=settings.PARITY_POOL_SLOTS,
        )
        verdict = self.channels.admit(slot)
        if not verdict.admitted:
            raise OpenAIError(
                _refusal(verdict.reason, self.tenant),
                status=429,
                code="too_many_requests",
                headers={"Retry-After": str(verdict.retry_after_s)},
            )
        self._admitted = True

    def submit(self) -> None:
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                current_app.send_task(
                    "workers.generate",
                    args=[self.request.to_dict()],
                    task_id=self.request_id,
                    queue=settings.PARITY_ENGINE_QUEUE,
                )
                return
            except OperationalError:
                # A pooled broker connection the broker dropped (idle, or reset under
                # load) fails once; a fresh one usually works.
                logger.warning("publishing %s failed (try %d)", self.request_id, attempt)
                time.sleep(0.2 * attempt)
        logger.error("broker unreachable for %s", self.request_id)
        raise OpenAIError(
            "The engine pool's broker is unreachable; retry shortly.",
            status=503,
            code="broker_unavailable",
        )

    def events(self) -> Iterator[Event | None]:
        """The request's events in order; None after each quiet second (for keep-alives).

        Ends after `done` or `error`; raises 504 after PARITY_REQUEST_TIMEOUT_S of silence.
        """
        cursor = "0"
        quiet_since = time.monotonic()
        while True:
            cursor, events = self.channels.read(self.request_id, cursor, POLL_S)
            if not events:
                if time.monotonic() - quiet_since > settings.PARITY_REQUEST_TIMEOUT_S:
                    self.abort()
                    raise OpenAIError(
                        "The engine pool did not answer in time.", status=504, code="timeout"
                    )
                yield None
                continue
            quiet_since = time.monotonic()
            for event in events:
                yield event
                if event["type"] in ("done", "error"):
                    self._finished = True
                    return

    def abort(self) -> None:
        if not self._finished:
            self.channels.request_abort(self.request_id)

    def close(self) -> None:
        if self._admitted:
            self.channels.release(self.tenant.slug, self.request_id)
            self._admitted = False
        if self._finished:
            self.channels.discard(self.request_id)


_alive_cache: dict[int, tuple[float, bool]] = {}


def _engine_alive(channels: Channels) -> bool:
    """Whether any engine worker published its state lately; asked at most once a second."""
    now = time.monotonic()
    checked_at, alive = _alive_cache.get(id(channels), (-1e9, False))
    if now - checked_at > 1.0:
        alive = bool(channels.states())
        _alive_cache[id(channels)] = (now, alive)
    return alive


def _refusal(reason: str, tenant: Tenant) -> str:
    if reason == "tenant":
        return (
            f"Tenant '{tenant.slug}' already has {tenant.max_concurrent_requests} requests in "
            "flight, its limit; retry after one finishes."
        )
    return (
        f"The engine pool is full and tenant '{tenant.slug}' holds its weighted share of it; "
        "retry shortly."
    )


def error_from_event(event: dict[str, Any]) -> OpenAIError:
    return OpenAIError(
        event["message"], status=int(event["status"]), param=event.get("param"), code=event["code"]
    )
