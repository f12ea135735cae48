"""Redis trouble is visible: a stream the gateway cannot read ends with a 502 naming the
request instead of hanging, and a worker's events survive an outage that outlasts a few
retries (a lost `done` would leave its client waiting for the request timeout).

The outages are real: a Redis server of the test's own, stopped and started on a free port.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from gateway.call import Call
from gateway.errors import OpenAIError
from tests.gateway.test_broker import request
from wire import redis_channels, redis_inbox
from wire.channels import StreamUnreadable
from wire.local_gate import LocalGate
from wire.redis_channels import RedisChannels
from wire.redis_inbox import Inbox

UNREADABLE_AFTER_S = 0.3


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that keeps nothing on disk."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_inbox, "UNREADABLE_AFTER_S", UNREADABLE_AFTER_S)
    monkeypatch.setattr(redis_channels, "PUBLISH_BACKOFF_S", 0.01)
    monkeypatch.setattr(redis_channels, "PUBLISH_BACKOFF_MAX_S", 0.05)


def test_an_inbox_that_cannot_be_read_says_so_once_it_has_failed_for_a_while(
    private_redis: PrivateRedis,
) -> None:
    async def scenario() -> tuple[list[object], type[BaseException] | None]:
        import redis.asyncio as aioredis

        inbox = Inbox(aioredis.Redis.from_url(private_redis.url), "test:events:")
        inbox.expect("r1")
        early = await inbox.receive("r1", 0.05)  # not failing long enough yet: just quiet
        await asyncio.sleep(UNREADABLE_AFTER_S + 0.6)
        try:
            await inbox.receive("r1", 0.05)
        except StreamUnreadable as exc:
            return early, type(exc)
        return early, None

    early, raised = asyncio.run(scenario())

    assert (early, raised) == ([], StreamUnreadable)


def test_a_call_whose_stream_cannot_be_read_ends_with_a_502_naming_the_request(
    private_redis: PrivateRedis,
) -> None:
    from gateway.auth import Principal

    channels = RedisChannels(private_redis.url)  # the server is down from the start
    caller = Principal(1, "pk", "acme", 1, 1.0, None, None)
    generation = request(1)

    async def scenario() -> OpenAIError:
        call = Call(channels, LocalGate(), generation, caller)
        channels.expect(generation.request_id)
        with pytest.raises(OpenAIError) as raised:
            async for _ in call.events():
                pass
        return raised.value

    error = asyncio.run(scenario())

    assert (error.status, error.code) == (502, "stream_unreadable")
    assert generation.request_id in error.message


def test_an_event_published_during_an_outage_arrives_once_redis_is_back(
    private_redis: PrivateRedis,
) -> None:
    channels = RedisChannels(private_redis.url)  # down while the worker publishes
    address = f"inbox:test:{uuid.uuid4().hex}"

    channels.publish("r1", {"type": "done", "finish_reason": "stop"}, address)
    deadline = time.monotonic() + 30
    while channels.num_publish_failures < 10:  # twice the five tries it used to give up after
        assert time.monotonic() < deadline
        time.sleep(0.02)
    private_redis.start()
    channels.flush(timeout_s=30)

    entries = redis.Redis.from_url(private_redis.url).xrange(f"parity:events:{address}")
    assert [fields[b"r"] for _, fields in entries] == [b"r1"]


def test_a_restart_quicker_than_the_retries_still_counts_as_an_outage_of_the_inbox(
    private_redis: PrivateRedis,
) -> None:
    # Events written just before a restart are gone with it: the gateway must know one
    # happened to check its quiet requests, however quickly Redis came back.
    private_redis.start()
    channels = RedisChannels(private_redis.url)

    async def scenario() -> tuple[int, int]:
        channels.expect("r1")
        await channels.receive("r1", 0.2)  # the reader is in its blocking read
        before = channels.event_outages()
        private_redis.stop()
        private_redis.start()
        deadline = time.monotonic() + 10
        while channels.event_outages() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return before, channels.event_outages()

    before, after = asyncio.run(scenario())

    assert (before, after) == (0, 1)
