"""The embedded mode runs on SQLite: rollups, the usage report and invoices work there too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from datetime import timedelta
from decimal import Decimal
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from billing import invoices as billing
from usage import report as usage_report
from tenants.models import Plan, Tenant
from usage.models import TenantUsageHour, UsageHour
from tests.tenants.usage_data import T0, request_at, roll_up, store, unix
plan = Plan.objects.create(name="p", price_input_per_mtok=Decimal("1"),
    price_cached_input_per_mtok=Decimal("0.5"), price_output_per_mtok=Decimal("2"),
    price_kv_gib_hour=Decimal("0.1"))
acme = Tenant.objects.create(slug="acme", name="Acme", plan=plan)
store(*(request_at(acme, T0 + timedelta(minutes=i), ttft_s=0.1 * (i + 1), output_tokens=100_000)
        for i in range(10)))
first = roll_up().rows
store(request_at(acme, T0 + timedelta(minutes=30), ttft_s=2.0, output_tokens=100_000))
second = roll_up().rows
query = usage_report.parse_query(
    {"start_time": str(unix(T0)), "bucket_width": "1h", "group_by": "tenant"},
    now=unix(T0) + 3600, tenant_ids=None)
page = json.loads(usage_report.rendered_page(query))
result = page["data"][0]["results"][0]
invoice = billing.generate(acme, billing.month(2026, 10))
print(json.dumps({
    "rolled": [first, second],
    "hour": UsageHour.objects.get().num_requests,
    "tenant_hour": TenantUsageHour.objects.get().num_requests,
    "hist": sum(UsageHour.objects.get().ttft_hist.values()),
    "result": [result["tenant"], result["num_requests"], result["ttft_p95_ms"]],
    "total": str(invoice.total),
}))
"""


def test_rollups_reports_and_invoices_run_on_sqlite(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["rolled"] == [10, 1]
    assert seen["hour"] == seen["tenant_hour"] == seen["hist"] == 11
    assert seen["result"][:2] == ["acme", 11]
    assert 1900 <= seen["result"][2] <= 2100  # the p95 of 11 TTFTs is the 2 s one
    # 1.1M output tokens at 2 per 1M; the input and KV lines round to 0.00 each.
    assert Decimal(seen["total"]) == Decimal("2.20")
