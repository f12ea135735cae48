"""The benchmarks under bench/ run and print their ratio (figures only, no timing asserts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_policy_pick_bench_prints_vtc_against_fifo() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/policy_pick.py",
            "--tenants",
            "10",
            "--waiting",
            "100",
            "--cycles",
            "200",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"vtc / fifo ratio\s+[\d.]+x", result.stdout)


@pytest.mark.parametrize("script", ["flood", "overhead", "pool"])
def test_load_bench_prints_its_help_with_an_example(script: str) -> None:
    # The load benchmarks need a running server; --help at least proves they import and parse.
    result = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f".venv/bin/python bench/{script}.py" in result.stdout
