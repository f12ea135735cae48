"""bench/accounting.py runs on a tiny workload, prints its ratios and cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from tenants.models import Tenant
from usage.models import UsageRecord

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_accounting_bench_prints_batched_against_naive_and_cleans_up() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the accounting benchmark measures PostgreSQL")
    db = connection.settings_dict
    user, password = quote(db["USER"] or "", safe=""), quote(db["PASSWORD"] or "", safe="")
    url = f"postgres://{user}:{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    result = subprocess.run(
        [sys.executable, "bench/accounting.py", "--events", "200", "--tenants", "5"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert re.search(r"batched / naive\s+[\d.]+x", result.stdout)
    assert re.search(r"rows written / bytes left\s+200 / 0", result.stdout)
    assert not Tenant.objects.filter(slug__startswith="bench-").exists()
    assert UsageRecord.objects.count() == 0
