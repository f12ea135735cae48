"""Publishing seated requests to RabbitMQ from the gateway's event loop (aiormq).

Each message is built with Celery's own `as_task_v2`, so the worker reads it as any Celery
task. The write is non-blocking and the broker's confirm is awaited like any other I/O:
`publish` returns once RabbitMQ has the message.

A burst must leave in one turn of the loop. A wave of finished requests frees a hundred
seats at once, and under a flood every turn of the gateway's loop is long (thousands of
open connections). aio-pika's `Exchange.publish` holds the channel's lock until the
connection's writer has drained the frames, behind a write queue of 10 frames: one
message per loop turn or two. Measured with the loop kept busy 6 ms a turn, a burst of
128 took 2.4 s to be confirmed; written in one turn, 74 ms. Under the flood, seat to
broker took p50 0.5 s, p90 1.5-2 s, while the engine idled. So the channel is used
directly (aiormq, the protocol library under aio-pika): frames are queued without waiting
for the drain (`wait=False`) on a connection whose write queue holds a whole burst. What
that queue and the socket buffer hold is bounded by the seats in flight, each a few KiB.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, cast
from urllib.parse import quote

import aiormq
import aiormq.abc
from aiormq import spec
from celery import Celery
from kombu import serialization

from gateway.errors import OpenAIError
from wire.protocol import GenerationRequest

logger = logging.getLogger(__name__)
TASK_NAME = "workers.generate"
ATTEMPTS = 3
PERSISTENT = 2  # AMQP delivery mode: a broker restart keeps the seated requests
# A lost connection raises one of these (timeouts are OSErrors); a closed channel raises a
# RuntimeError subclass.
BROKEN = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError)


class _BurstConnection(aiormq.Connection):
    FRAME_BUFFER_SIZE = 4096  # aiormq's 10 let a burst through one message per loop turn


def unreachable() -> OpenAIError:
    return OpenAIError(
        "The engine pool's broker is unreachable; retry shortly.",
        status=503,
        code="broker_unavailable",
    )


def task_message(app: Celery, request: GenerationRequest) -> Any:
    """The request as a Celery task message (Celery's own `as_task_v2`). The args' repr,
    which Celery's logs and monitors show, is the request id: not the prompt (a tenant's
    data), and not Celery's `saferepr` of it, a tenth of the gateway's CPU under a flood."""
    return app.amqp.as_task_v2(
        request.request_id,
        TASK_NAME,
        args=[request.to_dict()],
        argsrepr=f"[{request.request_id!r}]",
        kwargsrepr="{}",
    )


class AmqpPublisher:
    """Publishes on one AMQP connection per event loop (a connection belongs to the loop
    that opened it), with publisher confirms. A dropped connection is replaced on the
    next try."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Link] = (
            weakref.WeakKeyDictionary()
        )

    async def publish(self, request: GenerationRequest, queue_name: str) -> None:
        body, properties = self._message(request)
        target = self.app.amqp.queues[queue_name]
        link = self._link()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                channel = await link.channel_for(target)
            except BROKEN:
                logger.warning("opening the broker link failed (try %d)", attempt)
                continue
            try:
                await channel.basic_publish(
                    body,
                    exchange=target.exchange.name,
                    routing_key=target.routing_key,
                    properties=properties,
                    mandatory=True,  # a message no queue takes fails instead of vanishing
                    wait=False,  # see the module's docstring; the confirm is still awaited
                )
                return
            except BROKEN:
                logger.warning("publishing %s failed (try %d)", request.request_id, attempt)
                await link.drop(channel)
        raise unreachable()

    async def aclose(self) -> None:
        link = self._links.pop(asyncio.get_running_loop(), None)
        if link is not None:
            await link.drop(None)

    def _message(self, request: GenerationRequest) -> tuple[bytes, spec.Basic.Properties]:
        task = task_message(self.app, request)
        content_type, encoding, body = serialization.dumps(task.body, serializer="json")
        properties = spec.Basic.Properties(
            content_type=content_type,
            content_encoding=encoding,
            headers=task.headers,
            correlation_id=task.properties["correlation_id"],
            delivery_mode=PERSISTENT,
        )
        return body.encode(encoding) if isinstance(body, str) else body, properties

    def _link(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None:
            link = self._links[loop] = _Link(self.app)
        return link


class _Link:
    """One event loop's connection and channel, opened on first use, and the queues
    declared on it (as kombu declares them, so either side may declare first)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._opening = asyncio.Lock()
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.Channel | None = None
        self._declared: set[str] = set()

    async def channel_for(self, target: Any) -> aiormq.Channel:
        """The current channel, with the target's exchange and queue declared on it."""
        channel = self._channel
        if channel is not None and not channel.is_closed and target.name in self._declared:
            return channel
        async with self._opening:  # one connection however many requests ask at once
            try:
                channel = await self._open()
                if target.name not in self._declared:
                    await _declare(channel, target)
                    self._declared.add(target.name)
            except BROKEN:
                await self.drop(None)  # under the lock: nobody else opened a new one yet
                raise
            return channel

    async def _open(self) -> aiormq.Channel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self.drop(None)  # a channel the broker closed leaves its connection open
        connection = _BurstConnection(self._url())
        await connection.connect()
        self._connection = connection
        # The concrete channel: its `basic_publish` takes `wait` (the abstract one's does not).
        self._channel = cast(aiormq.Channel, await connection.channel(publisher_confirms=True))
        return self._channel

    def _url(self) -> str:
        with self.app.connection_for_write() as info:  # kombu parses Celery's broker URL
            scheme = "amqps" if info.ssl else "amqp"
            user, password = (
                quote(part or "guest", safe="") for part in (info.userid, info.password)
            )
            vhost = quote(info.virtual_host or "/", safe="")
            host, port = info.hostname or "localhost", info.port or 5672
        return f"{scheme}://{user}:{password}@{host}:{port}/{vhost}"

    async def drop(self, broken: aiormq.Channel | None) -> None:
        """Close the connection so that the next call opens a fresh one. With `broken`, only
        if that channel is still the current one: requests that failed together on it
        must not close the connection the first of them already replaced it with."""
        if broken is not None and broken is not self._channel:
            return
        self._declared.clear()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                logger.debug("closing a broken broker connection failed", exc_info=True)


async def _declare(channel: aiormq.Channel, target: Any) -> None:
    exchange = target.exchange
    if exchange.name:  # the default exchange exists already and may not be declared
        await channel.exchange_declare(
            exchange=exchange.name,
            exchange_type=exchange.type,
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            arguments=exchange.arguments,
        )
    await channel.queue_declare(
        target.name,
        durable=target.durable,
        auto_delete=target.auto_delete,
        exclusive=target.exclusive,
        arguments=target.queue_arguments,
    )
    if exchange.name:
        await channel.queue_bind(
            target.name,
            exchange.name,
            routing_key=target.routing_key,
            arguments=target.binding_arguments,
        )
