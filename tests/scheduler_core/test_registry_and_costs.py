from __future__ import annotations

import pytest

from scheduler_core.costs import LinearCost, MemoryCost, ProfiledCost, make_cost
from scheduler_core.job import Job
from scheduler_core.policies import (
    FCFSPolicy,
    LCFPolicy,
    PredictiveVTCPolicy,
    RPMPolicy,
    VTCPolicy,
)
from scheduler_core.registry import POLICY_NAMES, make_policy


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("fcfs", FCFSPolicy),
        ("lcf", LCFPolicy),
        ("vtc", VTCPolicy),
        ("vtc-predict", PredictiveVTCPolicy),
        ("vtc-oracle", PredictiveVTCPolicy),
        ("rpm5", RPMPolicy),
    ],
)
def test_policies_are_built_by_name(name: str, kind: type) -> None:
    policy = make_policy(name)
    assert isinstance(policy, kind)
    assert policy.name == name


def test_every_listed_name_builds() -> None:
    for name in POLICY_NAMES:
        opts = {"limit": 3} if name == "rpm" else {}
        assert make_policy(name, **opts).name.startswith(name.split("-")[0])


def test_rpm_takes_its_limit_as_an_option() -> None:
    policy = make_policy("rpm", limit=7)
    assert isinstance(policy, RPMPolicy)
    assert policy.limit == 7


def test_weights_are_applied_at_construction() -> None:
    policy = make_policy("vtc", weights={"alice": 3.0})
    assert policy.weight("alice") == 3.0
    assert policy.weight("bob") == 1.0


def test_a_cost_can_be_chosen_by_name() -> None:
    policy = make_policy("vtc", cost="profiled")
    assert isinstance(policy, VTCPolicy)
    assert isinstance(policy.cost, ProfiledCost)


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("sjf", {}, "unknown policy"),
        ("rpm", {}, "limit"),
        ("fcfs", {"bogus": 1}, "does not take bogus"),
        ("vtc", {"cost": "quadratic"}, "unknown cost"),
    ],
)
def test_bad_names_and_options_are_value_errors(
    name: str, opts: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(name, **opts)


def test_linear_cost_weights_input_and_output() -> None:
    assert LinearCost().total(100, 10) == 120
    assert LinearCost(w_in=0, w_out=1).total(100, 10) == 10


def test_profiled_cost_matches_the_papers_formula_and_is_zero_when_untouched() -> None:
    cost = ProfiledCost()
    assert cost.total(0, 0) == 0
    assert cost.total(100, 10) == pytest.approx(2.1 * 100 + 10 + 0.04 * 1000 + 0.032 * 100 + 11.46)


def test_memory_cost_is_kv_token_time() -> None:
    assert MemoryCost().total(100, 10) == 100 * 10 + 10 * 10 / 2


def test_make_cost_knows_the_three_costs() -> None:
    assert [make_cost(n).name for n in ("linear", "profiled", "memory")] == [
        "linear",
        "profiled",
        "memory",
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": ""},
        {"tenant": ""},
        {"arrival_s": -1.0},
        {"prompt_tokens": 0},
        {"max_tokens": 0},
        {"output_tokens": 11},
    ],
)
def test_jobs_validate_their_fields(fields: dict[str, object]) -> None:
    base: dict[str, object] = {
        "request_id": "r",
        "tenant": "t",
        "arrival_s": 0.0,
        "prompt_tokens": 1,
        "max_tokens": 10,
        **fields,
    }
    with pytest.raises(ValueError):
        Job(**base)  # type: ignore[arg-type]
