"""Handing seated requests to the engine pool's queue: one thread, one broker connection.

Celery's `send_task` costs about 1.2 ms of CPU per message here, most of it producer
pooling and bookkeeping around a 0.2 ms publish, and it blocks; run from a thread pool it
also fights the event loop for the GIL. So the gateway builds each message with Celery's
own `as_task_v2` (the worker reads it as any Celery task) and one long-lived thread
publishes them in order on one connection; coroutines await their message's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from celery import Celery

from gateway.errors import OpenAIError
from wire.protocol import GenerationRequest

logger = logging.getLogger(__name__)
TASK_NAME = "workers.generate"
ATTEMPTS = 3


@dataclass(slots=True)
class _Outgoing:
    request: GenerationRequest
    queue_name: str
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


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
        rid = item.request.request_id
        message = self.app.amqp.as_task_v2(rid, TASK_NAME, args=[item.request.to_dict()])
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
        done.set_exception(
            OpenAIError(
                "The engine pool's broker is unreachable; retry shortly.",
                status=503,
                code="broker_unavailable",
            )
        )
