"""The fair scheduler's environment: strict at start, weights files re-read when they change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.workers.vllm_factories import make_scheduler, step
from workers.scheduler_settings import (
    SchedulerSettings,
    WeightsFileWatcher,
    parse_weights,
    read_weights_file,
)


def write_weights(path: Path, weights: object, *, mtime: float) -> Path:
    path.write_text(json.dumps(weights), encoding="utf-8")
    os.utime(path, (mtime, mtime))
    return path


def test_no_configuration_means_vtc_with_every_tenant_at_weight_1() -> None:
    settings = SchedulerSettings.from_env({})
    assert settings == SchedulerSettings("vtc", {}, None)


def test_parity_weights_parses_tenant_weight_pairs() -> None:
    assert parse_weights("acme=1, globex=3,  initech=0.5 ,") == {
        "acme": 1.0,
        "globex": 3.0,
        "initech": 0.5,
    }
    assert parse_weights("") == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("acme", "expected tenant=weight"),
        ("acme=", "not a number"),
        ("acme=heavy", "not a number"),
        ("acme=0", "must be > 0"),
        ("acme=-2", "must be > 0"),
        ("acme=nan", "must be > 0"),
        ("acme=inf", "must be > 0"),
        ("=2", "non-empty"),
        ("acme=1,acme=2", "listed twice"),
    ],
)
def test_a_bad_parity_weights_value_is_refused_naming_the_variable(
    value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        SchedulerSettings.from_env({"PARITY_WEIGHTS": value})
    assert "PARITY_WEIGHTS" in str(error.value)


def test_an_unknown_policy_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="PARITY_POLICY: unknown policy 'wfq'"):
        SchedulerSettings.from_env({"PARITY_POLICY": "wfq"})


def test_any_registry_policy_name_is_accepted() -> None:
    for name in ("fcfs", "rpm20", "lcf", "vtc", "vtc-predict", "vtc-oracle"):
        assert SchedulerSettings.from_env({"PARITY_POLICY": name}).policy_name == name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"acme": 0}', "must be > 0"),
        ('{"acme": "x"}', "not a number"),
        ('{"acme": true}', "must be a number"),
    ],
)
def test_a_bad_weights_file_is_refused_at_start(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "weights.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        SchedulerSettings.from_env({"PARITY_WEIGHTS_FILE": str(path)})
    assert "PARITY_WEIGHTS_FILE" in str(error.value)


def test_a_missing_weights_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PARITY_WEIGHTS_FILE .* cannot read"):
        SchedulerSettings.from_env({"PARITY_WEIGHTS_FILE": str(tmp_path / "absent.json")})


def test_the_watcher_looks_at_most_once_a_second_and_only_reads_a_changed_file(
    tmp_path: Path,
) -> None:
    path = write_weights(tmp_path / "w.json", {"acme": 2}, mtime=1000.0)
    watcher = WeightsFileWatcher(path)
    assert watcher.poll(0.0) == {"acme": 2.0}
    write_weights(path, {"acme": 5}, mtime=1001.0)
    assert watcher.poll(0.5) is None  # too soon to look
    assert watcher.poll(1.0) == {"acme": 5.0}
    assert watcher.poll(2.5) is None  # unchanged


def test_a_weights_file_broken_while_running_keeps_the_weights_in_force(tmp_path: Path) -> None:
    path = write_weights(tmp_path / "w.json", {"acme": 2}, mtime=1000.0)
    watcher = WeightsFileWatcher(path)
    watcher.poll(0.0)
    path.write_text("{oops", encoding="utf-8")
    os.utime(path, (1001.0, 1001.0))
    assert watcher.poll(1.0) is None
    assert read_weights_file(write_weights(path, {"acme": 3}, mtime=1002.0)) == {"acme": 3.0}


def test_the_scheduler_starts_with_env_weights_and_follows_the_weights_file(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_weights(tmp_path / "w.json", {"globex": 3, "initech": 2}, mtime=1000.0)
    monkeypatch.setenv("PARITY_WEIGHTS", "acme=1.5,initech=4")
    monkeypatch.setenv("PARITY_WEIGHTS_FILE", str(path))
    scheduler = make_scheduler(tiny_model_dir)
    policy = scheduler.fair_policy
    assert [policy.weight(t) for t in ("acme", "globex", "initech", "hooli")] == [1.5, 3, 2, 1]

    write_weights(path, {"acme": 5}, mtime=1001.0)
    scheduler.clock.advance(1.5)
    step(scheduler)

    # initech left the file: back to its PARITY_WEIGHTS weight; globex back to 1.
    assert [policy.weight(t) for t in ("acme", "globex", "initech")] == [5, 1, 4]


def test_the_scheduler_refuses_to_start_on_a_bad_setting(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_WEIGHTS", "acme=zero")
    with pytest.raises(ValueError, match="PARITY_WEIGHTS"):
        make_scheduler(tiny_model_dir)
