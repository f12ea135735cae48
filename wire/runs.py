"""Who runs a request now, and what the gateway decided about a restarted stream.

Fencing. The broker may deliver a request again while an earlier delivery still runs it
(a worker that lost its broker connection, a visibility timeout that ran out). Each
delivery claims the request's run under a lease (`RUN_LEASE_S`) before it computes
anything and renews it while it runs; a second delivery waits until the claim is released
or lapses (its worker died), so a request runs at most once at a time. A delivery that
finds its claim taken by another stops without a word: the other one answers and bills.

Restarts. A streamed request delivered again after its worker died may already have sent
tokens to its client, which cannot take them back: the gateway ends that stream, and only
the gateway knows how many tokens the client received. So the new delivery asks before it
computes: the gateway answers `GO_ON` (the client has seen nothing yet) or the number of
tokens it delivered, which is what the request is billed for.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from wire.patience import patient

RUN_LEASE_S = 15.0  # a run whose worker stopped renewing it can be taken over after this
GO_ON = 0  # the gateway's answer when its client has received no token yet
RESTART_TTL_S = 3600
PREFIX = "parity:"

# Renew each claim this holder still has; re-take one that lapsed unclaimed; report the
# ones another delivery holds now. KEYS: run keys; ARGV: lease (ms), then one holder per key.
RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  elseif not holder then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else
    table.insert(lost, key)
  end
end
return lost
"""

# KEYS: the run key; ARGV: the holder. Deletes the claim only if it is still this holder's.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Runs(ABC):
    """Run claims (fencing) and restart decisions: a part of `Channels`."""

    @abstractmethod
    def claim_run(self, request_id: str, holder: str) -> bool:
        """Claim the request's run for `holder` (one delivery); False while another holds it."""

    @abstractmethod
    def renew_runs(self, claims: dict[str, str]) -> set[str]:
        """Extend these claims (request id -> holder); returns the requests whose run
        another delivery holds now: their holders must stop."""

    @abstractmethod
    def release_run(self, request_id: str, holder: str) -> None: ...

    @abstractmethod
    async def adecide_restart(self, request_id: str, delivered_tokens: int) -> None:
        """The gateway's answer to a restarted stream: `GO_ON`, or the tokens its client
        received before the restart (the request stops and is billed for those)."""

    @abstractmethod
    def restart_decision(self, request_id: str) -> int | None:
        """The gateway's answer, or None while it has not answered."""

    @abstractmethod
    async def arun_alive(self, request_id: str) -> bool:
        """Whether some delivery holds the request's run now (the gateway's check on a
        request that has gone quiet)."""


class LocalRuns(Runs):
    """The same in this process's memory (embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._runs_clock = clock
        self._runs_lock = threading.Lock()
        self._claims: dict[str, tuple[str, float]] = {}  # request id -> (holder, expires)
        self._decisions: dict[str, int] = {}

    def claim_run(self, request_id: str, holder: str) -> bool:
        now = self._runs_clock()
        with self._runs_lock:
            current = self._claims.get(request_id)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            self._claims[request_id] = (holder, now + RUN_LEASE_S)
            return True

    def renew_runs(self, claims: dict[str, str]) -> set[str]:
        return {rid for rid, holder in claims.items() if not self.claim_run(rid, holder)}

    def release_run(self, request_id: str, holder: str) -> None:
        with self._runs_lock:
            current = self._claims.get(request_id)
            if current is not None and current[0] == holder:
                del self._claims[request_id]

    async def adecide_restart(self, request_id: str, delivered_tokens: int) -> None:
        with self._runs_lock:
            self._decisions[request_id] = delivered_tokens

    def restart_decision(self, request_id: str) -> int | None:
        with self._runs_lock:
            return self._decisions.get(request_id)

    async def arun_alive(self, request_id: str) -> bool:
        with self._runs_lock:
            claim = self._claims.get(request_id)
            return claim is not None and claim[1] > self._runs_clock()


class RedisRuns(Runs):
    """The same on Redis: one key per running request, holding its delivery's name."""

    redis: Any  # provided by `RedisChannels`

    def _async_client(self) -> Any:
        raise NotImplementedError  # provided by `RedisChannels`

    @patient
    def claim_run(self, request_id: str, holder: str) -> bool:
        key = _run_key(request_id)
        if self.redis.set(key, holder, nx=True, px=int(RUN_LEASE_S * 1000)):
            return True
        return bool(self.redis.get(key) == holder)

    def renew_runs(self, claims: dict[str, str]) -> set[str]:
        if not claims:
            return set()
        ids = list(claims)
        lease_ms = int(RUN_LEASE_S * 1000)
        lost = self.redis.eval(
            RENEW, len(ids), *map(_run_key, ids), lease_ms, *(claims[rid] for rid in ids)
        )
        return {_request_of(key) for key in lost}

    @patient
    def release_run(self, request_id: str, holder: str) -> None:
        self.redis.eval(RELEASE, 1, _run_key(request_id), holder)

    async def adecide_restart(self, request_id: str, delivered_tokens: int) -> None:
        client = self._async_client()
        await client.set(_restart_key(request_id), delivered_tokens, ex=RESTART_TTL_S)

    @patient
    def restart_decision(self, request_id: str) -> int | None:
        value = self.redis.get(_restart_key(request_id))
        return None if value is None else int(value)

    async def arun_alive(self, request_id: str) -> bool:
        return bool(await self._async_client().exists(_run_key(request_id)))


def _run_key(request_id: str) -> str:
    return PREFIX + "run:" + request_id


def _restart_key(request_id: str) -> str:
    return PREFIX + "restart:" + request_id


def _request_of(key: bytes | str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text.removeprefix(PREFIX + "run:")
