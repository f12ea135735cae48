"""SIGKILL of the engine worker with over a hundred requests in flight, half of them
streamed: every client gets a complete answer or a clear error, every complete answer is
billed once with its tokens, a stream cut by the kill is billed for exactly the tokens its
client received (never for the retry nobody read), and no engine process outlives it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.e2e.clients import BackgroundFlood
from tests.e2e.usage_checks import wait_for_rows
from tests.stack import wait_until

pytestmark = pytest.mark.slow

NUM_STREAMS = 60
NUM_ANSWERS = 60
MAX_TOKENS = 48
# Room for several requests inside the engine at the kill, so that streams are cut midway.
WORKER_ENV = {"PARITY_WORKER_SLOTS": "6", "PARITY_MAX_NUM_SEQS": "4"}


def test_sigkill_with_120_requests_in_flight_bills_exactly_what_clients_received(
    api: Any, light: Any, heavy: Any, start_worker: Any
) -> None:
    victim = start_worker("victim", **WORKER_ENV)
    flood = BackgroundFlood(
        api.url, (light[1].secret, NUM_STREAMS), (heavy[1].secret, NUM_ANSWERS), MAX_TOKENS
    )
    wait_until(lambda: flood.watch.streams_with_tokens >= 3 and flood.watch.answered >= 3)
    in_flight = NUM_STREAMS + NUM_ANSWERS - flood.watch.answered
    victim.kill_worker_process()
    engine_gone = victim.wait_for_group_exit(timeout_s=30)
    start_worker("successor", **WORKER_ENV)
    streams, answers = flood.results()
    results = streams + answers

    assert engine_gone, "the engine outlived its worker's SIGKILL"
    assert in_flight >= 100
    complete = [r for r in results if r.error is None and r.usage]
    cut = [r for r in streams if r.error is not None and r.error.get("code") == "restarted"]
    lost = [r for r in results if r.error is not None and r.error.get("code") == "answer_lost"]
    print(
        f"\nin flight at the kill: {in_flight}; complete {len(complete)}, streams cut "
        f"{len(cut)}, answers lost {len(lost)}; statuses {Counter(r.status for r in results)}"
    )
    # Every client got a complete answer or a stream that ended with a restart. None lost
    # its answer: a worker marks a request done only together with its `done` event.
    assert len(complete) + len(cut) == len(results)
    assert lost == []
    assert all(r.error is None or r.error.get("message") for r in results)

    rows = {row.request_id: row for row in wait_for_rows(r.request_id for r in complete + cut)}
    for result in complete:  # billed once, with exactly the tokens the client was told
        row = rows[result.request_id]
        assert result.usage is not None
        assert (row.prompt_tokens, row.output_tokens) == (
            result.usage["prompt_tokens"],
            result.usage["completion_tokens"],
        )
    for result in cut:  # billed for what the client received before the kill, not more
        row = rows[result.request_id]
        assert row.status == "aborted"
        assert row.output_tokens == result.output_tokens_received
        assert row.prompt_tokens == result.prompt_tokens_seen
    assert len(rows) == len(complete) + len(cut)
