"""The house plan: scheduler_core imports no Django, Celery, vLLM or torch, and reads no clock."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import scheduler_core

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("django", "rest_framework", "celery", "vllm", "torch", "redis", "psycopg")


def test_importing_every_module_loads_no_framework() -> None:
    names = [m.name for m in pkgutil.walk_packages(scheduler_core.__path__, "scheduler_core.")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(names) > 20  # the walk really found the package


def test_no_module_reads_the_wall_clock() -> None:
    clock = re.compile(r"\btime\.(time|monotonic|perf_counter)\(|datetime\.(now|utcnow)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "scheduler_core").rglob("*.py")
        if clock.search(path.read_text())
    ]
    assert offenders == []
