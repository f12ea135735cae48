"""The house plan: scheduler_core imports no Django, Celery, vLLM or torch, and reads no clock.

One exception: the learned demand predictor may use torch (see TORCH_MODULES).
"""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import scheduler_core

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("django", "rest_framework", "celery", "vllm", "torch", "redis", "psycopg")
# Per the architecture, torch is allowed only in the demand predictor's model
# and its training CLI; `scheduler_core.predict` itself stays torch-free and
# loads these lazily.
TORCH_MODULES = (
    "scheduler_core.predict.mlp",
    "scheduler_core.predict.train",
    "scheduler_core.predict.__main__",
)


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(scheduler_core.__path__, "scheduler_core.")]


def _forbidden_loaded_by(modules: list[str]) -> str:
    """Import `modules` in a fresh interpreter; the forbidden packages that came along."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_every_module_loads_no_framework() -> None:
    names = [name for name in _all_modules() if name not in TORCH_MODULES]
    assert _forbidden_loaded_by(names) == "[]"
    assert len(names) > 20  # the walk really found the package


def test_the_torch_modules_import_and_load_nothing_else_forbidden() -> None:
    assert set(TORCH_MODULES) <= set(_all_modules())  # the exemption names real modules
    assert _forbidden_loaded_by(list(TORCH_MODULES)) == "['torch']"


def test_no_module_reads_the_wall_clock() -> None:
    clock = re.compile(r"\btime\.(time|monotonic|perf_counter)\(|datetime\.(now|utcnow)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "scheduler_core").rglob("*.py")
        if clock.search(path.read_text())
    ]
    assert offenders == []
