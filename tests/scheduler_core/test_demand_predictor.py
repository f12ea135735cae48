"""The learned demand predictor: shipped weights, features, the training CLI, torch isolation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scheduler_core.apps import AppInfo, AppType
from scheduler_core.demand import DemandPredictor, MovingAverageDemand, OracleDemand
from scheduler_core.predict import DEFAULT_WEIGHTS, load_mlp_predictor
from scheduler_core.predict.evaluate import mape, relative_errors, unknown_type
from scheduler_core.predict.features import FEATURE_NAMES, HistoryFeatures, Masking
from scheduler_core.sim.app_workloads import training_apps

ROOT = Path(__file__).resolve().parents[2]
HELD_OUT_SEED = 7  # training uses seeds 0 (train) and 1 (its own test)


def make_info(
    tenant: str = "alice",
    app_type: AppType = AppType.CHAT,
    prompt_tokens: int = 400,
    fan_out: int = 1,
    max_tokens: int = 1024,
    num_calls: int | None = 1,
) -> AppInfo:
    return AppInfo(
        app_id=f"{tenant}-app",
        tenant=tenant,
        arrival_s=0.0,
        app_type=app_type,
        prompt_tokens=prompt_tokens,
        fan_out=fan_out,
        max_tokens=max_tokens,
        num_calls=num_calls,
    )


def held_out_mape(predictor: DemandPredictor, num_apps: int = 1500) -> float:
    """Predict each application at arrival, then observe its true cost, in order."""
    errors = []
    for app in training_apps(HELD_OUT_SEED, num_apps):
        info = app.info(with_truth=False)
        errors.append(abs(predictor.predict(info) - app.true_cost) / app.true_cost)
        predictor.observe(info, app.true_cost)
    return float(np.mean(errors))


# -- the shipped predictor ----------------------------------------------------------------


def test_the_shipped_weights_beat_the_moving_average_on_unseen_tenants() -> None:
    mlp, baseline = held_out_mape(load_mlp_predictor()), held_out_mape(MovingAverageDemand())
    assert mlp < 0.5 * baseline, (mlp, baseline)


def test_the_shipped_weights_live_inside_the_package() -> None:
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.is_relative_to(ROOT / "scheduler_core" / "predict")
    assert DEFAULT_WEIGHTS.stat().st_size < 64 * 1024


def test_an_unknown_app_with_no_history_gets_a_positive_finite_prediction() -> None:
    predictor = load_mlp_predictor()
    predicted = predictor.predict(make_info(app_type=AppType.UNKNOWN, num_calls=None))
    assert predictor.name == "mlp"
    assert math.isfinite(predicted) and predicted >= 1.0


def test_absurd_inputs_still_give_a_finite_prediction() -> None:
    info = make_info(prompt_tokens=10**12, fan_out=10**6, max_tokens=10**12, num_calls=10**6)
    assert math.isfinite(load_mlp_predictor().predict(info))


def test_a_costly_tenants_history_raises_its_prediction() -> None:
    predictor = load_mlp_predictor()
    newcomer = predictor.predict(make_info(tenant="alice"))
    for _ in range(8):
        predictor.observe(make_info(tenant="alice"), cost=2_000_000.0)
    assert predictor.predict(make_info(tenant="alice")) > 2 * newcomer
    assert predictor.predict(make_info(tenant="bob")) == pytest.approx(newcomer)


def test_weights_trained_on_other_features_are_refused(tmp_path: Path) -> None:
    document = json.loads(DEFAULT_WEIGHTS.read_text())
    document["feature_names"] = document["feature_names"][:-1]
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="other features"):
        load_mlp_predictor(stale)


def test_a_weights_file_missing_its_layers_is_refused(tmp_path: Path) -> None:
    document = json.loads(DEFAULT_WEIGHTS.read_text())
    del document["layers"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="malformed"):
        load_mlp_predictor(broken)


def test_the_oracle_scores_zero_and_the_baseline_does_not() -> None:
    apps = training_apps(HELD_OUT_SEED, 40)
    assert mape(relative_errors(OracleDemand(), apps))["overall"] == 0.0
    assert mape(relative_errors(MovingAverageDemand(), apps, unknown_type))["overall"] > 0.1


# -- features -----------------------------------------------------------------------------


def test_a_tenant_with_history_has_different_features_than_a_newcomer() -> None:
    history = HistoryFeatures()
    history.observe(make_info(tenant="alice"), cost=50_000.0)
    alice, bob = history.features(make_info(tenant="alice")), history.features(make_info("bob"))
    assert alice.shape == bob.shape == (len(FEATURE_NAMES),)
    count = FEATURE_NAMES.index("type_history_count")
    assert alice[count] > 0 and bob[count] == 0
    assert not np.array_equal(alice, bob)


def test_an_unknown_type_reads_the_tenants_history_over_all_types() -> None:
    history = HistoryFeatures()
    history.observe(make_info(app_type=AppType.AGENT), cost=1e6)
    unknown = history.features(make_info(app_type=AppType.UNKNOWN))
    chat = history.features(make_info(app_type=AppType.CHAT))
    column = FEATURE_NAMES.index("type_history_log_cost")
    assert unknown[column] == pytest.approx(math.log1p(1e6))
    assert chat[column] == 0.0


def test_masking_hides_the_type_and_call_count_as_vllm_would() -> None:
    rng = np.random.default_rng(0)
    masked = Masking(unknown_rate=1.0, no_calls_rate=0.0).apply(make_info(num_calls=3), rng)
    assert masked.app_type is AppType.UNKNOWN and masked.num_calls is None


# -- the training command line ------------------------------------------------------------


def test_the_train_cli_writes_loadable_weights_and_a_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler_core.predict.train import main

    out, report = tmp_path / "w" / "mlp.json", tmp_path / "report.json"
    argv = ["train", "--apps", "300", "--epochs", "5", "--out", str(out), "--report", str(report)]
    assert main(argv) == 0
    document = json.loads(report.read_text())
    assert {"mape", "per_type", "inference_us", "train_seconds", "num_train", "num_test"} <= set(
        document
    )
    assert {"mlp", "moving_average", "oracle"} <= set(document["mape"])
    assert document["num_train"] == 300
    assert load_mlp_predictor(out).predict(make_info()) >= 1.0
    assert "| held-out MAPE |" in capsys.readouterr().out


def test_a_report_to_stdout_stays_parseable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler_core.predict.train import main

    argv = ["train", "--apps", "60", "--epochs", "2", "--out", str(tmp_path / "w.json")]
    assert main([*argv, "--report", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_train"] == 60
    assert "| held-out MAPE |" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--apps", "-1"],
        ["train", "--epochs", "0"],
        ["train", "--seed", "-3"],
        ["train", "--apps", "many"],
        ["fit"],
        [],
    ],
)
def test_bad_cli_input_exits_2_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler_core.predict.train import main

    assert main([*argv, "--out", str(tmp_path / "w.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("predict: error:") and err.count("\n") == 1
    assert not (tmp_path / "w.json").exists()


def test_an_out_path_that_is_a_directory_is_bad_input(tmp_path: Path) -> None:
    from scheduler_core.predict.train import main

    assert main(["train", "--apps", "60", "--epochs", "1", "--out", str(tmp_path)]) == 2


def test_the_module_entry_point_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_core.predict", "train", "--apps", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--apps" in result.stderr


# -- torch stays optional -----------------------------------------------------------------


def test_importing_the_predict_package_does_not_load_torch() -> None:
    code = (
        "import sys\n"
        "import scheduler_core.demand, scheduler_core.predict\n"
        "import scheduler_core.predict.features, scheduler_core.predict.evaluate\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
