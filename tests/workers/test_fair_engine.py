"""End to end: a real vLLM engine on the CPU, with FairScheduler in its engine-core process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.workers.fair_engine_run import REQUESTS

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fair_engine_run.py")


@pytest.mark.slow
def test_a_real_engine_serves_two_tenants_and_reports_their_usage(tiny_model_dir: Path) -> None:
    # The engine spawns processes: run it as a script, one engine at a time.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("PARITY_")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tiny_model_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("PARITY-RESULT "))
    report = json.loads(line.removeprefix("PARITY-RESULT "))

    for output in report["outputs"]:
        assert output["num_tokens"] == REQUESTS[output["tenant"]][1]
    assert Counter(o["tenant"] for o in report["outputs"]) == {"acme": 4, "globex": 4}
    assert report["chat_prompt_tokens"] == 6  # <s><|user|>Hi<|end|><|assistant|>

    usage = report["usage"]
    assert Counter(u["tenant"] for u in usage) == {"acme": 4, "globex": 4, "initech": 1}
    assert len({u["request_id"] for u in usage}) == len(usage)
    for record in usage:
        assert record["status"] == "finished"
        assert record["prompt_tokens"] == record["num_prompt_tokens"] > 0
        expected = 4 if record["tenant"] == "initech" else REQUESTS[record["tenant"]][1]
        assert record["output_tokens"] == expected
        assert record["kv_block_steps"] > 0 and record["kv_gib_seconds"] > 0
