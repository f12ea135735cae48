"""The fair gate on Redis: the algorithm of `wire/gate.py` as atomic Lua scripts.

Every script first reaps what lapsed (silent workers, seats and tickets whose gateway
stopped refreshing them), then does its change, then seats waiting tickets while the
pool has room. Time is Redis's own clock, so gateways' and workers' clocks never matter.
A seated ticket is announced on its gateway's inbox list, which one task per event loop
reads with a blocking pop: no polling, and one connection however many requests wait.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    Verdict,
)

logger = logging.getLogger(__name__)
INBOX_TTL_S = 120

# KEYS: none (every key derives from the pool's prefix, ARGV[1]).
_LIBRARY = """
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function num(x) return tonumber(x) or 0 end
local function fmt(x) return string.format('%.17g', x) end

local function capacity()
  local total = 0
  for _, c in ipairs(redis.call('HVALS', P .. 'workers')) do total = total + num(c) end
  return total
end

local function charge(tenant, cost)
  local weight = tonumber(redis.call('HGET', P .. 'weights', tenant)) or 1
  local counter = num(redis.call('HGET', P .. 'counters', tenant)) + cost / weight
  redis.call('HSET', P .. 'counters', tenant, fmt(counter))
  if redis.call('ZSCORE', P .. 'waiting', tenant) then
    redis.call('ZADD', P .. 'waiting', counter, tenant)
  end
end

local function flow_left(tenant)
  redis.call('ZREM', P .. 'waiting', tenant)
  redis.call('SET', P .. 'last-leaver', tenant)
end

local function head_seq(tenant)
  local head = redis.call('LINDEX', P .. 'q:' .. tenant, 0)
  return tonumber(cjson.decode(redis.call('HGET', P .. 'queued', head)).s)
end

-- Least counter first; among equal counters the head that queued first.
local function pick()
  local first = redis.call('ZRANGE', P .. 'waiting', 0, 0, 'WITHSCORES')
  if #first == 0 then return nil end
  local ties = redis.call('ZRANGEBYSCORE', P .. 'waiting', first[2], first[2])
  local best, best_seq = nil, nil
  for _, tenant in ipairs(ties) do
    local seq = head_seq(tenant)
    if best_seq == nil or seq < best_seq then best, best_seq = tenant, seq end
  end
  return best
end

local function unseat(rid)
  local raw = redis.call('HGET', P .. 'seat', rid)
  if not raw then return nil end
  local seat = cjson.decode(raw)
  redis.call('HDEL', P .. 'seat', rid)
  redis.call('ZREM', P .. 'seats', rid)
  redis.call('HINCRBY', P .. 'tenant-seats', seat.t, -1)
  return seat
end

local function unqueue(rid)
  local raw = redis.call('HGET', P .. 'queued', rid)
  if not raw then return false end
  local tenant = cjson.decode(raw).t
  local key = P .. 'q:' .. tenant
  redis.call('LREM', key, 1, rid)
  redis.call('HDEL', P .. 'queued', rid)
  redis.call('ZREM', P .. 'queued-lease', rid)
  if redis.call('LLEN', key) == 0 then flow_left(tenant) end
  return true
end

local function dispatch(t, skip)
  local seated = redis.call('ZCARD', P .. 'seats')
  local room = capacity() - seated
  while room > 0 do
    local tenant = pick()
    if tenant == nil then break end
    local rid = redis.call('LPOP', P .. 'q:' .. tenant)
    local ticket = cjson.decode(redis.call('HGET', P .. 'queued', rid))
    redis.call('HDEL', P .. 'queued', rid)
    local deadline = redis.call('ZSCORE', P .. 'queued-lease', rid)
    redis.call('ZREM', P .. 'queued-lease', rid)
    redis.call('HSET', P .. 'seat', rid, cjson.encode({t = tenant, c = ticket.c, g = t}))
    redis.call('ZADD', P .. 'seats', deadline, rid)
    redis.call('HINCRBY', P .. 'tenant-seats', tenant, 1)
    charge(tenant, tonumber(ticket.c))
    if redis.call('LLEN', P .. 'q:' .. tenant) == 0 then flow_left(tenant) end
    if rid ~= skip then
      redis.call('LPUSH', ticket.i, rid)
      redis.call('EXPIRE', ticket.i, tonumber(ARGV[2]))
    end
    room = room - 1
  end
end

local function reap(t)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. 'worker-expiry', '-inf', t)) do
    redis.call('HDEL', P .. 'workers', w)
    redis.call('ZREM', P .. 'worker-expiry', w)
  end
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'seats', '-inf', t, 'LIMIT', 0, 100)) do
    unseat(rid)
  end
  local lapsed = redis.call('ZRANGEBYSCORE', P .. 'queued-lease', '-inf', t, 'LIMIT', 0, 100)
  for _, rid in ipairs(lapsed) do unqueue(rid) end
end
"""

# ARGV: prefix, inbox ttl, rid, tenant, weight, cost, tenant_limit, queue_limit, inbox,
# lease_s, grace_s, max_retry_after_s
_ENTER = (
    _LIBRARY
    + """
local rid, tenant, weight, cost = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local tenant_limit, queue_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local inbox, lease_s, grace_s = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local t = now()
reap(t)
if capacity() == 0 and t - num(redis.call('GET', P .. 'last-worker-seen')) > grace_s then
  return {'no_workers', 0, 1}
end
redis.call('HSET', P .. 'weights', tenant, weight)
local key = P .. 'q:' .. tenant
local queued = redis.call('LLEN', key)
local seated = num(redis.call('HGET', P .. 'tenant-seats', tenant))
if seated + queued >= tenant_limit then return {'tenant_limit', 0, 1} end
if queued >= queue_limit then
  local hold = tonumber(redis.call('GET', P .. 'hold')) or 1
  local wait = math.ceil(queued * math.max(hold, 0.05) / math.max(seated, 1))
  return {'queue_full', queued, math.min(math.max(wait, 1), tonumber(ARGV[12]))}
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', P .. 'queued', rid, cjson.encode({t = tenant, c = cost, s = seq, i = inbox}))
redis.call('ZADD', P .. 'queued-lease', t + lease_s, rid)
redis.call('RPUSH', key, rid)
if queued == 0 then
  -- VTC's lift: a tenant that starts waiting never counts less than those waiting.
  local floor = redis.call('ZRANGE', P .. 'waiting', 0, 0, 'WITHSCORES')[2]
  if floor == nil then
    local leaver = redis.call('GET', P .. 'last-leaver')
    if leaver then floor = redis.call('HGET', P .. 'counters', leaver) end
  end
  local counter = num(redis.call('HGET', P .. 'counters', tenant))
  if floor ~= nil and tonumber(floor) > counter then
    counter = tonumber(floor)
    redis.call('HSET', P .. 'counters', tenant, fmt(counter))
  end
  redis.call('ZADD', P .. 'waiting', counter, tenant)
end
dispatch(t, rid)
if redis.call('HEXISTS', P .. 'seat', rid) == 1 then return {'seated', 0, 1} end
return {'queued', redis.call('LLEN', key), 1}
"""
)

# ARGV: prefix, inbox ttl, rid, cost ('' = keep the reservation)
_LEAVE = (
    _LIBRARY
    + """
local rid, cost = ARGV[3], tonumber(ARGV[4])
local t = now()
local seat = unseat(rid)
if seat then
  if cost ~= nil then charge(seat.t, cost - tonumber(seat.c)) end
  local hold = tonumber(redis.call('GET', P .. 'hold')) or 1
  redis.call('SET', P .. 'hold', fmt(hold + 0.1 * (t - tonumber(seat.g) - hold)))
else
  unqueue(rid)
end
reap(t)
dispatch(t, nil)
return 1
"""
)

# ARGV: prefix, inbox ttl, lease_s, rid...
_REFRESH = (
    _LIBRARY
    + """
local deadline = now() + tonumber(ARGV[3])
for i = 4, #ARGV do
  redis.call('ZADD', P .. 'seats', 'XX', deadline, ARGV[i])
  redis.call('ZADD', P .. 'queued-lease', 'XX', deadline, ARGV[i])
end
return 1
"""
)

# ARGV: prefix, inbox ttl, worker, capacity (0 = retire), ttl_s, weights (JSON object)
_HEARTBEAT = (
    _LIBRARY
    + """
local worker, cap = ARGV[3], tonumber(ARGV[4])
local t = now()
if cap > 0 then
  redis.call('HSET', P .. 'workers', worker, cap)
  redis.call('ZADD', P .. 'worker-expiry', t + tonumber(ARGV[5]), worker)
  redis.call('SET', P .. 'last-worker-seen', fmt(t))
  for tenant, weight in pairs(cjson.decode(ARGV[6])) do
    redis.call('HSET', P .. 'weights', tenant, weight)
  end
else
  redis.call('HDEL', P .. 'workers', worker)
  redis.call('ZREM', P .. 'worker-expiry', worker)
end
reap(t)
dispatch(t, nil)
return 1
"""
)


@dataclass(slots=True)
class _LoopSide:
    """Per event loop: an async client, the inbox it reads and the tickets it holds."""

    client: aioredis.Redis
    inbox: str
    scripts: dict[str, Any] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class RedisGate(Gate):
    def __init__(self, url: str, pool: str, *, max_connections: int = 128) -> None:
        self.url = url
        self.prefix = f"parity:gate:{pool}:"
        self._max_connections = max_connections
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
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
            reply = await self._run(side, _ENTER, args)
        except BaseException:
            side.waiters.pop(ticket.request_id, None)
            raise
        entry = Entry(Verdict(reply[0]), int(reply[1]), int(reply[2]))
        if entry.verdict is not Verdict.QUEUED:
            side.waiters.pop(ticket.request_id, None)
        if entry.verdict in (Verdict.SEATED, Verdict.QUEUED):
            side.held.add(ticket.request_id)
        return entry

    async def wait_seat(self, request_id: str, timeout_s: float) -> bool:
        side = self._side()
        future = side.waiters.get(request_id)
        if future is None:
            return request_id in side.held
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return False

    async def leave(self, request_id: str, cost: float | None = None) -> None:
        side = self._side()
        side.waiters.pop(request_id, None)
        side.held.discard(request_id)
        await self._run(side, _LEAVE, [request_id, "" if cost is None else cost])

    async def refresh(self, request_ids: list[str]) -> None:
        if request_ids:
            await self._run(self._side(), _REFRESH, [LEASE_S, *request_ids])

    async def _run(self, side: _LoopSide, script: str, args: list[Any]) -> Any:
        runner = side.scripts.get(script)
        if runner is None:
            runner = side.scripts[script] = side.client.register_script(script)
        return await runner(args=[self.prefix, INBOX_TTL_S, *args])

    def _side(self) -> _LoopSide:
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is None:
            # A blocking pool: a burst of arrivals waits for a connection, never fails.
            # redis-py gives up on a reply after 5 s by default; a loaded machine can lag
            # that far, and a gate call must then wait, not fail.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._max_connections,
                timeout=30,
                socket_timeout=30,
                decode_responses=True,
            )
            client = aioredis.Redis(connection_pool=pool)
            inbox = f"parity:gate:inbox:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
            side = self._sides[loop] = _LoopSide(client, inbox)
            side.tasks.append(loop.create_task(self._read_inbox(side)))
            side.tasks.append(loop.create_task(self._refresh_leases(side)))
        return side

    async def _read_inbox(self, side: _LoopSide) -> None:
        while True:
            try:
                reply = await side.client.blpop([side.inbox], timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("reading the gate's inbox failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if reply:
                future = side.waiters.pop(str(reply[1]), None)
                if future is not None and not future.done():
                    future.set_result(True)

    async def _refresh_leases(self, side: _LoopSide) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            with contextlib.suppress(Exception):
                await self.refresh(sorted(side.held))

    # -- the workers' side -------------------------------------------------------------------
    def heartbeat(self, worker: str, capacity: int, weights: dict[str, float]) -> None:
        args: list[str | int | float] = [self.prefix, INBOX_TTL_S, worker, capacity]
        self._heartbeat(args=[*args, WORKER_TTL_S, json.dumps(weights)])

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
