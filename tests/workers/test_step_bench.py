"""bench/step.py runs at a small size and prints both pairs of schedulers with their ratios."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_step_bench_times_both_fair_schedulers_against_vllms_own() -> None:
    result = subprocess.run(
        [sys.executable, "bench/step.py", "--tenants", "20", "--waiting", "200"]
        + ["--running", "16", "--steps", "30"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "FairScheduler against vLLM Scheduler" in out
    assert "FairScheduler (async) against vLLM AsyncScheduler" in out
    assert len(re.findall(r"step \(schedule \+ update\).*?(\d+\.\d\d)x", out)) == 2
    assert len(re.findall(r"add_request\(\).*?(\d+\.\d\d)x", out)) == 2
    # Each scheduler was what its name says, and kept its queue at depth.
    assert "(FairAsyncScheduler)" in out and "(AsyncScheduler)" in out
    assert len(re.findall(r"(\d+) waiting, (\d+) running at the end", out)) == 4
