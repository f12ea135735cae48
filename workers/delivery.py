"""One delivery of a request to this worker: its claim on the run, and, for a streamed
request delivered again, the gateway's word on whether to go on (see `wire/runs.py`)."""

from __future__ import annotations

import logging
import time

from wire.channels import Channels
from wire.gate import REFRESH_S

logger = logging.getLogger(__name__)

CLAIM_POLL_S = 0.5
# How long a restarted stream waits for its gateway's word. The gateway answers as soon as
# it reads the `start` event; silence this long means it is gone, and so is the client.
DECISION_WAIT_S = 10.0
DECISION_POLL_S = 0.05


def claim(channels: Channels, request_id: str, holder: str) -> bool:
    """Claim the request's run, waiting while an earlier delivery holds it (it runs, or its
    worker died and the claim has yet to lapse). False if that delivery finished the
    request meanwhile: this one has nothing to do."""
    waited = False
    while not channels.claim_run(request_id, holder):
        if not waited:
            logger.info("%s is running elsewhere; waiting for that run to end", request_id)
            waited = True
        if channels.is_done(request_id):
            return False
        time.sleep(CLAIM_POLL_S)
    if channels.is_done(request_id):
        channels.release_run(request_id, holder)
        return False
    return True


def restart_decision(channels: Channels, request_id: str) -> int | None:
    """The gateway's word for a restarted stream: `GO_ON`, the tokens its client already
    received (stop, bill those), or None if the gateway did not answer (it is gone)."""
    deadline = time.monotonic() + DECISION_WAIT_S
    while True:
        decision = channels.restart_decision(request_id)
        if decision is not None or time.monotonic() > deadline:
            return decision
        time.sleep(DECISION_POLL_S)


class SeatWatch:
    """Which running requests lost their gate seat for good.

    A seat can be missing for a moment without its request being orphaned: Redis restarted
    empty, or the gateway stalled past its lease; the gateway's next renewal puts it back
    (`Gate.refresh`). Only a seat missing for longer than two renewals means the gateway
    is gone, and with it the client: then the worker stops computing an answer nobody
    will read."""

    def __init__(self, grace_s: float = 2 * REFRESH_S + 1) -> None:
        self.grace_s = grace_s
        self._missing_since: dict[str, float] = {}

    def orphans(self, seatless: set[str], now: float) -> set[str]:
        """Given the requests without a seat now, those that have had none for too long."""
        self._missing_since = {rid: self._missing_since.get(rid, now) for rid in seatless}
        return {rid for rid, since in self._missing_since.items() if now - since >= self.grace_s}
