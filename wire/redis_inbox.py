"""A gateway's inbox on Redis: one stream per event loop that every worker publishes the
loop's requests' events to, read by one task in batches.

A stream per request would cost the gateway one blocking read per event per request;
here one read carries every event that arrived meanwhile, for all of the loop's requests,
and the task hands each to its request. Events of a request nobody expects any more (its
client left) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from wire.channels import Event, StreamUnreadable
from wire.redis_async import stopping

logger = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
READ_COUNT = 1000
# Reads failing this long mean the streams cannot be trusted to arrive: end them with an
# error (a 502 naming the request) rather than let each client wait out its timeout.
UNREADABLE_AFTER_S = 10.0


class Inbox:
    def __init__(self, client: aioredis.Redis, stream_prefix: str) -> None:
        self.name = f"inbox:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.key = stream_prefix + self.name
        self._client = client
        self._pending: dict[str, list[Event]] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._failing_since: float | None = None
        # Times reading failed (Redis restarted, or unreachable): events written just before
        # may be gone with it (a Redis that restarts empty), so quiet requests get checked.
        self.outages = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def expect(self, request_id: str) -> None:
        self._pending[request_id] = []
        self._arrived[request_id] = asyncio.Event()

    async def receive(self, request_id: str, timeout_s: float) -> list[Event]:
        """The request's events since the last call; raises StreamUnreadable once the inbox
        has been unreadable for UNREADABLE_AFTER_S and none are waiting."""
        arrived = self._arrived.get(request_id)
        if arrived is None:
            return []
        if not self._pending[request_id]:
            self._check_readable()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await arrived.wait()
        arrived.clear()
        events, self._pending[request_id] = self._pending[request_id], []
        return events

    def _check_readable(self) -> None:
        since = self._failing_since
        if since is not None and time.monotonic() - since >= UNREADABLE_AFTER_S:
            raise StreamUnreadable(
                f"the event stream {self.key} has been unreadable for "
                f"{time.monotonic() - since:.0f} s (Redis unreachable)"
            )

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)
        self._arrived.pop(request_id, None)

    async def _read(self) -> None:
        cursor = "0-0"  # the stream is new: everything in it is ours
        while True:
            if stopping():  # a cancel redis-py swallowed (its retry ran the read again)
                raise asyncio.CancelledError
            try:
                reply: Any = await self._client.xread(
                    {self.key: cursor}, block=READ_BLOCK_MS, count=READ_COUNT
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                if stopping():
                    raise asyncio.CancelledError from None
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    self.outages += 1
                logger.warning("reading the inbox %s failed; retrying", self.key, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            self._failing_since = None
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    self._deliver(fields["r"], fields["e"])

    def _deliver(self, request_id: str, payload: str) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.append(json.loads(payload))
            self._arrived[request_id].set()
