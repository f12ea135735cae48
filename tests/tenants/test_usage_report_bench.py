"""bench/usage_report.py runs end to end on a small load and prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_the_report_bench_loads_rolls_up_times_and_drops_its_database() -> None:
    db = connection.settings_dict
    user, password = quote(db["USER"] or "", safe=""), quote(db["PASSWORD"] or "", safe="")
    name = f"{db['NAME']}_usage_bench"
    url = f"postgres://{user}:{password}@{db['HOST']}:{db['PORT']}/{name}"
    result = subprocess.run(
        [sys.executable, "bench/usage_report.py", "--rows", "3000", "--tenants", "30",
         "--days", "3", "--repeat", "3", "--database-url", url, "--drop"],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert re.search(r"usage rows\s+3,000", result.stdout)
    assert re.search(
        r"report, first page \(24 x 1h\)\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms", result.stdout
    )
    assert re.search(r"raw rows / rollups, first page\s+[\d.]+x", result.stdout)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        assert cursor.fetchone() is None  # --drop removed it
