"""Process-wide wire pieces, built once from Django settings: the channels and the gate.

Redis when REDIS_URL is set; otherwise in-process (the embedded mode, which runs the
gateway and the worker in one process).
"""

from __future__ import annotations

import threading

from django.conf import settings

from wire.channels import Channels, LocalChannels
from wire.gate import Gate
from wire.local_gate import LocalGate

_lock = threading.Lock()
_channels: Channels | None = None
_gates: dict[str, Gate] = {}


def channels() -> Channels:
    global _channels
    with _lock:
        if _channels is None:
            if settings.REDIS_URL:
                from wire.redis_channels import RedisChannels

                _channels = RedisChannels(settings.REDIS_URL)
            else:
                _channels = LocalChannels()
        return _channels


def gate(pool: str | None = None) -> Gate:
    """The fair gate of an engine pool (by default the pool of PARITY_ENGINE_QUEUE)."""
    pool = pool or settings.PARITY_ENGINE_QUEUE
    with _lock:
        if pool not in _gates:
            if settings.REDIS_URL:
                from wire.redis_gate import RedisGate

                _gates[pool] = RedisGate(settings.REDIS_URL, pool)
            else:
                _gates[pool] = LocalGate()
        return _gates[pool]


def reset() -> None:
    """Forget the process's channels and gates (tests that swap stores)."""
    global _channels
    with _lock:
        _channels = None
        _gates.clear()
