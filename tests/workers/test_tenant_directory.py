"""Tenant directories: weights and status as a worker sees them, fresh within a second."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from decimal import Decimal

import pytest

from tenants import services
from tenants.audit import Actor
from tenants.models import TenantStatus
from tests.tenants.factories import make_tenant
from tests.usage.factories import eventually
from workers.tenant_directory import (
    DatabaseTenantDirectory,
    StaticTenantDirectory,
    TenantInfo,
    TenantRow,
)

POLL_S = 0.1


class Recorder:
    """A subscriber that keeps every weight table it is given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        self.changed = threading.Event()

    def __call__(self, weights: dict[str, float]) -> None:
        self.calls.append(weights)
        self.changed.set()


# --- the in-memory directory ------------------------------------------------------------------


def test_a_static_directory_is_built_from_a_weight_mapping() -> None:
    directory = StaticTenantDirectory({"acme": 1, "globex": 2.5})

    assert directory.weights() == {"acme": 1.0, "globex": 2.5}
    assert directory.get("globex") == TenantInfo("globex", 2, 2.5, active=True)
    assert directory.get("nobody") is None


def test_a_subscriber_hears_the_table_at_once_and_after_each_change() -> None:
    directory = StaticTenantDirectory({"acme": 1})
    recorder = Recorder()
    directory.subscribe(recorder)

    directory.set("acme", weight=3)
    directory.set("globex", weight=2)
    directory.set("globex", weight=2)  # no change, no call

    assert recorder.calls == [{"acme": 1.0}, {"acme": 3.0}, {"acme": 3.0, "globex": 2.0}]


def test_suspending_a_tenant_notifies_and_reads_inactive() -> None:
    directory = StaticTenantDirectory({"acme": 1})
    recorder = Recorder()
    directory.subscribe(recorder)

    directory.set("acme", active=False)

    assert directory.get("acme") == TenantInfo("acme", 1, 1.0, active=False)
    assert len(recorder.calls) == 2


def test_a_broken_subscriber_does_not_stop_the_others() -> None:
    directory = StaticTenantDirectory({"acme": 1})
    recorder = Recorder()

    def broken(weights: dict[str, float]) -> None:
        raise RuntimeError("subscriber bug")

    directory.subscribe(broken)
    directory.subscribe(recorder)
    directory.set("acme", weight=2)

    assert recorder.calls[-1] == {"acme": 2.0}


# --- the database directory -------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, -1, 1.5])
def test_a_poll_interval_outside_0_to_1_second_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval_s"):
        DatabaseTenantDirectory(poll_interval_s=interval)


@pytest.mark.django_db
def test_it_reads_weights_status_and_limits_from_the_tenant_table() -> None:
    acme = make_tenant("acme", weight=Decimal("1.5"), max_concurrent_requests=4)
    make_tenant("globex", weight=Decimal(2), status=TenantStatus.SUSPENDED)
    directory = DatabaseTenantDirectory()

    assert directory.refresh() is True
    assert directory.refresh() is False  # nothing changed since

    assert directory.weights() == {"acme": 1.5, "globex": 2.0}
    assert directory.get("acme") == TenantInfo("acme", acme.pk, 1.5, True, 4)
    globex = directory.get("globex")
    assert globex is not None and globex.active is False


@pytest.mark.django_db(transaction=True)
def test_a_weight_change_through_services_reaches_subscribers_within_one_second() -> None:
    acme = make_tenant("acme")
    directory = DatabaseTenantDirectory(poll_interval_s=POLL_S)
    directory.start()
    recorder = Recorder()
    directory.subscribe(recorder)
    recorder.changed.clear()
    try:
        services.update(Actor.system(), acme, {"weight": Decimal("3.25")})
        assert recorder.changed.wait(timeout=1.0)  # the product's promise
    finally:
        directory.stop()

    assert recorder.calls == [{"acme": 1.0}, {"acme": 3.25}]
    assert directory.weights() == {"acme": 3.25}


@pytest.mark.django_db(transaction=True)
def test_a_suspension_through_services_is_seen_as_inactive() -> None:
    acme = make_tenant("acme")
    directory = DatabaseTenantDirectory(poll_interval_s=POLL_S)
    directory.start()
    recorder = Recorder()
    directory.subscribe(recorder)
    recorder.changed.clear()
    try:
        services.update(Actor.system(), acme, {"status": TenantStatus.SUSPENDED})
        assert recorder.changed.wait(timeout=1.0)
    finally:
        directory.stop()

    info = directory.get("acme")
    assert info is not None and info.active is False


class FlakyDirectory(DatabaseTenantDirectory):
    """Its first `num_failures` polls after start() fail like a database that went away."""

    def __init__(self, num_failures: int) -> None:
        super().__init__(poll_interval_s=POLL_S)
        self.num_failures = num_failures

    def read_rows(self) -> Iterable[TenantRow]:
        if self.num_polls > 0 and self.num_failures > 0:
            self.num_failures -= 1
            raise ConnectionError("database went away")
        return super().read_rows()


@pytest.mark.django_db(transaction=True)
def test_a_failing_poll_does_not_kill_the_thread() -> None:
    acme = make_tenant("acme")
    directory = FlakyDirectory(num_failures=3)
    directory.start()
    try:
        services.update(Actor.system(), acme, {"weight": Decimal(5)})
        assert eventually(lambda: directory.weights() == {"acme": 5.0})
    finally:
        directory.stop()

    assert directory.num_failed_polls == 3


@pytest.mark.django_db(transaction=True)
def test_stop_ends_the_poll_thread() -> None:
    directory = DatabaseTenantDirectory(poll_interval_s=POLL_S)
    directory.start()
    assert directory.is_running

    directory.stop()

    assert not directory.is_running
