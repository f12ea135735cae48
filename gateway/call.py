"""The gateway's side of a generation: a seat at the fair gate, the hand-off to the engine
pool, the event stream. All of it is a coroutine: a request that waits holds no thread.

A `Call` holds its seat from `admit()` until `close()`, which gives it back charged with
the service the engine reported, and cancels the request in the engine if the client
left (`abort()`); the worker still records the partial usage, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from celery import current_app
from django.conf import settings
from redis.exceptions import RedisError

from gateway.auth import Principal
from gateway.broker import publisher_for
from gateway.errors import OpenAIError
from gateway.parsing import prompt_chars
from wire.channels import Channels, Event, StreamUnreadable
from wire.gate import Gate, Ticket, TicketLapsed, Verdict, reserve_cost, served_cost
from wire.protocol import GenerationRequest, coalesce_deltas

logger = logging.getLogger(__name__)
publisher = publisher_for(current_app)

# How long a read waits before the caller gets a chance to send an SSE keep-alive.
POLL_S = 1.0
UNLIMITED = 2**31  # a tenant with no concurrency limit of its own
CHARS_PER_TOKEN = 4  # the gate's guess at prompt tokens; the release charges the truth
# A started request silent this long is checked for a live run (see `Call._answer_lost`).
LOST_AFTER_S = 10.0
# One never seen to start waits longer: a worker claims its run only once it takes the
# delivery, which a busy worker may do a little after the gate seated it.
LOST_UNSTARTED_AFTER_S = 3 * LOST_AFTER_S


class Call:
    def __init__(
        self, channels: Channels, gate: Gate, request: GenerationRequest, caller: Principal
    ) -> None:
        self.channels = channels
        self.gate = gate
        self.request = request
        self.caller = caller
        self._prompt_estimate = max(1, prompt_chars(request) // CHARS_PER_TOKEN)
        self._seated = False
        self._safety_net: weakref.finalize[Any, Any] | None = None
        self._submitted = False
        self._expecting = False
        self._finished = False
        self._served: float | None = None  # the cost the engine reported, once done
        self._num_output_seen = 0
        self.num_prompt_tokens = 0  # as the worker counted them (known from `start`)
        self._started = False
        self._orphan_checks = 0  # consecutive checks that found no live run
        self._next_orphan_check = 0.0
        self._outages_at_submit = 0  # the event store's outages seen when it was submitted

    @property
    def num_output_seen(self) -> int:
        """Output tokens relayed to the client (of the attempt it is billed for)."""
        return self._num_output_seen

    @property
    def request_id(self) -> str:
        return self.request.request_id

    async def admit(self) -> None:
        """Take a seat: at once within capacity, or after waiting in the tenant's queue."""
        deadline = time.monotonic() + settings.PARITY_REQUEST_TIMEOUT_S
        while True:
            entry = await self.gate.enter(self._ticket())
            if entry.verdict is Verdict.SEATED:
                self._hold()
                return
            if entry.verdict is not Verdict.QUEUED:
                raise _refusal(entry.verdict, entry.retry_after_s, entry.position, self.caller)
            self._hold()
            try:
                seated = await self.gate.wait_seat(self.request_id, deadline - time.monotonic())
            except TicketLapsed:
                # Its lease ran out while it waited (this process stalled past a lease):
                # the gate forgot it, so it queues again, behind its tenant's others.
                logger.warning("%s lost its place at the gate; entering again", self.request_id)
                self._release_hold()
                continue
            if seated:
                return
            raise OpenAIError(
                "The engine pool had no seat for this request in time; retry later.",
                status=503,
                code="queue_timeout",
                headers={"Retry-After": "5"},
            )

    def _ticket(self) -> Ticket:
        max_tokens = self.request.max_tokens or max(
            1, settings.PARITY_MAX_MODEL_LEN - self._prompt_estimate
        )
        return Ticket(
            request_id=self.request_id,
            tenant=self.caller.tenant,
            weight=self.caller.weight,
            cost=reserve_cost(self._prompt_estimate, max_tokens),
            tenant_limit=self.caller.max_concurrent_requests or UNLIMITED,
            queue_limit=settings.PARITY_TENANT_QUEUE_LIMIT,
        )

    async def submit(self) -> None:
        """Hand the request to the engine pool's queue; its events will come to this event
        loop's inbox."""
        reply_to = self.channels.expect(self.request_id)
        self._outages_at_submit = self.channels.event_outages()
        self.request = replace(self.request, reply_to=reply_to, leased=True)
        self._expecting = True
        self._submitted = True  # from here the pool may hold it: an early end must abort it
        await publisher.publish(self.request, settings.PARITY_ENGINE_QUEUE)

    async def events(self) -> AsyncIterator[Event | None]:
        """The request's events in order; None after each quiet second (for keep-alives).

        Ends after `done` or `error`; raises 504 after PARITY_REQUEST_TIMEOUT_S of silence,
        502 once the gateway's inbox has been unreadable for a while (Redis down).
        """
        quiet_since = time.monotonic()
        while True:
            try:
                events = await self.channels.receive(self.request_id, POLL_S)
            except StreamUnreadable as exc:
                with contextlib.suppress(Exception):  # Redis is likely down for this too
                    await self.abort()
                raise OpenAIError(
                    f"The answer to {self.request_id} could not be read ({exc}); retry it.",
                    status=502,
                    code="stream_unreadable",
                ) from None
            if not events:
                quiet_s = time.monotonic() - quiet_since
                if quiet_s > settings.PARITY_REQUEST_TIMEOUT_S:
                    await self.abort()
                    raise OpenAIError(
                        "The engine pool did not answer in time.", status=504, code="timeout"
                    )
                if quiet_s > self._lost_after_s() and await self._answer_lost():
                    await self.abort()  # a copy still in the broker must not run unread
                    raise OpenAIError(
                        f"The answer to {self.request_id} was lost on its way (the event "
                        "store restarted); it may have been served and billed. Retry it.",
                        status=502,
                        code="answer_lost",
                    )
                yield None
                continue
            quiet_since = time.monotonic()
            self._orphan_checks = 0
            for event in coalesce_deltas(events):
                if event["type"] == "start" and int(event.get("attempt", 1)) > 1:
                    await self._decide_restart()
                self._note(event)
                yield event
                if event["type"] in ("done", "error"):
                    self._finished = True
                    return

    def _lost_after_s(self) -> float:
        return LOST_AFTER_S if self._started else LOST_UNSTARTED_AFTER_S

    async def _answer_lost(self) -> bool:
        """Whether a quiet request lost its events to an outage of the event store (a
        Redis that restarted empty): its last ones, or all of them (`start` and `done` of a
        short request can both fall just before the restart). Only across such an outage
        can events vanish; then a run that has ended (no live claim on two checks, half of
        LOST_AFTER_S apart; a running worker re-takes its claims within a second of Redis's
        return) will send nothing more. Without an outage a quiet request just waits: after
        a worker's death its copy waits in the broker for the next worker."""
        if time.monotonic() < self._next_orphan_check:
            return False
        if self.channels.event_outages() == self._outages_at_submit:
            return False
        self._next_orphan_check = time.monotonic() + LOST_AFTER_S / 2
        try:
            alive = await self.channels.arun_alive(self.request_id)
        except RedisError:
            return False  # Redis is down: the inbox's own check ends the stream if it stays so
        self._orphan_checks = 0 if alive else self._orphan_checks + 1
        return self._orphan_checks >= 2

    async def _decide_restart(self) -> None:
        """A later delivery of a streamed request waits for this word (`wire/runs.py`): go
        on if the client has seen no token, else stop, billed for the tokens it received
        (the stream then ends with an error: sent tokens cannot be taken back)."""
        if self.request.stream:
            await self.channels.adecide_restart(self.request_id, self._num_output_seen)

    def _note(self, event: Event) -> None:
        if event["type"] == "delta":
            self._num_output_seen += int(event.get("num_tokens", 0))
        elif event["type"] == "start":
            self._started = True
            self.num_prompt_tokens = int(event.get("prompt_tokens", 0))
            if not self.request.stream:
                # A redelivery starts over; a stream keeps its count (what its client got).
                self._num_output_seen = 0
        elif event["type"] == "done":
            usage = event["usage"]
            self._served = served_cost(usage["prompt_tokens"], usage["output_tokens"])

    async def abort(self) -> None:
        """Stop the engine's work on it: only a request handed to the pool has any."""
        if self._submitted and not self._finished:
            await self.channels.arequest_abort(self.request_id)

    async def close(self) -> None:
        """Give the seat back (or leave the queue) and free the stream. Never raises: a
        seat the gate could not take back lapses with its lease."""
        if self._seated:
            self._release_hold()
            cost = self._served
            if cost is None:  # ended early: what we saw of it is what it cost
                cost = served_cost(self._prompt_estimate, self._num_output_seen)
            try:
                await self.gate.leave(self.request_id, cost)
            except Exception:
                logger.warning("giving back the seat of %s failed", self.request_id, exc_info=True)
        if self._expecting:
            self._expecting = False
            self.channels.forget(self.request_id)

    def _release_hold(self) -> None:
        self._seated = False
        if self._safety_net is not None:
            self._safety_net.detach()

    def _hold(self) -> None:
        """From here `close` must give the seat back (or leave the queue). Should a response
        be dropped unread, with `close` never called, the seat goes back when the call is
        collected, not after its lease runs out."""
        self._seated = True
        self._safety_net = weakref.finalize(
            self, _leave_later, asyncio.get_running_loop(), self.gate, self.request_id
        )


def _leave_later(loop: asyncio.AbstractEventLoop, gate: Gate, request_id: str) -> None:
    def leave() -> None:
        loop.create_task(gate.leave(request_id))

    logger.warning("%s was dropped holding its seat; giving it back", request_id)
    with contextlib.suppress(RuntimeError):  # the loop is closed: the lease will lapse
        loop.call_soon_threadsafe(leave)


def _refusal(verdict: Verdict, retry_after_s: int, position: int, caller: Principal) -> OpenAIError:
    if verdict is Verdict.NO_WORKERS:
        return OpenAIError(
            # A running worker that cannot bill (its usage log is past its backlog while the
            # database is down) leaves the pool too: say both, the operator sees which.
            "No engine worker is taking requests: none is running, or every one is paused "
            "until its usage reaches the database ('ready' in /api/v1/live/). Start one or "
            "restore the database (see README: Workers), then retry.",
            status=503,
            code="no_engine",
        )
    if verdict is Verdict.TENANT_LIMIT:
        message = (
            f"Tenant '{caller.tenant}' already has {caller.max_concurrent_requests} requests "
            "open, its limit; retry after one finishes."
        )
        return OpenAIError(
            message, status=429, code="too_many_requests", headers={"Retry-After": "1"}
        )
    message = (
        f"Tenant '{caller.tenant}' already has {position} requests waiting for the engine "
        f"pool, its queue's limit; retry in {retry_after_s} s."
    )
    return OpenAIError(
        message,
        status=429,
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )


def error_from_event(event: dict[str, Any]) -> OpenAIError:
    return OpenAIError(
        event["message"], status=int(event["status"]), param=event.get("param"), code=event["code"]
    )
