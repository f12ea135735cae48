"""The web server's options: one home for `parity web`, the embedded mode and the tests'
server, so that what the tests exercise is what production runs."""

from __future__ import annotations

from typing import Any

from wire.gate import KEEP_ALIVE_S

SERVER_OPTIONS: dict[str, Any] = {
    "lifespan": "on",  # the gateway closes its broker connection at the stop (config.asgi)
    "backlog": 4096,  # a burst of clients waits in the kernel, not refused
    "timeout_keep_alive": KEEP_ALIVE_S,  # past the longest Retry-After (wire/gate.py)
    "access_log": False,  # one log line per token stream is noise under load
}
