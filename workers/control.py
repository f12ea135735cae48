"""The control line between a worker and the fair scheduler in its engine process.

vLLM runs its scheduler in an engine-core process that it spawns itself, so the
worker cannot call the scheduler. This module is the narrow line between them:
a Unix socket (multiprocessing.connection, authenticated) found through two
environment variables that the child inherits.

- scheduler -> worker: `usage` (one `SchedulerUsage` per ended request) and
  `state` (the live per-tenant snapshot, about once a second);
- worker -> scheduler: `weights` (tenant -> weight, the whole table each time).

No Django and no vLLM here: both sides import it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

logger = logging.getLogger(__name__)

ADDRESS_ENV = "PARITY_CONTROL_ADDRESS"
AUTHKEY_ENV = "PARITY_CONTROL_AUTHKEY"

Message = tuple[str, dict[str, Any]]
Handler = Callable[[str, dict[str, Any]], None]


class ControlServer:
    """The worker's end: accepts the engine's connection, reads its reports.

    `on_message` runs on a reader thread, one message at a time, in order.
    `on_connect` lets the worker send the current weights to a scheduler that
    just (re)connected, so it never runs on stale weights.
    """

    def __init__(
        self,
        address: str,
        on_message: Handler,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.authkey = secrets.token_bytes(32)
        self._on_message = on_message
        self._on_connect = on_connect
        self._listener = Listener(address, family="AF_UNIX", authkey=self.authkey)
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, name="control-accept", daemon=True).start()

    def export_env(self) -> None:
        """Make the address known to child processes spawned from now on."""
        os.environ[ADDRESS_ENV] = self.address
        os.environ[AUTHKEY_ENV] = self.authkey.hex()

    def send(self, kind: str, body: dict[str, Any]) -> None:
        """Send to every connected scheduler; a dead connection is dropped."""
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.send((kind, body))
                except OSError:
                    self._connections.remove(conn)

    @property
    def num_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if os.path.exists(self.address):
            os.unlink(self.address)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._connections.append(conn)
            if self._on_connect is not None:
                self._on_connect()
            threading.Thread(
                target=self._read_loop, args=(conn,), name="control-read", daemon=True
            ).start()

    def _read_loop(self, conn: Connection) -> None:
        while not self._closed.is_set():
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                break
            except TypeError:
                # close() from another thread mid-read: the handle became None under recv.
                if self._closed.is_set():
                    break
                raise
            try:
                self._on_message(kind, body)
            except Exception:  # one bad report must not cut the line
                logger.exception("control message %r failed", kind)
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)


class ControlClient:
    """The scheduler's end: sends reports, picks up weight tables without blocking."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.broken = False

    @classmethod
    def from_env(cls) -> ControlClient | None:
        """Connect if this process was started by a Parity worker; None otherwise."""
        address = os.environ.get(ADDRESS_ENV)
        authkey = os.environ.get(AUTHKEY_ENV)
        if not address or not authkey:
            return None
        return cls(Client(address, family="AF_UNIX", authkey=bytes.fromhex(authkey)))

    def send(self, kind: str, body: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            with self._lock:
                self._conn.send((kind, body))
        except OSError:
            # The worker is gone; the engine is about to be shut down with it.
            self.broken = True
            logger.warning("control line to the worker is broken; reports stop")

    def receive(self) -> list[Message]:
        """Every message waiting now (never blocks)."""
        messages: list[Message] = []
        if self.broken:
            return messages
        try:
            while self._conn.poll(0):
                messages.append(self._conn.recv())
        except (EOFError, OSError):
            self.broken = True
        return messages

    def close(self) -> None:
        self._conn.close()
