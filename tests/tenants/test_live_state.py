"""The overview's live numbers: the pure computation on hand-made worker states, and
GET /api/v1/live/ reading states published to the real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tenants.dashboard.live import bucket_width, live_view, served_tokens, throughput
from workers import runtime


def tenant(
    input_tokens: int = 0,
    output_tokens: int = 0,
    *,
    weight: float = 1.0,
    num_waiting: int = 0,
    num_running: int = 0,
) -> dict[str, Any]:
    return {
        "weight": weight,
        "num_arrived": 0,
        "num_admitted": 0,
        "num_finished": 0,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "kv_block_steps": 0,
        "num_waiting": num_waiting,
        "num_running": num_running,
        "counter": 0.0,
    }


def state(
    at: float,
    tenants: dict[str, dict[str, Any]] | None = None,
    *,
    worker: str = "gpu-1:100",
    kv: tuple[int, int] = (10, 100),
) -> dict[str, Any]:
    """What `EngineHost.state()` publishes, with the scheduler's `fair_state()` inside."""
    tenants = tenants or {}
    return {
        "worker": worker,
        "model": "parity-tiny",
        "policy": "vtc",
        "slots": 1024,
        "num_in_flight": sum(t["num_waiting"] + t["num_running"] for t in tenants.values()),
        "weights": {name: t["weight"] for name, t in tenants.items()},
        "scheduler": {
            "policy": "vtc",
            "timestamp": at,
            "num_waiting": sum(t["num_waiting"] for t in tenants.values()),
            "num_running": sum(t["num_running"] for t in tenants.values()),
            "kv_blocks_used": kv[0],
            "kv_blocks_total": kv[1],
            "weights_applied_at": at,
            "tenants": tenants,
        },
        "published_at": at,
    }


def growing_history(
    num_states: int = 10, *, start: float = 1000.0, worker: str = "gpu-1:100"
) -> list[dict[str, Any]]:
    """One state a second; acme is served 100 tokens a second, globex (weight 3) 300."""
    return [
        state(
            start + i,
            {
                "acme": tenant(60 * i, 40 * i, num_waiting=2, num_running=1),
                "globex": tenant(200 * i, 100 * i, weight=3.0, num_waiting=5, num_running=3),
            },
            worker=worker,
        )
        for i in range(num_states)
    ]


def by_tenant(view: Any) -> dict[str, Any]:
    return {row.tenant: row for row in view.tenants}


# -- the pure computation -------------------------------------------------------------


def test_served_tokens_are_the_counter_growth_since_the_window_start():
    history = growing_history(10)  # t = 1000 .. 1009
    assert served_tokens(history, since=1004.0) == {"acme": 500, "globex": 1500}


def test_a_history_shorter_than_the_window_counts_from_its_oldest_entry():
    assert served_tokens(growing_history(10), since=0.0) == {"acme": 900, "globex": 2700}


def test_a_counter_that_went_down_means_a_restart_and_counts_from_zero():
    history = [
        state(1.0, {"acme": tenant(1000)}),
        state(2.0, {"acme": tenant(1500)}),
        state(3.0, {"acme": tenant(200)}),  # the worker restarted: 200 new tokens
        state(4.0, {"acme": tenant(300)}),
    ]
    assert served_tokens(history, since=0.0) == {"acme": 500 + 200 + 100}


def test_a_tenant_new_in_the_window_counts_all_its_tokens():
    history = [state(1.0, {"acme": tenant(10)}), state(2.0, {"acme": tenant(20), "new": tenant(7)})]
    assert served_tokens(history, since=0.0) == {"acme": 10, "new": 7}


def test_weight_share_is_the_weight_over_the_sum_of_the_tenants_present():
    history = growing_history()
    view = live_view({"gpu-1:100": history[-1]}, {"gpu-1:100": history}, window_s=300)
    rows = by_tenant(view)
    assert rows["acme"].weight_share == pytest.approx(0.25)
    assert rows["globex"].weight_share == pytest.approx(0.75)


def test_served_share_follows_the_tokens_served_in_the_window():
    history = growing_history()
    view = live_view({"gpu-1:100": history[-1]}, {"gpu-1:100": history}, window_s=300)
    rows = by_tenant(view)
    assert (rows["acme"].served_tokens, rows["globex"].served_tokens) == (900, 2700)
    assert rows["acme"].served_share == pytest.approx(0.25)
    assert view.served_tokens == 3600


def test_two_workers_add_up_their_tokens_and_queues():
    one = growing_history(worker="gpu-1:100")
    two = growing_history(worker="gpu-2:200")
    view = live_view(
        {"gpu-1:100": one[-1], "gpu-2:200": two[-1]},
        {"gpu-1:100": one, "gpu-2:200": two},
        window_s=300,
    )
    rows = by_tenant(view)
    assert rows["acme"].served_tokens == 1800
    assert (rows["globex"].num_waiting, rows["globex"].num_running) == (10, 6)
    assert [w.worker for w in view.workers] == ["gpu-1:100", "gpu-2:200"]


def test_throughput_is_tokens_per_second_between_states():
    points = throughput(growing_history(5), since=0.0, bucket_s=1)
    assert [p.time for p in points] == [1001.0, 1002.0, 1003.0, 1004.0]
    assert all(p.tokens_per_s == pytest.approx(400.0) for p in points)
    assert points[0].tenants == {"acme": pytest.approx(100.0), "globex": pytest.approx(300.0)}


def test_throughput_leaves_out_steps_before_the_window():
    points = throughput(growing_history(10), since=1007.0, bucket_s=1)
    assert [p.time for p in points] == [1008.0, 1009.0]


def test_long_windows_get_wider_throughput_buckets():
    assert bucket_width(300) == 1
    assert bucket_width(3600) == 12


def test_kv_cache_and_queue_come_from_each_workers_latest_state():
    latest = state(5.0, {"acme": tenant(num_waiting=4, num_running=2)}, kv=(37, 512))
    view = live_view({"gpu-1:100": latest}, {"gpu-1:100": [latest]}, window_s=60)
    (worker,) = view.workers
    assert (worker.kv_blocks_used, worker.kv_blocks_total) == (37, 512)
    assert (worker.num_waiting, worker.num_running, worker.num_in_flight) == (4, 2, 6)


def test_a_worker_without_scheduler_state_yet_shows_zeros():
    latest = {"worker": "gpu-1:100", "model": "m", "policy": "vtc", "scheduler": {}, "weights": {}}
    latest["published_at"] = 5.0
    view = live_view({"gpu-1:100": latest}, {"gpu-1:100": [latest]}, window_s=60)
    assert view.tenants == []
    assert view.workers[0].kv_blocks_total == 0


def test_no_live_worker_gives_empty_lists():
    view = live_view({}, {}, window_s=300)
    assert (view.workers, view.tenants, view.throughput, view.now) == ([], [], [], None)


# -- the endpoint, over the real Redis ---------------------------------------------------


@pytest.fixture
def published() -> list[dict[str, Any]]:
    """Ten seconds of one worker's states, the last one just now (so it counts as live)."""
    history = growing_history(10, start=time.time() - 9, worker="test-worker:1")
    for entry in history:
        runtime.channels().publish_state("test-worker:1", entry)
    return history


@pytest.mark.django_db
def test_staff_see_the_published_state_as_shares_and_series(staff, published):
    response = staff.get("/api/v1/live/?window_s=60")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "live"
    assert [w["worker"] for w in body["workers"]] == ["test-worker:1"]
    rows = {row["tenant"]: row for row in body["tenants"]}
    assert rows["globex"]["served_tokens"] == 2700
    assert rows["globex"]["weight_share"] == pytest.approx(0.75)
    assert len(body["throughput"]) >= 8
    assert body["throughput"][-1]["tokens_per_s"] > 0


@pytest.mark.django_db
def test_with_no_live_worker_the_lists_are_empty(staff):
    body = staff.get("/api/v1/live/").json()
    assert (body["workers"], body["tenants"], body["throughput"]) == ([], [], [])
    assert body["window_s"] == 300


@pytest.mark.django_db
def test_a_window_off_the_menu_is_a_400(staff):
    response = staff.get("/api/v1/live/?window_s=7")
    assert response.status_code == 400
    assert "window_s" in response.json()


@pytest.mark.django_db
def test_the_live_state_is_staff_only(anonymous, outsider, alice):
    assert anonymous.get("/api/v1/live/").status_code == 401
    assert outsider.get("/api/v1/live/").status_code == 403
    assert alice.get("/api/v1/live/").status_code == 403


@pytest.mark.django_db
def test_staff_see_the_gate_its_capacity_and_who_waits(staff):
    gate = runtime.gate()
    gate.heartbeat("test-worker:1", 3, {"acme": 1.0, "globex": 3.0})

    body = staff.get("/api/v1/live/").json()["gate"]

    assert (body["capacity"], body["num_seated"], body["workers"]) == (
        3,
        0,
        {"test-worker:1": 3},
    )
    weights = {row["tenant"]: row["weight"] for row in body["tenants"]}
    assert weights == {"acme": 1.0, "globex": 3.0}
