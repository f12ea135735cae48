"""POST /api/v1/whatif/: staff replay recorded traffic under proposed weights before applying
them. acme weighs 1 and globex 2 (conftest); the small a10g profile saturates quickly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from tenants import whatif
from tenants.models import Tenant
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

URL = "/api/v1/whatif/"
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
START_S = int(START.timestamp())
SMALL = "a10g-llama2-7b"  # a 10,000-token KV pool: 80 requests of 300 tokens make a backlog


def make_usage(
    tenant: Tenant,
    num: int = 1,
    *,
    arrival_s: float = 0.0,
    gap_s: float = 0.01,
    prompt_tokens: int = 200,
    output_tokens: int = 100,
    latency_ms: int = 2_000,
) -> list[UsageRecord]:
    """`num` recorded requests of `tenant`, arriving `gap_s` apart from START + arrival_s."""
    first = UsageRecord.objects.count()
    rows = []
    for i in range(num):
        arrival = START + timedelta(seconds=arrival_s + i * gap_s)
        rows.append(
            UsageRecord(
                request_id=f"{tenant.slug}-{first + i}",
                tenant=tenant,
                model="llama",
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                latency_ms=latency_ms,
                status="finished",
                finished_at=arrival + timedelta(milliseconds=latency_ms),
            )
        )
    return UsageRecord.objects.bulk_create(rows)


def body(**overrides: Any) -> dict[str, Any]:
    return {"start_time": START_S, "end_time": START_S + 3600, "profile": SMALL, **overrides}


def scenario_tenant(response: Any, scenario: str, slug: str) -> dict[str, Any]:
    rows = response.json()["scenarios"][scenario]["tenants"]
    return next(row for row in rows if row["tenant"] == slug)


@pytest.fixture
def backlog(acme: Tenant, globex: Tenant) -> None:
    make_usage(acme, 40)
    make_usage(globex, 40)


def test_raising_a_backlogged_tenants_weight_raises_its_share_and_cuts_its_latency(
    staff: APIClient, backlog: None
) -> None:
    response = staff.post(URL, body(weights={"acme": "6"}), format="json")

    assert response.status_code == 200, response.json()
    before = scenario_tenant(response, "current", "acme")
    after = scenario_tenant(response, "proposed", "acme")
    other_before = scenario_tenant(response, "current", "globex")
    other_after = scenario_tenant(response, "proposed", "globex")
    assert after["served_share"] > before["served_share"]
    assert after["latency_p50_ms"] < before["latency_p50_ms"]
    assert other_after["latency_p50_ms"] > other_before["latency_p50_ms"]


def test_under_vtc_backlogged_shares_follow_the_weights(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, body(weights={"acme": "2"}), format="json")

    current = scenario_tenant(response, "current", "acme")
    proposed = scenario_tenant(response, "proposed", "acme")
    assert current["weight_share"] == pytest.approx(1 / 3)
    assert current["served_share"] == pytest.approx(1 / 3, abs=0.05)
    assert proposed["served_share"] == pytest.approx(1 / 2, abs=0.05)


def test_the_current_scenario_uses_current_weights_and_others_keep_theirs(
    staff: APIClient, backlog: None
) -> None:
    response = staff.post(URL, body(weights={"acme": 1.5}), format="json")

    scenarios = response.json()["scenarios"]
    assert scenarios["current"]["weights"] == {"acme": 1.0, "globex": 2.0}
    assert scenarios["proposed"]["weights"] == {"acme": 1.5, "globex": 2.0}


def test_the_response_follows_the_contract(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, body(policy="fcfs"), format="json")

    data = response.json()
    assert {k: data[k] for k in ("object", "policy", "profile", "start_time", "end_time")} == {
        "object": "whatif",
        "policy": "fcfs",
        "profile": SMALL,
        "start_time": START_S,
        "end_time": START_S + 3600,
    }
    assert data["num_requests"] == 80
    scenario = data["scenarios"]["current"]
    assert scenario["throughput_tokens_per_s"] > 0 and scenario["makespan_s"] > 0
    assert [row["tenant"] for row in scenario["tenants"]] == ["acme", "globex"]
    acme = scenario["tenants"][0]
    assert acme["num_requests"] == 40
    assert acme["served_tokens"] == 40 * 300
    assert acme["ttft_p50_ms"] <= acme["ttft_p95_ms"] <= acme["latency_p95_ms"]


def test_the_replay_is_deterministic(staff: APIClient, backlog: None) -> None:
    first = staff.post(URL, body(weights={"globex": "5"}), format="json")
    second = staff.post(URL, body(weights={"globex": "5"}), format="json")

    assert first.json() == second.json()


def test_it_replays_only_requests_that_arrived_in_the_range(
    staff: APIClient, acme: Tenant, globex: Tenant
) -> None:
    make_usage(acme, 3, arrival_s=10)
    make_usage(globex, 2, arrival_s=-5)  # arrived before the window, finished inside it
    make_usage(globex, 2, arrival_s=3599.5)  # arrived inside, finished after the window

    response = staff.post(URL, body(), format="json")

    assert response.json()["num_requests"] == 5


def test_it_replays_only_the_named_tenants(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, body(tenants=["globex"]), format="json")

    rows = response.json()["scenarios"]["proposed"]["tenants"]
    assert [row["tenant"] for row in rows] == ["globex"]
    assert rows[0]["weight_share"] == rows[0]["served_share"] == 1.0


def test_a_range_without_traffic_is_a_400_on_start_time(staff: APIClient, acme: Tenant) -> None:
    response = staff.post(URL, body(), format="json")

    assert response.status_code == 400
    assert "No recorded requests" in response.json()["start_time"][0]


def test_too_many_requests_is_a_400_asking_to_narrow_the_range(
    staff: APIClient, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whatif, "MAX_REPLAY_REQUESTS", 3)
    make_usage(acme, 4)

    response = staff.post(URL, body(), format="json")

    assert response.status_code == 400
    assert "narrow the range" in response.json()["start_time"][0]


def test_a_request_too_big_for_the_profile_is_a_400_on_profile(
    staff: APIClient, acme: Tenant
) -> None:
    make_usage(acme, prompt_tokens=20_000)

    response = staff.post(URL, body(), format="json")

    assert response.status_code == 400
    assert "profile" in response.json()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start_time": None}, "start_time"),
        ({"start_time": "soon"}, "start_time"),
        ({"start_time": START_S + 0.5}, "start_time"),
        ({"start_time": True}, "start_time"),
        ({"end_time": "1.5"}, "end_time"),
        ({"end_time": START_S}, "end_time"),
        ({"end_time": START_S - 60}, "end_time"),
        ({"end_time": START_S + 7 * 86400 + 1}, "end_time"),
        ({"policy": "round-robin"}, "policy"),
        ({"policy": "rpm"}, "policy"),
        ({"profile": "tpu-v9"}, "profile"),
        ({"weights": ["acme", 2]}, "weights"),
        ({"weights": {"acme": 0}}, "weights"),
        ({"weights": {"acme": "-1"}}, "weights"),
        ({"weights": {"acme": "heavy"}}, "weights"),
        ({"weights": {"acme": "NaN"}}, "weights"),
        ({"weights": {"acme": "1000001"}}, "weights"),
        ({"weights": {"initech": 2}}, "weights"),
        ({"tenants": ["initech"]}, "tenants"),
        ({"tenants": []}, "tenants"),
        ({"tenants": "acme"}, "tenants"),
        ({"wieghts": {"acme": 2}}, "wieghts"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    staff: APIClient, backlog: None, overrides: dict[str, Any], field: str
) -> None:
    response = staff.post(URL, body(**overrides), format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_a_missing_time_is_a_400_naming_it(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, {"start_time": START_S}, format="json")

    assert response.status_code == 400
    assert "end_time" in response.json()


def test_an_unknown_policy_lists_the_valid_names(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, body(policy="round-robin"), format="json")

    assert "vtc" in response.json()["policy"][0]


def test_the_largest_weight_is_accepted(staff: APIClient, backlog: None) -> None:
    response = staff.post(URL, body(weights={"acme": "1000000"}), format="json")

    assert response.status_code == 200


def test_a_tenant_key_is_refused(alice: APIClient, backlog: None) -> None:
    response = alice.post(URL, body(), format="json")

    assert response.status_code == 403


def test_an_anonymous_caller_is_refused(anonymous: APIClient, backlog: None) -> None:
    response = anonymous.post(URL, body(), format="json")

    assert response.status_code == 401


def test_the_replay_keeps_current_weights_when_nothing_is_proposed(acme: Tenant) -> None:
    Tenant.objects.filter(pk=acme.pk).update(weight=Decimal(3))
    make_usage(acme, 2)

    result = whatif.what_if(START, START + timedelta(hours=1), None, {}, "vtc", SMALL)

    assert result.current == result.proposed
    assert result.current.weights == {"acme": 3.0}
