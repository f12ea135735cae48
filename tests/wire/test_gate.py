"""The pool-wide fair gate, run against both stores: Redis (production) and in-process.

The cast: `heavy` (weight 1) floods the pool; `light` (weight 2) arrives during the flood.
Every request reserves the same cost, so VTC's order is exact: the light tenant is served
twice for each heavy request while both wait.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from django.conf import settings

from wire import local_gate, redis_gate
from wire.gate import Gate, Ticket, TicketLapsed, Verdict, reserve_cost
from wire.local_gate import LocalGate
from wire.redis_gate import RedisGate

COST = reserve_cost(10, 10)
_pools = itertools.count()


@pytest.fixture(params=["redis", "local"])
def gate(request: pytest.FixtureRequest) -> Iterator[Gate]:
    if request.param == "local":
        yield LocalGate()
        return
    # A database of its own on the suite's Redis: these tests flush it.
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    redis_gate = RedisGate(url, f"pool{next(_pools)}")
    redis_gate.redis.flushdb()
    yield redis_gate
    redis_gate.redis.flushdb()
    redis_gate.close()


def ticket(
    tenant: str, n: int, *, weight: float = 1.0, cost: float = COST, **limits: int
) -> Ticket:
    return Ticket(
        request_id=f"{tenant}-{n}",
        tenant=tenant,
        weight=weight,
        cost=cost,
        tenant_limit=limits.get("tenant_limit", 10_000),
        queue_limit=limits.get("queue_limit", 10_000),
    )


def heavy(n: int, **kw: int) -> Ticket:
    return ticket("heavy", n, weight=1.0, **kw)


def light(n: int, **kw: int) -> Ticket:
    return ticket("light", n, weight=2.0, **kw)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def seated_order(gate: Gate, queued: list[Ticket], seated: list[Ticket]) -> list[str]:
    """Release the seated tickets one by one; the order in which queued ones get seats."""
    waits = {t.request_id: asyncio.ensure_future(gate.wait_seat(t.request_id, 10)) for t in queued}
    order: list[str] = []
    holders = [t.request_id for t in seated]
    while len(order) < len(queued):
        await gate.leave(holders.pop(0))
        done, _ = await asyncio.wait(
            [w for rid, w in waits.items() if rid not in order],
            timeout=5,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert len(done) == 1, "each freed seat seats exactly one ticket"
        rid = next(rid for rid, w in waits.items() if w in done)
        order.append(rid)
        holders.append(rid)
    return order


def test_a_pool_with_no_worker_refuses_and_one_heartbeat_opens_it(gate: Gate) -> None:
    async def body() -> None:
        assert (await gate.enter(heavy(1))).verdict is Verdict.NO_WORKERS
        gate.heartbeat("w1", 2, {})
        assert (await gate.enter(heavy(2))).verdict is Verdict.SEATED
        assert gate.state().capacity == 2

    run(body)


def test_requests_within_capacity_are_seated_and_the_rest_queue_in_order(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 2, {})
        verdicts = [(await gate.enter(heavy(n))) for n in range(4)]

        assert [e.verdict for e in verdicts] == [Verdict.SEATED] * 2 + [Verdict.QUEUED] * 2
        assert [e.position for e in verdicts[2:]] == [1, 2]
        state = gate.state()
        assert (state.num_seated, state.tenants["heavy"].num_queued) == (2, 2)

    run(body)


def test_a_light_tenant_arriving_behind_a_flood_gets_the_next_seat(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 2, {})
        seated = [heavy(0), heavy(1)]
        for t in seated:
            await gate.enter(t)
        flood = [heavy(n) for n in range(2, 12)]
        for t in flood:
            assert (await gate.enter(t)).verdict is Verdict.QUEUED
        arrivals = [light(n) for n in range(4)]
        for t in arrivals:
            assert (await gate.enter(t)).verdict is Verdict.QUEUED

        order = await seated_order(gate, flood[:6] + arrivals, seated)

        # Lifted to the flood's counter, the light tenant ties and the older head goes first;
        # then it is served twice per heavy request (weights 2 : 1, equal costs).
        assert order[:7] == [
            "heavy-2",
            "light-0",
            "light-1",
            "heavy-3",
            "light-2",
            "light-3",
            "heavy-4",
        ]

    run(body)


def test_a_full_pool_seats_a_tenant_below_its_share_within_the_headroom(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 8, {})  # headroom: 25% of 8, two seats beyond capacity
        flood = [heavy(n) for n in range(12)]
        verdicts = [(await gate.enter(t)).verdict for t in flood]
        assert verdicts == [Verdict.SEATED] * 8 + [Verdict.QUEUED] * 4

        arrivals = [light(n) for n in range(3)]
        verdicts = [(await gate.enter(t)).verdict for t in arrivals]
        assert verdicts == [Verdict.SEATED, Verdict.SEATED, Verdict.QUEUED]
        assert (await gate.enter(heavy(12))).verdict is Verdict.QUEUED  # over its share
        assert gate.state().num_seated == 10

        queued = ["light-2", *(f"heavy-{n}" for n in range(8, 13))]
        waits = [asyncio.ensure_future(gate.wait_seat(rid, 10)) for rid in queued]
        await gate.leave("heavy-0")
        await gate.leave("heavy-1")
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waits)  # back at capacity: the overflow paid back
        await gate.leave("heavy-2")
        done, _ = await asyncio.wait(waits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.05)
        assert len(done) == 1 and sum(w.done() for w in waits) == 1  # then one seat, fairly
        for wait in waits:
            wait.cancel()

    run(body)


def test_a_tenant_takes_no_headroom_beyond_its_weighted_share(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 20, {})  # five seats of headroom
        for n in range(24):
            await gate.enter(heavy(n))
        meek = [ticket("meek", n, weight=0.1) for n in range(3)]
        verdicts = [(await gate.enter(t)).verdict for t in meek]

        # Its share: 20 x 0.1 / 1.1 = 1.8 seats, so one seat beyond capacity, not three.
        assert verdicts == [Verdict.SEATED, Verdict.QUEUED, Verdict.QUEUED]
        assert gate.state().num_seated == 21

    run(body)


def test_a_seat_its_worker_gives_back_goes_to_the_next_waiter_and_stays_given_back(
    gate: Gate,
) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        served, waiting = heavy(1), light(1)
        await gate.enter(served)
        assert (await gate.enter(waiting)).verdict is Verdict.QUEUED
        seated = asyncio.ensure_future(gate.wait_seat(waiting.request_id, 10))

        gate.release(served.request_id, COST / 4)  # its engine is done; its answer is not out

        assert await seated
        assert gate.state().tenants["heavy"].counter == pytest.approx(COST / 4)
        # Its gateway still holds it: the lease refresh puts no seat back, the leave at the
        # end changes nothing (charged once, at the release).
        await gate.refresh([served, waiting], [])
        assert (gate.state().num_seated, gate.state().tenants["heavy"].num_seated) == (1, 0)
        await gate.leave(served.request_id, COST)
        state = gate.state()
        assert (state.num_seated, state.tenants["heavy"].counter) == (1, pytest.approx(COST / 4))

    run(body)


def test_a_seat_its_gateway_gave_back_first_is_not_released_twice(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        left, waiting = heavy(1), heavy(2)
        await gate.enter(left)
        await gate.enter(waiting)
        await gate.leave(left.request_id, COST)  # the client hung up
        assert await gate.wait_seat(waiting.request_id, 10)

        gate.release(left.request_id, COST / 4)  # its worker stops a moment later

        state = gate.state()
        assert (state.num_seated, state.tenants["heavy"].counter) == (1, pytest.approx(2 * COST))

    run(body)


def test_two_backlogged_tenants_share_seats_by_weight(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 3, {})
        seated = [ticket("blocker", n) for n in range(3)]
        for t in seated:
            await gate.enter(t)
        queued = [t for n in range(30) for t in (heavy(n), light(n))]
        for t in queued:
            await gate.enter(t)

        order = await seated_order(gate, queued, seated)
        first_30 = order[:30]

        num_light = sum(rid.startswith("light") for rid in first_30)
        assert num_light == 20  # 2 : 1 of 30 seats

    run(body)


def test_a_client_that_leaves_the_queue_is_never_seated(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        await gate.enter(heavy(0))
        await gate.enter(heavy(1))
        await gate.enter(heavy(2))
        await gate.leave("heavy-1")

        order = await seated_order(gate, [heavy(2)], [heavy(0)])

        assert order == ["heavy-2"]
        assert gate.state().tenants["heavy"].num_queued == 0

    run(body)


def test_a_tenant_at_its_limit_is_refused_and_a_full_queue_says_when_to_retry(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        assert (await gate.enter(heavy(0, tenant_limit=2))).verdict is Verdict.SEATED
        assert (await gate.enter(heavy(1, tenant_limit=2))).verdict is Verdict.QUEUED
        assert (await gate.enter(heavy(2, tenant_limit=2))).verdict is Verdict.TENANT_LIMIT

        assert (await gate.enter(light(0, queue_limit=1))).verdict is Verdict.QUEUED
        full = await gate.enter(light(1, queue_limit=1))
        assert (full.verdict, full.position) == (Verdict.QUEUE_FULL, 1)
        assert full.retry_after_s >= 1

    run(body)


def test_a_new_worker_adds_its_capacity_and_seats_the_waiting(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        await gate.enter(heavy(0))
        await gate.enter(heavy(1))
        wait = asyncio.ensure_future(gate.wait_seat("heavy-1", 10))
        await asyncio.sleep(0)

        gate.heartbeat("w2", 1, {})

        assert await wait
        assert gate.state().capacity == 2

    run(body)


def test_a_burst_of_seats_reaches_its_waiters_in_the_order_they_were_granted(
    gate: Gate,
) -> None:
    # A grant read late is a seat held idle; one read out of order is a light request
    # buried under the heavy grants that came after it.
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        await gate.enter(heavy(0))
        queued = [heavy(1), heavy(2), light(1), heavy(3), heavy(4), light(2)]
        for t in queued:
            await gate.enter(t)
        woken: list[str] = []

        async def wait(rid: str) -> None:
            assert await gate.wait_seat(rid, 10)
            woken.append(rid)

        waits = [asyncio.ensure_future(wait(t.request_id)) for t in queued]
        await asyncio.sleep(0)
        gate.heartbeat("w2", len(queued), {})  # room for all of them at once
        await asyncio.wait_for(asyncio.gather(*waits), 10)

        # VTC's order: the light tenant is lifted to the heavy one's counter on joining,
        # loses the tie to the older head, then is served twice per heavy request.
        assert woken == ["heavy-1", "light-1", "light-2", "heavy-2", "heavy-3", "heavy-4"]

    run(body)


def test_a_retired_worker_takes_its_capacity_away(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 1, {})
        gate.heartbeat("w2", 1, {})
        gate.retire("w2")
        await gate.enter(heavy(0))

        assert (await gate.enter(heavy(1))).verdict is Verdict.QUEUED
        assert gate.state().workers == {"w1": 1}

    run(body)


def test_a_release_charges_what_the_engine_served_instead_of_the_reservation(
    gate: Gate,
) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 2, {})
        await gate.enter(ticket("light", 0, weight=2.0, cost=100))
        assert gate.state().tenants["light"].counter == 50  # 100 at weight 2

        await gate.leave("light-0", cost=30)

        assert gate.state().tenants["light"].counter == 15
        assert gate.state().num_seated == 0

    run(body)


def test_weights_from_a_worker_heartbeat_apply_to_later_charges(gate: Gate) -> None:
    async def body() -> None:
        gate.heartbeat("w1", 2, {"heavy": 4.0})
        await gate.enter(ticket("heavy", 0, weight=1.0, cost=40))  # the gateway's stale weight
        gate.heartbeat("w1", 2, {"heavy": 4.0})
        await gate.leave("heavy-0", cost=80)

        assert gate.state().tenants["heavy"].counter == 40 + 40 / 4

    run(body)


def test_leases_are_renewed_even_while_every_request_connection_is_busy() -> None:
    # A flood can hold every connection of the request path's pool; a lease renewal that
    # queued behind it for longer than a lease would let waiting tickets lapse (seen as 50
    # requests waiting forever at an empty gate). The keeper has connections of its own.
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    gate = RedisGate(url, f"pool{next(_pools)}", max_connections=1)
    gate.redis.flushdb()
    gate.heartbeat("w1", 1, {})

    async def body() -> tuple[float, float]:
        await gate.enter(heavy(1))
        await gate.enter(heavy(2))  # queued behind the only seat
        side = gate._side()
        before = float(gate.redis.zscore(gate.prefix + "queued-lease", "heavy-2") or 0)
        # The request pool's one connection, blocked on a list nobody pushes to:
        hog = asyncio.ensure_future(side.client.blpop(["nobody-pushes-here"], timeout=0))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(gate.refresh([heavy(1)], ["heavy-2"]), 10)
        after = float(gate.redis.zscore(gate.prefix + "queued-lease", "heavy-2") or 0)
        hog.cancel()
        return before, after

    try:
        before, after = asyncio.run(body())
    finally:
        gate.redis.flushdb()
        gate.close()

    assert after > before > 0


def let_the_lease_run_out(gate: Gate, request_id: str) -> None:
    """As if its gateway stopped renewing it a whole lease ago; the next call reaps it."""
    if isinstance(gate, RedisGate):
        for key in ("seats", "queued-lease"):
            gate.redis.zadd(gate.prefix + key, {request_id: 0}, xx=True)
    else:
        assert isinstance(gate, LocalGate)
        book = gate._book
        held = book.seats.get(request_id) or book.queued.get(request_id)
        assert held is not None
        held.deadline = -1.0


def test_a_seat_whose_lease_ran_out_is_reported_lapsed_to_the_workers(gate: Gate) -> None:
    gate.heartbeat("w1", 2, {})

    async def body() -> None:
        await gate.enter(heavy(1))
        await gate.enter(heavy(2))

    run(body)
    let_the_lease_run_out(gate, "heavy-1")
    assert gate.lapsed(["heavy-1", "heavy-2"]) == {"heavy-1"}
    assert gate.state().num_seated == 1


def test_a_seat_the_gate_lost_is_put_back_by_its_gateways_next_renewal(gate: Gate) -> None:
    # Its gateway stalled past a lease (or Redis restarted empty) while the request ran:
    # the gateway still holds it, so the seat comes back instead of the request being cut.
    gate.heartbeat("w1", 2, {})
    run(lambda: gate.enter(heavy(1)))
    let_the_lease_run_out(gate, "heavy-1")
    assert gate.lapsed(["heavy-1"]) == {"heavy-1"}

    assert asyncio.run(gate.refresh([heavy(1)], [])) == set()

    assert gate.lapsed(["heavy-1"]) == set()
    assert gate.state().tenants["heavy"].num_seated == 1


def test_a_waiting_ticket_whose_lease_ran_out_is_told_and_enters_again(
    gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_gate, "REFRESH_S", 0.05)
    monkeypatch.setattr(local_gate, "REFRESH_S", 0.05)
    gate.heartbeat("w1", 1, {})

    async def body() -> Verdict:
        await gate.enter(heavy(1))
        await gate.enter(heavy(2))  # waits behind the only seat
        waiting = asyncio.ensure_future(gate.wait_seat("heavy-2", 10))
        await asyncio.sleep(0.01)
        let_the_lease_run_out(gate, "heavy-2")
        gate.heartbeat("w1", 1, {})  # reaps it
        with pytest.raises(TicketLapsed):
            await asyncio.wait_for(waiting, 5)
        return (await gate.enter(heavy(2))).verdict

    assert asyncio.run(body()) is Verdict.QUEUED


def test_entering_again_after_a_lost_reply_changes_nothing(gate: Gate) -> None:
    # A gate call retried across a Redis restart may run twice: no double seat or queue.
    gate.heartbeat("w1", 1, {})

    async def body() -> list[Verdict]:
        verdicts = []
        for t in (heavy(1), heavy(1), heavy(2), heavy(2)):
            verdicts.append((await gate.enter(t)).verdict)
        return verdicts

    assert asyncio.run(body()) == [Verdict.SEATED, Verdict.SEATED, Verdict.QUEUED, Verdict.QUEUED]
    state = gate.state().tenants["heavy"]
    assert (state.num_seated, state.num_queued) == (1, 1)


def pause_the_store(gate: Gate, request_id: str, pause_s: float) -> None:
    """As if the whole machine stood still for `pause_s` (no call reached the store), and
    the request's lease ran out a second before it woke."""
    if isinstance(gate, RedisGate):
        now = gate.redis.time()
        woke = now[0] + now[1] / 1e6
        gate.redis.set(gate.prefix + "last-call", woke - pause_s)
        gate.redis.zadd(gate.prefix + "seats", {request_id: woke - 1}, xx=True)
    else:
        assert isinstance(gate, LocalGate)
        woke = time.monotonic()
        gate._last_call = woke - pause_s
        gate._book.seats[request_id].deadline = woke - 1


def test_a_pause_of_the_whole_machine_counts_against_no_lease(gate: Gate) -> None:
    gate.heartbeat("w1", 2, {})
    run(lambda: gate.enter(heavy(1)))

    pause_the_store(gate, "heavy-1", 30)

    assert gate.lapsed(["heavy-1"]) == set()
    assert gate.state().capacity == 2  # the worker's heartbeat lapsed in the pause too


def test_without_a_pause_a_lease_that_ran_out_lapses(gate: Gate) -> None:
    gate.heartbeat("w1", 2, {})
    run(lambda: gate.enter(heavy(1)))

    pause_the_store(gate, "heavy-1", 1)

    assert gate.lapsed(["heavy-1"]) == {"heavy-1"}
