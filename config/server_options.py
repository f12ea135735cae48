"""The web server's options: one home for `parity web`, the embedded mode and the tests'
server, so that what the tests exercise is what production runs."""

from __future__ import annotations

from typing import Any

from wire.gate import MAX_RETRY_AFTER_S

# How long an idle client connection stays open: past the longest Retry-After, so a client
# told to wait keeps its connection (with uvicorn's default 5 s the server closed it during
# the wait, and the retry raced the close: connection resets under load).
KEEP_ALIVE_S = MAX_RETRY_AFTER_S + 15

SERVER_OPTIONS: dict[str, Any] = {
    "lifespan": "on",  # the gateway closes its broker connection at the stop (config.asgi)
    "backlog": 4096,  # a burst of clients waits in the kernel, not refused
    "timeout_keep_alive": KEEP_ALIVE_S,
    "access_log": False,  # one log line per token stream is noise under load
}
