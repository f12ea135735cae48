"""The worker's view of tenants: weights, status and limits, kept fresh within a second.

The fair scheduler needs every tenant's weight, and a weight changed in the admin must reach
running workers within one second. `DatabaseTenantDirectory` re-reads the (small) tenant
table every `poll_interval_s` on a background thread and tells subscribers when anything
changed; `StaticTenantDirectory` is the in-memory twin for embedded tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from django.db import connections

logger = logging.getLogger(__name__)

WeightsCallback = Callable[[dict[str, float]], None]
MAX_POLL_INTERVAL_S = 1.0  # the product's promise: a weight change is live within 1 s


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """What a worker knows of one tenant. `active` is False while the tenant is suspended."""

    slug: str
    tenant_id: int
    weight: float
    active: bool = True
    max_concurrent_requests: int | None = None


class TenantDirectory(Protocol):
    def start(self) -> None:
        """Load the tenants and begin following changes."""
        ...

    def stop(self, timeout_s: float = 5.0) -> None: ...

    def get(self, slug: str) -> TenantInfo | None: ...

    def weights(self) -> dict[str, float]:
        """Every known tenant's weight, suspended ones included (their queued work keeps
        its share; refusing new requests is the API's job)."""
        ...

    def subscribe(self, callback: WeightsCallback) -> None:
        """Call `callback(weights())` now and after every change to any tenant's weight or
        status. Callbacks run on the directory's thread and must be quick."""
        ...


class _Directory:
    """The state and the subscriber list both directories share."""

    def __init__(self, tenants: Iterable[TenantInfo] = ()) -> None:
        self._tenants: dict[str, TenantInfo] = {info.slug: info for info in tenants}
        self._subscribers: list[WeightsCallback] = []
        self._lock = threading.Lock()

    def get(self, slug: str) -> TenantInfo | None:
        with self._lock:
            return self._tenants.get(slug)

    def weights(self) -> dict[str, float]:
        with self._lock:
            return {slug: info.weight for slug, info in self._tenants.items()}

    def subscribe(self, callback: WeightsCallback) -> None:
        with self._lock:
            self._subscribers.append(callback)
        self._call(callback, self.weights())

    def _replace(self, tenants: dict[str, TenantInfo]) -> bool:
        """Install a new table; tell subscribers if it differs. True when it did."""
        with self._lock:
            if tenants == self._tenants:
                return False
            self._tenants = tenants
            subscribers = list(self._subscribers)
        weights = {slug: info.weight for slug, info in tenants.items()}
        for callback in subscribers:
            self._call(callback, dict(weights))  # a copy each: a subscriber may keep it
        return True

    @staticmethod
    def _call(callback: WeightsCallback, weights: dict[str, float]) -> None:
        try:
            callback(weights)
        except Exception:
            # One broken subscriber must not starve the others or stop the poll thread.
            logger.exception("tenant weights subscriber %r failed", callback)


class StaticTenantDirectory(_Directory):
    """An in-memory directory: from a slug -> weight mapping (ids 1, 2, ... in order) or from
    `TenantInfo`s. `set()` changes a tenant (or adds one) and notifies like a poll would."""

    def __init__(
        self, weights: Mapping[str, float] | None = None, *, tenants: Iterable[TenantInfo] = ()
    ) -> None:
        infos = [
            TenantInfo(slug, tenant_id, float(weight))
            for tenant_id, (slug, weight) in enumerate((weights or {}).items(), start=1)
        ]
        super().__init__([*infos, *tenants])

    def start(self) -> None:
        pass  # nothing to follow: changes come through set()

    def stop(self, timeout_s: float = 5.0) -> None:
        pass

    def set(
        self,
        slug: str,
        *,
        weight: float | None = None,
        active: bool | None = None,
        max_concurrent_requests: int | None = None,
    ) -> TenantInfo:
        with self._lock:
            tenants = dict(self._tenants)
        info = tenants.get(slug) or TenantInfo(slug, _next_id(tenants), 1.0)
        info = replace(
            info,
            weight=info.weight if weight is None else float(weight),
            active=info.active if active is None else active,
            max_concurrent_requests=max_concurrent_requests or info.max_concurrent_requests,
        )
        tenants[slug] = info
        self._replace(tenants)
        return info

    def remove(self, slug: str) -> None:
        with self._lock:
            tenants = {s: info for s, info in self._tenants.items() if s != slug}
        self._replace(tenants)


def _next_id(tenants: Mapping[str, TenantInfo]) -> int:
    return max((info.tenant_id for info in tenants.values()), default=0) + 1


TenantRow = tuple[str, int, Decimal, str, int | None]


class DatabaseTenantDirectory(_Directory):
    """Polls the tenant table every `poll_interval_s` (at most 1 s) on a background thread.

    One query per poll (slug, id, weight, status, max_concurrent_requests); subscribers hear
    only of polls that changed something. A failed poll is logged and tried again on the
    next tick with a fresh connection; it never ends the thread.
    """

    def __init__(self, poll_interval_s: float = 0.5, *, using: str = "default") -> None:
        if not 0 < poll_interval_s <= MAX_POLL_INTERVAL_S:
            raise ValueError(f"poll_interval_s must be in (0, {MAX_POLL_INTERVAL_S}]")
        super().__init__()
        self.poll_interval_s = poll_interval_s
        self.using = using
        self.num_polls = 0
        self.num_failed_polls = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def read_rows(self) -> Iterable[TenantRow]:
        """The one query of a poll. Tests override it to make a poll fail."""
        from tenants.models import Tenant

        columns = ("slug", "id", "weight", "status", "max_concurrent_requests")
        return Tenant.objects.using(self.using).order_by().values_list(*columns)

    def refresh(self) -> bool:
        """Poll once, now. True when the table changed. Raises what the database raises."""
        from tenants.models import TenantStatus

        tenants = {
            slug: TenantInfo(slug, tenant_id, float(weight), status == TenantStatus.ACTIVE, limit)
            for slug, tenant_id, weight, status, limit in self.read_rows()
        }
        self.num_polls += 1
        return self._replace(tenants)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Load the table once (so `get()` answers at once), then poll in the background."""
        if self._thread is not None:
            raise RuntimeError("tenant directory already started")
        self._poll()
        self._thread = threading.Thread(target=self._run, name="tenant-directory", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.poll_interval_s):
                self._poll()
        finally:
            connections[self.using].close()

    def _poll(self) -> None:
        try:
            self.refresh()
        except Exception:
            self.num_failed_polls += 1
            logger.exception(
                "tenant directory poll failed; retrying in %.1fs", self.poll_interval_s
            )
            # The connection may be the broken part: start the next poll on a new one.
            connection = connections[self.using]
            if not connection.in_atomic_block:
                connection.close()
