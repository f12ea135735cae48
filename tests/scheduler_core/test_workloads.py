from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from scheduler_core.sim.trace import parse_trace
from scheduler_core.sim.workloads import WORKLOAD_NAMES, make_workload


def per_tenant(name: str) -> Counter[str]:
    return Counter(job.tenant for job in make_workload(name).jobs)


def test_overload_has_two_clients_at_90_and_180_requests_per_minute_for_6_minutes() -> None:
    workload = make_workload("overload")
    assert per_tenant("overload") == {"client0": 540, "client1": 1080}
    assert workload.duration_s == 360
    assert {(j.prompt_tokens, j.max_tokens) for j in workload.jobs} == {(256, 256)}


def test_overload_multi_has_eight_clients() -> None:
    counts = per_tenant("overload-multi")
    assert len(counts) == 8
    assert counts["client0"] == 144 and counts["client7"] == 216


def test_overload_weighted_carries_weights_one_to_four() -> None:
    workload = make_workload("overload-weighted")
    assert workload.weights == {"client0": 1.0, "client1": 2.0, "client2": 3.0, "client3": 4.0}


def test_on_off_clients_are_silent_in_odd_minutes() -> None:
    jobs = make_workload("on_off_less").jobs
    assert all(int(j.arrival_s // 60) % 2 == 0 for j in jobs if j.tenant == "client0")
    assert any(int(j.arrival_s // 60) % 2 == 1 for j in jobs if j.tenant == "client1")


def test_poisson_short_long_2_swaps_prompt_and_output_lengths() -> None:
    shapes = {
        (j.tenant, j.prompt_tokens, j.max_tokens)
        for j in make_workload("poisson_short_long_2").jobs
    }
    assert shapes == {("client0", 512, 32), ("client1", 32, 512)}


def test_increase_ramps_the_second_clients_rate() -> None:
    jobs = [j for j in make_workload("increase").jobs if j.tenant == "client1"]
    early = sum(j.arrival_s < 100 for j in jobs)
    late = sum(500 <= j.arrival_s < 600 for j in jobs)
    assert late > 3 * early


def test_dist_shift_lasts_fifteen_minutes_in_three_phases() -> None:
    workload = make_workload("dist_shift")
    assert workload.duration_s == 900
    assert max(j.arrival_s for j in workload.jobs) > 850


def test_the_arena_trace_is_bundled_with_its_1500_requests_and_27_clients() -> None:
    workload = make_workload("arena")
    assert len(workload.jobs) == 1500
    assert len(workload.tenants) == 27
    assert workload.duration_s == 600


def test_generated_workloads_repeat_for_a_seed_and_change_with_it() -> None:
    assert make_workload("overload", seed=1).jobs == make_workload("overload", seed=1).jobs
    assert make_workload("overload", seed=1).jobs != make_workload("overload", seed=2).jobs


@pytest.mark.parametrize("name", WORKLOAD_NAMES)
def test_every_workload_has_unique_ids_and_sorted_arrivals(name: str) -> None:
    jobs = make_workload(name).jobs
    assert len({j.request_id for j in jobs}) == len(jobs)
    assert [j.arrival_s for j in jobs] == sorted(j.arrival_s for j in jobs)


def test_a_trace_file_replays_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "arrival_s,client,prompt_tokens,output_tokens\n0.5,acme,10,20\n2.0,globex,5,7\n"
    )
    workload = make_workload(f"trace:{path}")
    assert [(j.tenant, j.arrival_s, j.prompt_tokens, j.output_tokens) for j in workload.jobs] == [
        ("acme", 0.5, 10, 20),
        ("globex", 2.0, 5, 7),
    ]
    assert workload.duration_s == 2.0


def test_a_missing_trace_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read trace"):
        make_workload(f"trace:{tmp_path / 'absent.csv'}")


def test_a_trace_without_the_expected_columns_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="missing column"):
        parse_trace("time,client\n1,a\n")


def test_a_malformed_row_names_its_line() -> None:
    with pytest.raises(ValueError, match="row 3"):
        parse_trace("arrival_s,client,prompt_tokens,output_tokens\n0,a,1,1\n1,a,x,1\n")


def test_unknown_workloads_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        make_workload("nope")
