"""Queue semantics above the store: long-poll lines, wake-ups, timers and the waiter cap."""

from __future__ import annotations

import asyncio
import random

import pytest

from mqd.broker import Broker
from mqd.errors import QueueNotFound, TooManyWaiters
from mqd.model import NewMessage, QueueSettings

from .helpers import until_waiting


@pytest.fixture
async def broker(store):
    broker = Broker(store, max_waiters=50)
    await broker.create_queue("q", QueueSettings())
    yield broker
    broker.close()


def message(value) -> list[NewMessage]:
    return [NewMessage(str(value))]


async def test_a_waiting_receiver_wakes_when_a_lease_runs_out(broker):
    await broker.send("q", message(1))
    (leased,) = await broker.receive("q", lease=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    (again,) = await broker.receive("q", wait=5)
    assert again.id == leased.id and again.attempts == 2
    assert 0.2 < loop.time() - started < 3


async def test_a_waiting_receiver_wakes_when_a_delayed_message_is_due(broker):
    waiting = asyncio.ensure_future(broker.receive("q", wait=5))
    await until_waiting(broker, 1)
    await broker.send("q", [NewMessage("1", delay=0.3)])
    (delivery,) = await asyncio.wait_for(waiting, 3)
    assert delivery.content == "1"


async def test_deleting_a_queue_tells_its_waiting_receivers(broker):
    waiting = asyncio.ensure_future(broker.receive("q", wait=5))
    await until_waiting(broker, 1)
    await broker.delete_queue("q")
    with pytest.raises(QueueNotFound):
        await asyncio.wait_for(waiting, 3)


async def test_closing_answers_waiting_receivers_with_nothing(broker):
    waiting = asyncio.ensure_future(broker.receive("q", wait=30))
    await until_waiting(broker, 1)
    broker.close()
    assert await asyncio.wait_for(waiting, 3) == []


async def test_receivers_beyond_the_cap_are_refused(broker):
    waiting = [asyncio.ensure_future(broker.receive("q", wait=30)) for _ in range(50)]
    await until_waiting(broker, 50)
    with pytest.raises(TooManyWaiters):
        await broker.receive("q", wait=5)
    await broker.send("q", [NewMessage(str(i)) for i in range(50)])
    results = await asyncio.gather(*waiting)
    assert sorted(int(d.content) for (d,) in results) == list(range(50))
    assert broker.waiting_receivers == 0


async def test_a_batch_wakes_as_many_receivers_as_it_has_messages(broker):
    waiting = [asyncio.ensure_future(broker.receive("q", wait=5)) for _ in range(3)]
    await until_waiting(broker, 3)
    await broker.send("q", [NewMessage(str(i)) for i in range(3)])
    done, _ = await asyncio.wait(waiting, timeout=2)
    assert len(done) == 3


async def test_concurrent_senders_and_waiting_receivers_deliver_every_message_exactly_once(broker):
    total = 400
    received: list[int] = []

    async def consumer():
        while True:
            deliveries = await broker.receive("q", count=random.choice([1, 3]), wait=1)
            if not deliveries:
                return
            received.extend(int(d.content) for d in deliveries)

    async def producer(start):
        for i in range(start, total, 4):
            await broker.send("q", message(i))
            if random.random() < 0.3:
                await asyncio.sleep(0.001)

    consumers = [asyncio.ensure_future(consumer()) for _ in range(8)]
    await asyncio.gather(*(producer(p) for p in range(4)))
    await asyncio.gather(*consumers)
    assert sorted(received) == list(range(total))


async def test_counters_follow_the_traffic(broker):
    await broker.send("q", [NewMessage("1"), NewMessage("2")])
    (leased,) = await broker.receive("q", lease=30)
    await broker.ack("q", leased.receipt)
    await broker.receive("q")
    counters = broker.counters_for("q")
    assert (counters.sent, counters.received, counters.acked) == (2, 2, 1)


# -- receivers that leave -----------------------------------------------------------------------


async def test_a_receiver_that_is_no_longer_there_takes_nothing(broker):
    await broker.send("q", message("x"))
    assert await broker.receive("q", still_there=lambda: False) == []
    assert [d.content for d in await broker.receive("q")] == ["x"]


async def test_a_cancelled_waiting_receiver_leaves_the_line_at_once_and_passes_its_turn(broker):
    first = asyncio.ensure_future(broker.receive("q", wait=30))
    await until_waiting(broker, 1)
    second = asyncio.ensure_future(broker.receive("q", wait=30))
    await until_waiting(broker, 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert broker.waiting_receivers == 1
    await broker.send("q", message("x"))
    assert [d.content for d in await asyncio.wait_for(second, 3)] == ["x"]


@pytest.mark.parametrize("lease", [None, 30], ids=["consume", "lease"])
async def test_messages_taken_for_a_receiver_cancelled_meanwhile_are_put_back(
    broker, store, monkeypatch, lease
):
    (sent,) = (await broker.send("q", message("x"))).ids
    asked = asyncio.Event()
    take = store.take

    def watched_take(*args, **kwargs):  # the real store's take, noticed as it is asked
        asked.set()
        return take(*args, **kwargs)

    monkeypatch.setattr(store, "take", watched_take)
    taking = asyncio.ensure_future(broker.receive("q", count=5, lease=lease))
    await asked.wait()  # it has asked the store, which goes on without it
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    deadline = asyncio.get_running_loop().time() + 10
    while broker.counters_for("q").returned < 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    (again,) = await broker.receive("q", lease=lease)
    assert (again.id, again.attempts) == (sent, 1)


async def test_messages_given_back_to_a_group_leave_it_one_head(broker):
    """A receiver that left gave back the group's first two messages: one is leased at a time,
    in order, as before they were taken."""
    await broker.create_queue("q", QueueSettings())
    await broker.send("q", [NewMessage(f'"g{n}"', group="g") for n in range(1, 4)])
    taken = await broker.receive("q", count=2)
    broker.give_back("q", taken)
    await broker.finish_returns()
    (first,) = await broker.receive("q", count=3, lease=30)
    assert first.content == '"g1"'
    assert await broker.receive("q", count=3, lease=30) == []


async def test_a_waiting_receiver_uses_settings_changed_while_it_waits(broker):
    """Dead-lettering removed and its queue deleted while a receiver waits: the message it then
    takes is delivered, not moved into the deleted queue."""
    await broker.create_queue("dlq", QueueSettings())
    await broker.create_queue("work", QueueSettings(max_attempts=1, dead_letter_queue="dlq"))
    await broker.send("work", message("precious"))
    (held,) = await broker.receive("work", lease=30)
    waiting = asyncio.ensure_future(broker.receive("work", lease=30, wait=10))
    await until_waiting(broker, 1)
    await broker.update_queue("work", {"max_attempts": None, "dead_letter_queue": None})
    await broker.delete_queue("dlq")
    await broker.release("work", held.receipt, 0)
    (again,) = await asyncio.wait_for(waiting, 10)
    assert (again.content, again.attempts) == ("precious", 2)


async def test_two_changes_at_once_each_keep_the_other(broker):
    await broker.create_queue("q", QueueSettings())
    await asyncio.gather(
        broker.update_queue("q", {"max_messages": 100}), broker.update_queue("q", {"max_rate": 5.0})
    )
    settings = (await broker.queue_stats("q")).queue.settings
    assert (settings.max_messages, settings.max_rate) == (100, 5.0)


async def test_a_receiver_held_back_by_max_in_flight_waits_without_looking_again_and_again(broker, store):
    """With max_rate set too but not what holds it back, the receiver sleeps until a place is
    free, rather than asking the store again at once, over and over."""
    commits = []
    store.observe_commits(lambda seconds, operations: commits.append(operations))
    await broker.create_queue("capped", QueueSettings(max_in_flight=1, max_rate=100))
    await broker.send("capped", message("a") + message("b"))
    await broker.receive("capped", lease=30)
    commits.clear()
    assert await broker.receive("capped", lease=30, wait=1) == []
    assert len(commits) < 10
