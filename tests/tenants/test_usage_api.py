"""GET /api/v1/usage/: OpenAI's Usage API shape, bucket edges, paging, isolation, bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tenants.models import IssuedKey, Tenant
from tests.tenants.usage_data import T0, request_at, roll_up, store, unix

HOUR = 3600


def usage(client: APIClient, **params: Any) -> Any:
    return client.get("/api/v1/usage/", params)


def results(body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(b["start_time"], r) for b in body["data"] for r in b["results"]]


@pytest.fixture
def traffic(acme: Tenant, globex: Tenant, alice_key: IssuedKey) -> None:
    """acme: 3 requests at 10:05 (alice's key), 1 at 11:00 sharp; globex: 2 at 10:59:59."""
    store(
        *(
            request_at(acme, T0 + timedelta(minutes=5), key=alice_key.key, ttft_s=0.1 * (i + 1))
            for i in range(3)
        ),
        request_at(acme, T0 + timedelta(hours=1), model="other-model", app="summarise"),
        *(request_at(globex, T0 + timedelta(seconds=HOUR - 1)) for _ in range(2)),
    )
    roll_up()


def test_the_report_has_the_openai_shape(staff: APIClient, traffic: None) -> None:
    response = usage(
        staff, start_time=unix(T0), end_time=unix(T0) + 2 * HOUR, bucket_width="1h",
        group_by="tenant",
    )  # fmt: skip

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "page" and body["has_more"] is False and body["next_page"] is None
    assert [b["object"] for b in body["data"]] == ["bucket", "bucket"]
    first = body["data"][0]
    assert (first["start_time"], first["end_time"]) == (unix(T0), unix(T0) + HOUR)
    acme = next(r for r in first["results"] if r["tenant"] == "acme")
    assert set(acme) >= {
        "tenant", "api_key_id", "model", "num_requests", "input_tokens", "input_cached_tokens",
        "output_tokens", "kv_block_seconds", "kv_gib_seconds", "ttft_p50_ms", "ttft_p95_ms",
        "latency_p95_ms", "preemptions",
    }  # fmt: skip
    assert acme["num_requests"] == 3
    assert acme["input_tokens"] == 300 and acme["input_cached_tokens"] == 60
    assert acme["output_tokens"] == 150 and acme["kv_gib_seconds"] == "0.375000000"
    assert acme["api_key_id"] is None and acme["model"] is None  # not grouped by


def test_a_request_at_the_top_of_the_hour_falls_in_the_next_bucket(
    staff: APIClient, traffic: None
) -> None:
    body = usage(
        staff, start_time=unix(T0), end_time=unix(T0) + 2 * HOUR, bucket_width="1h",
        group_by="tenant",
    ).json()  # fmt: skip

    by_bucket = {(start, r["tenant"]): r["num_requests"] for start, r in results(body)}
    assert by_bucket == {
        (unix(T0), "acme"): 3,
        (unix(T0), "globex"): 2,  # 10:59:59 is still the 10:00 bucket
        (unix(T0) + HOUR, "acme"): 1,  # 11:00:00 opens the next one
    }


def test_percentiles_come_from_the_merged_histograms(staff: APIClient, traffic: None) -> None:
    body = usage(staff, start_time=unix(T0), bucket_width="1d", group_by="api_key").json()

    keyed = [r for _, r in results(body) if r["api_key_id"] is not None]
    assert len(keyed) == 1
    assert keyed[0]["ttft_p50_ms"] == pytest.approx(200, rel=0.05)
    assert keyed[0]["ttft_p95_ms"] == pytest.approx(300, rel=0.05)
    assert keyed[0]["latency_p95_ms"] == pytest.approx(500, rel=0.05)


def test_without_group_by_each_bucket_has_one_total(staff: APIClient, traffic: None) -> None:
    body = usage(staff, start_time=unix(T0), end_time=unix(T0) + 2 * HOUR, bucket_width="1h").json()

    assert [(s, r["num_requests"]) for s, r in results(body)] == [
        (unix(T0), 5),
        (unix(T0) + HOUR, 1),
    ]


def test_groups_by_model_and_app_and_filters_by_them(staff: APIClient, traffic: None) -> None:
    body = usage(
        staff, start_time=unix(T0), bucket_width="1d", group_by="model,app", models="other-model"
    ).json()

    assert [(r["model"], r["app"], r["num_requests"]) for _, r in results(body)] == [
        ("other-model", "summarise", 1)
    ]


def test_empty_buckets_are_listed_and_times_align_to_the_width(
    staff: APIClient, traffic: None
) -> None:
    body = usage(
        staff, start_time=unix(T0) + 10, end_time=unix(T0) + 5 * 60 + 1, bucket_width="1m"
    ).json()

    starts = [b["start_time"] for b in body["data"]]
    assert starts == [unix(T0) + 60 * i for i in range(6)]  # 10:00 .. 10:05 inclusive
    assert [len(b["results"]) for b in body["data"]] == [0, 0, 0, 0, 0, 1]


def test_pages_follow_next_page_until_the_range_ends(staff: APIClient, traffic: None) -> None:
    params = {"start_time": unix(T0), "end_time": unix(T0) + 5 * HOUR, "bucket_width": "1h"}
    first = usage(staff, **params, limit=2).json()
    assert first["has_more"] is True and len(first["data"]) == 2

    second = usage(staff, **params, limit=2, page=first["next_page"]).json()
    third = usage(staff, **params, limit=2, page=second["next_page"]).json()

    assert [b["start_time"] for b in second["data"]] == [unix(T0) + 2 * HOUR, unix(T0) + 3 * HOUR]
    assert len(third["data"]) == 1 and third["has_more"] is False


def test_a_tenant_key_sees_only_its_own_usage(alice: APIClient, traffic: None) -> None:
    body = usage(alice, start_time=unix(T0), bucket_width="1d", group_by="tenant").json()

    assert {r["tenant"] for _, r in results(body)} == {"acme"}


def test_a_tenant_key_naming_another_tenant_gets_404(alice: APIClient, traffic: None) -> None:
    response = usage(alice, start_time=unix(T0), tenants="globex")

    assert response.status_code == 404
    assert "globex" in response.json()["detail"]


def test_staff_can_narrow_to_some_tenants(staff: APIClient, traffic: None) -> None:
    body = usage(staff, start_time=unix(T0), group_by="tenant", tenants="globex").json()

    assert {r["tenant"] for _, r in results(body)} == {"globex"}


def test_anonymous_callers_are_refused(anonymous: APIClient) -> None:
    assert usage(anonymous, start_time=0).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "-5"}, "start_time"),
        ({"start_time": "100", "end_time": "50"}, "end_time"),
        ({"start_time": "100", "end_time": "100"}, "end_time"),
        ({"start_time": "0", "bucket_width": "1w"}, "bucket_width"),
        ({"start_time": "0", "group_by": "tenant,color"}, "group_by"),
        ({"start_time": "0", "bucket_width": "1h", "limit": "169"}, "limit"),
        ({"start_time": "0", "bucket_width": "1d", "limit": "32"}, "limit"),
        ({"start_time": "0", "bucket_width": "1m", "limit": "0"}, "limit"),
        ({"start_time": "0", "page": "not-a-cursor"}, "page"),
        ({"start_time": "0", "api_key_ids": "7,x"}, "api_key_ids"),
        ({"start_time": "0", "tenant": "acme"}, "tenant"),  # a typo of tenants=
        ({"start_time": "99999999999999"}, "start_time"),
    ],
)
def test_bad_parameters_get_400_naming_the_field(
    staff: APIClient, params: dict[str, str], field: str
) -> None:
    response = usage(staff, **params)

    assert response.status_code == 400, response.content
    assert field in response.json()


def test_a_cursor_from_another_range_is_refused(staff: APIClient) -> None:
    first = usage(staff, start_time=0, end_time=10 * HOUR, bucket_width="1h", limit=2).json()

    response = usage(staff, start_time=20 * HOUR, end_time=30 * HOUR, page=first["next_page"])

    assert response.status_code == 400 and "page" in response.json()


def test_the_limits_are_openais(staff: APIClient) -> None:
    for width, most in (("1m", 1440), ("1h", 168), ("1d", 31)):
        body = usage(staff, start_time=0, end_time=10**8, bucket_width=width, limit=most).json()
        assert len(body["data"]) == most and body["has_more"] is True


def test_the_stored_row_paths_agree_with_summing_and_merging(
    staff: APIClient, traffic: None
) -> None:
    """group_by=tenant reads the per-tenant tables and group_by=everything the keyed rows as
    they are; a model filter naming every model forces the general path (sum and merge)."""
    for group_by in ("tenant", "tenant,api_key,model,app"):
        params = {"start_time": unix(T0), "bucket_width": "1h", "group_by": group_by}
        stored = usage(staff, **params).json()
        summed = usage(staff, **params, models="tiny-random,other-model").json()
        assert stored["data"] == summed["data"]
        assert len(results(stored)) >= 3
