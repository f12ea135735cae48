"""The gateway's task publisher: a message the Celery worker reads as `workers.generate`,
on the engine pool's queue, through the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from celery import current_app

from gateway.amqp import AmqpPublisher
from gateway.broker import Publisher, TaskPublisher, publisher_for
from wire.protocol import GenerationRequest, RequestKind


def request(n: int) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"chatcmpl-{uuid.uuid4().hex}-{n}",
        kind=RequestKind.CHAT,
        tenant="acme",
        tenant_id=1,
        api_key_id=2,
        model="parity-tiny",
        max_tokens=4,
        received_at=time.time(),
        messages=[{"role": "user", "content": f"hi {n}"}],
        reply_to="inbox:test",
    )


def test_the_gateway_publishes_to_rabbitmq_from_its_event_loop() -> None:
    assert isinstance(publisher_for(current_app), AmqpPublisher)


@pytest.mark.parametrize("make_publisher", [AmqpPublisher, TaskPublisher])
def test_published_requests_arrive_in_order_as_celery_tasks_with_their_payload(
    make_publisher: type[Publisher],
) -> None:
    queue_name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    current_app.amqp.queues.select_add(queue_name)  # declared as the engine pool's queue is
    sent = [request(n) for n in range(3)]

    async def publish_all() -> None:
        publisher = make_publisher(current_app)  # type: ignore[call-arg]
        for item in sent:
            await publisher.publish(item, queue_name)
        await publisher.aclose()

    asyncio.run(publish_all())

    messages = take(queue_name, len(sent))
    assert [m.headers["task"] for m in messages] == ["workers.generate"] * 3
    assert [m.headers["id"] for m in messages] == [r.request_id for r in sent]
    args = [GenerationRequest.from_dict(m.payload[0][0]) for m in messages]
    assert args == sent
    # What Celery's logs and monitors show of the args: the request id, not the prompt.
    assert [m.headers["argsrepr"] for m in messages] == [f"[{r.request_id!r}]" for r in sent]


def test_a_broker_connection_lost_under_the_gateway_is_replaced_and_nothing_is_lost() -> None:
    queue_name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    current_app.amqp.queues.select_add(queue_name)
    sent = [request(n) for n in range(2)]

    async def publish_across_a_loss() -> None:
        publisher = AmqpPublisher(current_app)
        await publisher.publish(sent[0], queue_name)
        link = publisher._link()
        assert link._connection is not None
        await link._connection.close()  # as a broker restart would cut it
        await publisher.publish(sent[1], queue_name)
        await publisher.aclose()

    asyncio.run(publish_across_a_loss())

    assert [m.headers["id"] for m in take(queue_name, 2)] == [r.request_id for r in sent]


def test_a_channel_the_broker_closed_is_replaced_and_its_connection_closed() -> None:
    queue_name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    current_app.amqp.queues.select_add(queue_name)
    sent = [request(n) for n in range(2)]

    async def publish_across_a_closed_channel() -> bool:
        publisher = AmqpPublisher(current_app)
        await publisher.publish(sent[0], queue_name)
        link = publisher._link()
        old_connection, old_channel = link._connection, link._channel
        assert old_connection is not None and old_channel is not None
        await old_channel.close()  # as a channel error would close it, the connection open
        await publisher.publish(sent[1], queue_name)
        await publisher.aclose()
        return old_connection.is_closed

    assert asyncio.run(publish_across_a_closed_channel()), "the old connection was left open"
    assert [m.headers["id"] for m in take(queue_name, 2)] == [r.request_id for r in sent]


def test_a_burst_of_publishes_leaves_in_one_turn_of_the_event_loop() -> None:
    """A wave of freed seats is published together: every message is handed to the
    connection before the loop turns once (aio-pika's publish let one through per turn,
    behind a 10-frame write queue), and each is confirmed."""
    queue_name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    current_app.amqp.queues.select_add(queue_name)
    first, burst = request(0), [request(n) for n in range(1, 201)]

    async def publish_a_burst() -> int:
        publisher = AmqpPublisher(current_app)
        await publisher.publish(first, queue_name)  # the link is open
        channel = await publisher._link().channel_for(current_app.amqp.queues[queue_name])
        before = channel.delivery_tag
        pending = asyncio.gather(*(publisher.publish(item, queue_name) for item in burst))
        await asyncio.sleep(0)  # one turn: every publish ran up to its confirm
        handed_over = channel.delivery_tag - before
        await pending
        await publisher.aclose()
        return handed_over

    handed_over = asyncio.run(publish_a_burst())

    assert handed_over == len(burst)
    ids = [m.headers["id"] for m in take(queue_name, len(burst) + 1)]
    assert ids == [r.request_id for r in [first, *burst]]


def test_the_server_stop_closes_the_gateway_broker_connection() -> None:
    from config.asgi import application
    from gateway.call import publisher

    queue_name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    current_app.amqp.queues.select_add(queue_name)

    async def serve_and_stop() -> tuple[list[str], bool, bool]:
        await publisher.publish(request(0), queue_name)
        assert isinstance(publisher, AmqpPublisher)
        connection = publisher._link()._connection
        assert connection is not None and not connection.is_closed
        inbox = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        said: list[str] = []

        async def receive() -> dict[str, str]:
            return next(inbox)

        async def send(message: dict[str, str]) -> None:
            said.append(message["type"])

        await application({"type": "lifespan"}, receive, send)
        return said, connection.is_closed, asyncio.get_running_loop() in publisher._links

    said, closed, still_linked = asyncio.run(serve_and_stop())

    take(queue_name, 1)
    assert said == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert (closed, still_linked) == (True, False)


def take(queue_name: str, count: int) -> list[Any]:
    """The next `count` messages of the queue, acknowledged; then the queue is deleted."""
    with current_app.connection_for_write() as connection:
        received = connection.SimpleQueue(queue_name)
        messages = [received.get(timeout=10) for _ in range(count)]
        for message in messages:
            message.ack()
        received.close()
        connection.default_channel.queue_delete(queue_name)
    return messages
