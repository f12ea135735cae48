"""Handing seated requests to the engine pool's queue.

The gateway builds each message with Celery's own `as_task_v2`, so the worker reads it as
any Celery task, and publishes it without Celery's `send_task` (about 1.2 ms of CPU per
message here, most of it producer pooling around a 0.2 ms publish, and blocking).

- On RabbitMQ (`AmqpPublisher`, gateway/amqp.py) it publishes from the event loop itself:
  the write is non-blocking and the broker's confirm is awaited like any other I/O. A
  thread in between was the gateway's slowest hop under a flood: a publish that takes 1 ms
  alone took 174 ms at the median and 1.8 s at p90, the same for every tenant (a FIFO in
  front of the fair gate's decision), while another process published to the same broker
  at 200+ per second.
- On other transports (the embedded mode's in-memory broker) one long-lived thread
  publishes through kombu (`TaskPublisher`); coroutines await their message's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery

from gateway.amqp import ATTEMPTS, AmqpPublisher, task_message, unreachable
from wire.protocol import GenerationRequest

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Outgoing:
    request: GenerationRequest
    queue_name: str
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class Publisher(Protocol):
    async def publish(self, request: GenerationRequest, queue_name: str) -> None:
        """Returns once the broker has the message; 503 if it cannot be reached."""

    async def aclose(self) -> None:
        """Close what the running event loop holds (its server is stopping)."""


def publisher_for(app: Celery) -> Publisher:
    """The publisher for the app's broker (see the module's docstring)."""
    scheme = str(app.conf.broker_url or "").split("://", 1)[0]
    return AmqpPublisher(app) if scheme in ("amqp", "pyamqp", "amqps") else TaskPublisher(app)


class TaskPublisher:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self._outbox: queue.SimpleQueue[_Outgoing] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def publish(self, request: GenerationRequest, queue_name: str) -> None:
        """Returns once the broker has the message; 503 if it cannot be reached."""
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._outbox.put(_Outgoing(request, queue_name, loop, done))
        await done

    async def aclose(self) -> None:
        return None  # the thread and its connection serve every loop until the process ends

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="broker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        connection: Any = None
        producer: Any = None
        while True:
            item = self._outbox.get()
            error: BaseException | None = None
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    if producer is None:
                        connection = self.app.connection_for_write()
                        producer = connection.Producer(serializer="json")
                    self._send(producer, item)
                    error = None
                    break
                except Exception as exc:  # a dropped connection: a fresh one usually works
                    logger.warning(
                        "publishing %s failed (try %d)", item.request.request_id, attempt
                    )
                    error = exc
                    _release(connection)
                    connection = producer = None
            item.loop.call_soon_threadsafe(_settle, item.done, error)

    def _send(self, producer: Any, item: _Outgoing) -> None:
        message = task_message(self.app, item.request)
        target = self.app.amqp.queues[item.queue_name]
        producer.publish(
            message.body,
            exchange=target.exchange,
            routing_key=target.routing_key,
            headers=message.headers,
            declare=[target],
            delivery_mode=2,  # persistent: a broker restart keeps the seated requests
            retry=False,  # retried here, on a fresh connection
            **message.properties,
        )


def _release(connection: Any) -> None:
    if connection is not None:
        try:
            connection.release()
        except Exception:
            logger.debug("releasing a broken broker connection failed", exc_info=True)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(unreachable())
