"""A worker whose usage log holds a poisoned row (left by a worker that died: a NUL in its
`app`, which PostgreSQL refuses) keeps billing every other request, across a restart: the
poisoned row goes to the quarantine once, the rows around it and every later request are
billed once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import complete_chat
from tests.e2e.usage_checks import wait_for_rows
from tests.usage.factories import usage_of
from usage.models import QuarantinedUsage, UsageRecord
from usage.sink import DatabaseUsageStore, UsageSink

pytestmark = pytest.mark.slow

NUM_REQUESTS = 5  # per worker life


def test_a_poisoned_row_left_in_the_log_never_stops_billing_across_a_restart(
    api: Any, light: Any, start_worker: Any, tmp_path: Path
) -> None:
    tenant, key = light
    log_dir = tmp_path / "usage-log"
    dead = UsageSink(DatabaseUsageStore(), log_dir=log_dir)
    dead.record(usage_of(tenant, "left-before"))
    dead.record(usage_of(tenant, "left-poisoned", app="nul\x00app"))
    dead.record(usage_of(tenant, "left-after"))
    dead.log.close()  # as a SIGKILL leaves it: nothing flushed, the log's lock let go

    answered = []
    for life in ("first", "second"):
        worker = start_worker(life, PARITY_USAGE_LOG_DIR=str(log_dir))
        answered += [
            complete_chat(api.url, key.secret, f"{life} {n}", 8) for n in range(NUM_REQUESTS)
        ]
        wait_for_rows(["left-before", "left-after", *(r.request_id for r in answered)])
        worker.terminate()

    billed = set(UsageRecord.objects.values_list("request_id", flat=True))
    quarantined = list(QuarantinedUsage.objects.values_list("request_id", flat=True))
    assert all(r.status == 200 for r in answered)
    assert billed == {"left-before", "left-after", *(r.request_id for r in answered)}
    assert quarantined == ["left-poisoned"]
