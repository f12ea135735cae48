"""The fair gate on Redis: the algorithm of `wire/gate.py` as atomic Lua scripts.

Every script first reaps what lapsed (silent workers, seats and tickets whose gateway
stopped refreshing them), then does its change, then seats waiting tickets while the
pool has room. Time is Redis's own clock, so gateways' and workers' clocks never matter.
A seated ticket is announced on its gateway's inbox list, in grant order, which one task
per event loop reads with a blocking pop and then drains: no polling, one connection
however many requests wait, and a burst of grants costs one read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from wire.gate import (
    LEASE_S,
    MAX_RETRY_AFTER_S,
    NO_WORKER_GRACE_S,
    REFRESH_S,
    WORKER_TTL_S,
    Entry,
    Gate,
    GateState,
    TenantGateState,
    Ticket,
    TicketLapsed,
    Verdict,
    split_held,
)
from wire.gate_scripts import ENTER, HEARTBEAT, LAPSED, LEAVE, REFRESH
from wire.patience import patiently
from wire.redis_async import POOL_OPTIONS, blocking_client, stopping, sync_retry

logger = logging.getLogger(__name__)
INBOX_TTL_S = 120
GRANTS_PER_READ = 1000
# How long a gate call waits out a Redis restart before the request gets a 503.
GATE_PATIENCE_S = 10.0


@dataclass(slots=True)
class _LoopSide:
    """Per event loop: an async client, the inbox it reads and the tickets it holds.

    The lease keeper and the inbox reader have connections of their own (`keeper`): on the
    request path's pool they would queue behind a flood's hundreds of calls, and a refresh
    that waits longer than a lease lets the tickets lapse while their requests still wait.
    """

    client: aioredis.Redis
    keeper: aioredis.Redis
    inbox: str
    scripts: dict[tuple[int, str], Any] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    held: dict[str, Ticket] = field(default_factory=dict)  # seated or queued, by id
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class RedisGate(Gate):
    def __init__(self, url: str, pool: str, *, max_connections: int = 128) -> None:
        self.url = url
        self.prefix = f"parity:gate:{pool}:"
        self._max_connections = max_connections
        # The workers' side waits as long as every other client does (POOL_OPTIONS): the
        # library's 5 s read timeout failed a heartbeat on a loaded two-core machine.
        self.redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=POOL_OPTIONS["socket_timeout"],
            retry=sync_retry(),
        )
        self._heartbeat = self.redis.register_script(HEARTBEAT)
        self._lapsed = self.redis.register_script(LAPSED)
        self._release = self.redis.register_script(LEAVE)
        self._sides: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSide] = (
            weakref.WeakKeyDictionary()
        )

    # -- the gateway's side ----------------------------------------------------------------
    async def enter(self, ticket: Ticket) -> Entry:
        side = self._side()
        future = asyncio.get_running_loop().create_future()
        side.waiters[ticket.request_id] = future
        args = [ticket.request_id, ticket.tenant, ticket.weight, ticket.cost]
        args += [ticket.tenant_limit, ticket.queue_limit, side.inbox, LEASE_S]
        args += [NO_WORKER_GRACE_S, MAX_RETRY_AFTER_S]
        try:
            reply = await self._run(side, ENTER, args)
        except BaseException:
            side.waiters.pop(ticket.request_id, None)
            raise
        entry = Entry(Verdict(reply[0]), int(reply[1]), int(reply[2]))
        if entry.verdict is not Verdict.QUEUED:
            side.waiters.pop(ticket.request_id, None)
        if entry.verdict in (Verdict.SEATED, Verdict.QUEUED):
            side.held[ticket.request_id] = ticket
        return entry

    async def wait_seat(self, request_id: str, timeout_s: float) -> bool:
        side = self._side()
        future = side.waiters.get(request_id)
        if future is None:
            return request_id in side.held
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            return False

    async def leave(self, request_id: str, cost: float | None = None) -> None:
        side = self._side()
        side.waiters.pop(request_id, None)
        side.held.pop(request_id, None)
        await self._run(side, LEAVE, [request_id, "" if cost is None else cost, "gateway"])

    async def refresh(self, seated: list[Ticket], queued: list[str]) -> set[str]:
        if not seated and not queued:
            return set()
        side = self._side()
        args: list[Any] = [LEASE_S, len(seated)]
        for ticket in seated:
            args += [ticket.request_id, ticket.tenant, ticket.cost]
        missing = await self._run(side, REFRESH, [*args, *queued], client=side.keeper)
        return set(missing)

    async def _run(
        self, side: _LoopSide, script: str, args: list[Any], *, client: Any = None
    ) -> Any:
        client = client or side.client
        runner = side.scripts.get((id(client), script))
        if runner is None:
            runner = side.scripts[(id(client), script)] = client.register_script(script)
        # Every script may run twice (a reply lost to a restart): they are idempotent.
        return await patiently(
            lambda: runner(args=[self.prefix, INBOX_TTL_S, *args]), GATE_PATIENCE_S
        )

    def _side(self) -> _LoopSide:
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is None:
            client = blocking_client(self.url, self._max_connections)
            keeper = blocking_client(self.url, 2)  # the inbox reader's BLPOP and the refresh
            inbox = f"parity:gate:inbox:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
            side = self._sides[loop] = _LoopSide(client, keeper, inbox)
            side.tasks.append(loop.create_task(self._read_inbox(side)))
            side.tasks.append(loop.create_task(self._refresh_leases(side)))
        return side

    async def _read_inbox(self, side: _LoopSide) -> None:
        while True:
            if stopping():  # a cancel redis-py swallowed (its retry ran the read again)
                raise asyncio.CancelledError
            try:
                reply = await side.keeper.blpop([side.inbox], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception:
                if stopping():
                    raise asyncio.CancelledError from None
                logger.warning("reading the gate's inbox failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if not reply:
                continue
            # Then every grant that is already there, in one call: one read per grant was
            # this loop's slowest hop under a flood (a read per loop turn, about 35 a
            # second, while its grants piled up by the hundred).
            granted: list[Any] = [reply[1]]
            try:
                more: Any = await side.keeper.lpop(side.inbox, GRANTS_PER_READ)
                granted += more or []
            except Exception:  # the next turn reads them
                logger.warning("reading the gate's inbox failed; retrying", exc_info=True)
            for rid in granted:
                future = side.waiters.pop(str(rid), None)
                if future is not None and not future.done():
                    future.set_result(True)

    async def _refresh_leases(self, side: _LoopSide) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            if stopping():
                raise asyncio.CancelledError
            try:
                lapsed = await self.refresh(*split_held(side.held.values(), side.waiters))
            except Exception:  # the next tick retries; a lease outlives three failures
                if stopping():
                    raise asyncio.CancelledError from None
                logger.warning("refreshing %d gate leases failed", len(side.held), exc_info=True)
                continue
            for rid in lapsed:
                self._drop_lapsed(side, rid)

    def _drop_lapsed(self, side: _LoopSide, request_id: str) -> None:
        """A waiting ticket's lease ran out before its renewal (this process stalled, or
        Redis lost it): the request must enter again."""
        if request_id not in side.held:
            return  # left while the refresh ran
        logger.warning("the gate lease of %s lapsed", request_id)
        side.held.pop(request_id, None)
        future = side.waiters.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(TicketLapsed(request_id))

    # -- the workers' side -------------------------------------------------------------------
    def heartbeat(self, worker: str, capacity: int, weights: dict[str, float]) -> None:
        args: list[str | int | float] = [self.prefix, INBOX_TTL_S, worker, capacity]
        self._heartbeat(args=[*args, WORKER_TTL_S, json.dumps(weights)])

    def release(self, request_id: str, cost: float) -> None:
        self._release(args=[self.prefix, INBOX_TTL_S, request_id, cost, "worker"])

    def lapsed(self, request_ids: list[str]) -> set[str]:
        if not request_ids:
            return set()
        return set(self._lapsed(args=[self.prefix, INBOX_TTL_S, *request_ids]))

    def retire(self, worker: str) -> None:
        self._heartbeat(args=[self.prefix, INBOX_TTL_S, worker, 0, WORKER_TTL_S, "{}"])

    def state(self) -> GateState:
        p = self.prefix
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(p + "workers")
        pipe.zcard(p + "seats")
        pipe.hgetall(p + "counters")
        pipe.hgetall(p + "tenant-seats")
        pipe.hgetall(p + "weights")
        workers, num_seated, counters, seats, weights = pipe.execute()
        tenants = {}
        for tenant in sorted(set(counters) | set(seats) | set(weights)):
            tenants[tenant] = TenantGateState(
                weight=float(weights.get(tenant, 1)),
                counter=float(counters.get(tenant, 0)),
                num_seated=int(seats.get(tenant, 0)),
                num_queued=int(self.redis.llen(p + "q:" + tenant)),
            )
        return GateState(
            capacity=sum(int(c) for c in workers.values()),
            num_seated=int(num_seated),
            workers={w: int(c) for w, c in workers.items()},
            tenants=tenants,
        )

    def close(self) -> None:
        self.redis.close()
