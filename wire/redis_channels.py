"""`Channels` on Redis: streams for tokens, pub/sub for aborts, live state.

Events are queued in memory and written by one publisher thread in pipelines: under load
one round trip carries many requests' tokens, at idle an event leaves at once. The
engine's event loop therefore never waits on the network. Each request's deltas are paced
(`wire/pacing.py`) so that a fast engine cannot flood its gateways.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import redis
import redis.asyncio as aioredis

from wire.channels import (
    STATE_HISTORY,
    STATE_TTL_S,
    Channels,
    Delivery,
    Event,
)
from wire.pacing import DeltaPacer, Outgoing
from wire.patience import patient
from wire.protocol import EventType
from wire.redis_async import POOL_OPTIONS, LoopClients, blocking_client, sync_retry
from wire.redis_inbox import Inbox
from wire.runs import RedisRuns

logger = logging.getLogger(__name__)

PREFIX = "parity:"
STREAM_TTL_S = 3600
# How long the publisher keeps retrying a batch Redis refuses: the gateway's request
# timeout (a client waits no longer), with backoff from 0.1 s to 2 s between tries.
PUBLISH_PATIENCE_S = 600.0
PUBLISH_BACKOFF_S = 0.1
PUBLISH_BACKOFF_MAX_S = 2.0
INBOX_MAXLEN = 100_000
MARKER_TTL_S = 7 * 24 * 3600
ABORT_CHANNEL = PREFIX + "aborts"


class RedisChannels(RedisRuns, Channels):
    def __init__(self, url: str, *, max_connections: int = 4096) -> None:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, retry=sync_retry(), **POOL_OPTIONS
        )
        self.redis = redis.Redis(connection_pool=pool)
        self._async_clients = LoopClients(url, max_connections)
        self._inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = (
            weakref.WeakKeyDictionary()
        )
        self._outbox: queue.SimpleQueue[tuple[str, str, Event] | None] = queue.SimpleQueue()
        self._flushed = threading.Condition()
        self._num_queued = 0
        self._num_written = 0
        self._num_taken = 0  # events the publisher took from the outbox
        self._finishing: dict[str, Future[None]] = {}  # request id -> its `done` written
        self.num_publish_failures = 0
        self._publisher = threading.Thread(target=self._publish_loop, daemon=True)
        self._publisher.start()
        self._pubsub_thread: Any = None

    # -- event streams --------------------------------------------------------------
    def publish(self, request_id: str, event: Event, reply_to: str = "") -> None:
        with self._flushed:
            self._num_queued += 1
        self._outbox.put((request_id, reply_to or request_id, event))

    def finish(self, request_id: str, event: Event, reply_to: str = "") -> Future[None]:
        # The publisher writes the mark with the event, in the batch's transaction.
        finished: Future[None] = Future()
        with self._flushed:
            self._finishing[request_id] = finished
        self.publish(request_id, event, reply_to)
        return finished

    def flush(self, timeout_s: float = 10.0) -> None:
        with self._flushed:
            target = self._num_queued
            self._flushed.wait_for(lambda: self._num_written >= target, timeout_s)

    def _publish_loop(self) -> None:
        pacer = DeltaPacer()
        while True:
            try:
                first = self._outbox.get(timeout=pacer.wait_s())
            except queue.Empty:  # held deltas are due
                self._write_batch(pacer.due(), pacer)
                continue
            if first is None:
                self._write_batch(pacer.release_all(), pacer)
                return
            batch = [first]
            while len(batch) < 1000:
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._outbox.put(None)
                    break
                batch.append(item)
            self._num_taken += len(batch)
            self._write_batch(pacer.admit(batch), pacer)

    def _write_batch(self, batch: list[Outgoing], pacer: DeltaPacer) -> None:
        """Write the batch, retrying for as long as a gateway could still be waiting for it:
        a lost `done` would leave its client waiting for the request timeout."""
        if not batch:
            return
        finished = [rid for rid, _, event in batch if event["type"] == EventType.DONE.value]
        deadline = time.monotonic() + PUBLISH_PATIENCE_S
        attempt = 0
        error: Exception | None = None
        while True:
            try:
                # A batch that finishes requests is one transaction: a `done` event and its
                # done mark are stored together or not at all (see `Channels.finish`).
                pipe = self.redis.pipeline(transaction=bool(finished))
                for request_id, address, event in batch:
                    if event["type"] == EventType.DONE.value:
                        pipe.set(_done_key(request_id), 1, ex=MARKER_TTL_S)
                    # An inbox lives as long as its gateway; trimmed far behind its reader.
                    fields: dict[Any, Any] = {"r": request_id, "e": json.dumps(event)}
                    pipe.xadd(_stream(address), fields, maxlen=INBOX_MAXLEN, approximate=True)
                for address in {address for _, address, _ in batch}:
                    pipe.expire(_stream(address), STREAM_TTL_S)
                pipe.execute()
                break
            except redis.RedisError as exc:
                attempt += 1
                self.num_publish_failures += 1
                if time.monotonic() >= deadline:
                    lost = sorted({request_id for request_id, _, _ in batch})
                    logger.error("gave up publishing events of %s after %d tries", lost, attempt)
                    error = exc
                    break
                logger.warning("publishing %d events failed (try %d)", len(batch), attempt)
                time.sleep(min(PUBLISH_BACKOFF_MAX_S, PUBLISH_BACKOFF_S * 2 ** (attempt - 1)))
        with self._flushed:
            # Held deltas are not written yet; merged ones are, all of them.
            self._num_written = self._num_taken - pacer.num_held
            self._flushed.notify_all()
            futures = [self._finishing.pop(rid, None) for rid in finished]
        for future in futures:
            if future is None:
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def expect(self, request_id: str) -> str:
        inbox = self._inbox()
        inbox.expect(request_id)
        return inbox.name

    async def receive(self, request_id: str, timeout_s: float) -> list[Event]:
        return await self._inbox().receive(request_id, timeout_s)

    def forget(self, request_id: str) -> None:
        self._inbox().forget(request_id)

    def event_outages(self) -> int:
        return self._inbox().outages

    def _inbox(self) -> Inbox:
        loop = asyncio.get_running_loop()
        inbox = self._inboxes.get(loop)
        if inbox is None:
            # Its own client, with no retries: a restart that redis-py's retry would hide
            # must count as an outage (events written just before it are gone).
            client = blocking_client(self._async_clients.url, 2, retries=False)
            inbox = self._inboxes[loop] = Inbox(client, PREFIX + "events:")
        return inbox

    def _async_client(self) -> aioredis.Redis:
        return self._async_clients.get()

    # -- aborts -------------------------------------------------------------------------
    def request_abort(self, request_id: str) -> None:
        self.redis.set(PREFIX + "abort:" + request_id, 1, ex=STREAM_TTL_S)
        self.redis.publish(ABORT_CHANNEL, request_id)

    async def arequest_abort(self, request_id: str) -> None:
        pipe = self._async_client().pipeline(transaction=False)
        pipe.set(PREFIX + "abort:" + request_id, 1, ex=STREAM_TTL_S)
        pipe.publish(ABORT_CHANNEL, request_id)
        await pipe.execute()

    @patient
    def abort_requested(self, request_id: str) -> bool:
        return bool(self.redis.exists(PREFIX + "abort:" + request_id))

    def listen_aborts(self, callback: Callable[[str], None]) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{ABORT_CHANNEL: lambda message: callback(message["data"])})
        self._pubsub_thread = pubsub.run_in_thread(
            sleep_time=0.5, daemon=True, exception_handler=_keep_listening
        )

    def aborts_requested(self, request_ids: list[str]) -> set[str]:
        if not request_ids:
            return set()
        flags = self.redis.mget([PREFIX + "abort:" + rid for rid in request_ids])
        return {rid for rid, flag in zip(request_ids, flags, strict=True) if flag}

    # -- once-only markers ---------------------------------------------------------------
    @patient
    def next_attempt(self, request_id: str) -> int:
        key = PREFIX + "attempt:" + request_id
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, MARKER_TTL_S)
        return int(pipe.execute()[0])

    @patient
    def begin(self, request_id: str) -> Delivery:
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(PREFIX + "attempt:" + request_id)
        pipe.expire(PREFIX + "attempt:" + request_id, MARKER_TTL_S)
        pipe.exists(_done_key(request_id))
        pipe.exists(PREFIX + "abort:" + request_id)
        attempt, _, done, aborted = pipe.execute()
        return Delivery(int(attempt), bool(done), bool(aborted))

    @patient
    def is_done(self, request_id: str) -> bool:
        return bool(self.redis.exists(_done_key(request_id)))

    # -- live state --------------------------------------------------------------------------
    def publish_state(self, worker: str, state: dict[str, Any]) -> None:
        payload = json.dumps(state)
        history = PREFIX + "state-history:" + worker
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(PREFIX + "state:" + worker, payload, ex=int(STATE_TTL_S))
        pipe.xadd(history, {"s": payload}, maxlen=STATE_HISTORY, approximate=True)
        pipe.expire(history, STREAM_TTL_S)
        pipe.execute()

    def state_history(self, worker: str, limit: int = STATE_HISTORY) -> list[dict[str, Any]]:
        entries: Any = self.redis.xrevrange(PREFIX + "state-history:" + worker, count=limit)
        return [json.loads(fields["s"]) for _, fields in reversed(entries)]

    def states(self) -> dict[str, dict[str, Any]]:
        keys = list(self.redis.scan_iter(PREFIX + "state:*", count=100))
        values = self.redis.mget(keys) if keys else []
        prefix_len = len(PREFIX + "state:")
        return {k[prefix_len:]: json.loads(v) for k, v in zip(keys, values, strict=True) if v}

    def close(self) -> None:
        self.flush()
        self._outbox.put(None)
        if self._pubsub_thread is not None:
            self._pubsub_thread.stop()


def _keep_listening(error: BaseException, pubsub: Any, thread: Any) -> None:
    # The default handler ends the listener thread: one Redis hiccup would then stop every
    # later abort from reaching the engine. Log and go on; PubSub resubscribes on reconnect.
    logger.warning("abort listener: %s; listening on", error)
    time.sleep(0.5)


def _stream(request_id: str) -> str:
    return PREFIX + "events:" + request_id


def _done_key(request_id: str) -> str:
    return PREFIX + "done:" + request_id
