"""Application workloads: shapes per kind, seeded, Poisson per tenant."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler_core.apps import Application, AppType, CallSpec
from scheduler_core.sim.app_workloads import (
    APP_WORKLOAD_NAMES,
    TenantStyle,
    make_app_workload,
    sample_application,
    training_apps,
)


def sample(kind: AppType, seed: int = 0, **style: float) -> Application:
    rng = np.random.default_rng(seed)
    return sample_application(
        rng, kind, app_id="a", tenant="acme", arrival_s=0.0, style=TenantStyle(**style)
    )


def test_a_chat_is_one_call() -> None:
    app = sample(AppType.CHAT)
    assert len(app.calls) == 1 and app.depth == 1


def test_self_consistency_samples_one_prompt_in_parallel() -> None:
    app = sample(AppType.SELF_CONSISTENCY)
    assert 3 <= len(app.calls) <= 10
    assert len({call.prompt_tokens for call in app.calls}) == 1
    assert app.depth == 1 and app.info().fan_out == len(app.calls)


def test_map_reduce_reduces_over_every_map_output() -> None:
    app = sample(AppType.MAP_REDUCE)
    *maps, reduce = app.calls
    assert reduce.parents == tuple(call.index for call in maps)
    assert reduce.prompt_tokens == sum(call.output_tokens for call in maps) + 100
    assert app.depth == 2


def test_an_agent_is_a_chain_whose_context_grows_with_tool_delays() -> None:
    app = sample(AppType.AGENT, seed=4, agent_steps=8.0)
    assert app.depth == len(app.calls) > 1
    prompts = [call.prompt_tokens for call in app.calls]
    assert prompts == sorted(prompts) and prompts[0] < prompts[-1]
    assert all(call.delay_s > 0 for call in app.calls[1:])


def test_a_verbose_tenant_writes_longer_outputs() -> None:
    def mean_output(verbosity: float) -> float:
        apps = [sample(AppType.CHAT, seed, verbosity=verbosity) for seed in range(200)]
        return float(np.mean([app.calls[0].output_tokens for app in apps]))

    assert mean_output(2.0) > 1.5 * mean_output(1.0)


def test_an_application_rejects_a_call_that_depends_on_a_later_one() -> None:
    calls = (CallSpec(0, 10, 5, 5, parents=(1,)), CallSpec(1, 10, 5, 5))
    with pytest.raises(ValueError, match="parents must be earlier calls"):
        Application("bad", "acme", 0.0, AppType.AGENT, calls)


@pytest.mark.parametrize("name", APP_WORKLOAD_NAMES)
def test_every_named_workload_is_seeded_and_in_arrival_order(name: str) -> None:
    first, again = make_app_workload(name, seed=5), make_app_workload(name, seed=5)
    assert first == again
    arrivals = [app.arrival_s for app in first.apps]
    assert arrivals == sorted(arrivals) and arrivals[-1] < first.duration_s
    assert first != make_app_workload(name, seed=6)


def test_the_mixed_workload_holds_every_kind_from_four_weighted_tenants() -> None:
    workload = make_app_workload("mixed")
    assert {app.app_type for app in workload.apps} == {
        AppType.CHAT,
        AppType.SELF_CONSISTENCY,
        AppType.MAP_REDUCE,
        AppType.AGENT,
    }
    assert workload.tenants == ["tenant0", "tenant1", "tenant2", "tenant3"]
    assert workload.weights["tenant2"] == 2.0


def test_arrivals_are_poisson_per_tenant() -> None:
    workload = make_app_workload("chat", seed=2)
    times = np.array([app.arrival_s for app in workload.apps if app.tenant == "tenant0"])
    gaps = np.diff(times)
    # Exponential gaps: the standard deviation is about the mean (a fixed rate would give 0).
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.15)


def test_unknown_workload_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from mixed"):
        make_app_workload("everything")


def test_training_apps_cover_every_kind_and_many_tenants() -> None:
    apps = training_apps(seed=1, num_apps=400)
    assert len({app.app_type for app in apps}) == 4
    assert len({app.tenant for app in apps}) > 10
