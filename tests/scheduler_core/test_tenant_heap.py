from __future__ import annotations

from scheduler_core.tenant_heap import TenantHeap


def test_the_smallest_key_comes_first() -> None:
    heap = TenantHeap()
    heap.push("alice", 5.0)
    heap.push("bob", 3.0)
    assert heap.peek() == "bob"
    assert heap.min_key() == 3.0


def test_equal_keys_break_by_insertion_order_not_name() -> None:
    heap = TenantHeap()
    heap.push("zed", 1.0)
    heap.push("amy", 1.0)
    assert heap.peek() == "zed"


def test_updating_a_key_invalidates_the_old_entry() -> None:
    heap = TenantHeap()
    heap.push("alice", 1.0)
    heap.push("bob", 2.0)
    heap.push("alice", 3.0)
    assert heap.peek() == "bob"
    assert len(heap) == 2
    assert heap.ordered() == ["bob", "alice"]


def test_discarded_tenants_are_never_returned() -> None:
    heap = TenantHeap()
    heap.push("alice", 1.0)
    heap.discard("alice")
    heap.discard("never-there")
    assert heap.peek() is None
    assert heap.min_key() is None
    assert "alice" not in heap


def test_many_updates_keep_memory_bounded() -> None:
    heap = TenantHeap()
    for step in range(10_000):
        heap.push(f"t{step % 3}", float(step))
    assert len(heap._heap) <= 2 * 3 + 64 + 1
    assert heap.peek() == "t1"  # the last keys set: t1=9997, t2=9998, t0=9999


def test_a_refreshed_peek_rekeys_stale_lower_bounds_until_the_top_is_current() -> None:
    heap = TenantHeap()
    heap.push("alice", 1.0, tie=0.0)
    heap.push("bob", 2.0, tie=1.0)
    heap.push("carol", 3.0, tie=2.0)
    current = {"alice": 5.0, "bob": 2.5, "carol": 3.0}  # alice's and bob's keys rose
    ties = {"alice": 0.0, "bob": 1.0, "carol": 2.0}

    assert heap.refreshed_peek(current.__getitem__, ties) == "bob"
    assert heap.min_key() == 2.5
    current["bob"] = 9.0
    assert heap.refreshed_peek(current.__getitem__, ties) == "carol"
    assert heap.ordered() == ["carol", "alice", "bob"]
    assert len(heap) == 3
