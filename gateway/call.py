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

from gateway.auth import Principal
from gateway.broker import TaskPublisher
from gateway.errors import OpenAIError
from gateway.parsing import prompt_chars
from wire.channels import Channels, Event
from wire.gate import Gate, Ticket, Verdict, reserve_cost, served_cost
from wire.protocol import GenerationRequest, coalesce_deltas

logger = logging.getLogger(__name__)
publisher = TaskPublisher(current_app)

# How long a read waits before the caller gets a chance to send an SSE keep-alive.
POLL_S = 1.0
UNLIMITED = 2**31  # a tenant with no concurrency limit of its own
CHARS_PER_TOKEN = 4  # the gate's guess at prompt tokens; the release charges the truth


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

    @property
    def request_id(self) -> str:
        return self.request.request_id

    async def admit(self) -> None:
        """Take a seat: at once within capacity, or after waiting in the tenant's queue."""
        entry = await self.gate.enter(self._ticket())
        if entry.verdict is Verdict.QUEUED:
            self._hold()
            if not await self.gate.wait_seat(self.request_id, settings.PARITY_REQUEST_TIMEOUT_S):
                raise OpenAIError(
                    "The engine pool had no seat for this request in time; retry later.",
                    status=503,
                    code="queue_timeout",
                    headers={"Retry-After": "5"},
                )
            return
        if entry.verdict is Verdict.SEATED:
            self._hold()
            return
        raise _refusal(entry.verdict, entry.retry_after_s, entry.position, self.caller)

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
        self.request = replace(self.request, reply_to=self.channels.expect(self.request_id))
        self._expecting = True
        self._submitted = True  # from here the pool may hold it: an early end must abort it
        await publisher.publish(self.request, settings.PARITY_ENGINE_QUEUE)

    async def events(self) -> AsyncIterator[Event | None]:
        """The request's events in order; None after each quiet second (for keep-alives).

        Ends after `done` or `error`; raises 504 after PARITY_REQUEST_TIMEOUT_S of silence.
        """
        quiet_since = time.monotonic()
        while True:
            events = await self.channels.receive(self.request_id, POLL_S)
            if not events:
                if time.monotonic() - quiet_since > settings.PARITY_REQUEST_TIMEOUT_S:
                    await self.abort()
                    raise OpenAIError(
                        "The engine pool did not answer in time.", status=504, code="timeout"
                    )
                yield None
                continue
            quiet_since = time.monotonic()
            for event in coalesce_deltas(events):
                self._note(event)
                yield event
                if event["type"] in ("done", "error"):
                    self._finished = True
                    return

    def _note(self, event: Event) -> None:
        if event["type"] == "delta":
            self._num_output_seen += int(event.get("num_tokens", 0))
        elif event["type"] == "start":
            self._num_output_seen = 0  # a redelivery starts over
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
            self._seated = False
            if self._safety_net is not None:
                self._safety_net.detach()
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
            "No engine worker is running; start one (see README: Workers) and retry.",
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
