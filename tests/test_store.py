"""The store contract: what every backend promises, checked on the store itself."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mqd.errors import (
    DataCorrupt,
    DataDirectoryError,
    InternalError,
    InvalidArgument,
    QueueConflict,
    QueueNotFound,
    ReceiptNotFound,
)
from mqd.store.base import NewMessage, QueueSettings
from mqd.store.sqlite import DATABASE_FILE, SQLiteStore

SHORT = 0.3  # seconds: leases and delays that tests wait out


def texts(*values: str) -> list[NewMessage]:
    return [NewMessage(v) for v in values]


async def contents(store, queue: str, count: int = 1000, lease=None) -> list[str]:
    result = await store.receive(queue, count, lease)
    return [d.content for d in result.deliveries]


@pytest.fixture
async def q(store):
    await store.create_queue("q", QueueSettings())
    return "q"


@pytest.fixture
async def with_dlq(store):
    await store.create_queue("dlq", QueueSettings())
    await store.create_queue("work", QueueSettings(max_attempts=2, dead_letter_queue="dlq"))
    return "work"


# -- queues -------------------------------------------------------------------------------------


async def test_create_queue_is_idempotent_with_the_same_settings(store):
    first, created = await store.create_queue("q", QueueSettings())
    again, created_again = await store.create_queue("q", QueueSettings())
    assert (created, created_again) == (True, False)
    assert again == first


async def test_create_queue_with_other_settings_conflicts(store, q):
    with pytest.raises(QueueConflict):
        await store.create_queue(q, QueueSettings(dedup_window=10))


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (QueueSettings(max_attempts=3, dead_letter_queue="missing"), QueueConflict),
        (QueueSettings(max_attempts=3, dead_letter_queue="self"), QueueConflict),
        (QueueSettings(max_attempts=3), InvalidArgument),
        (QueueSettings(dead_letter_queue="q"), InvalidArgument),
    ],
    ids=["dlq-missing", "own-dlq", "attempts-without-dlq", "dlq-without-attempts"],
)
async def test_create_queue_rejects_bad_dead_letter_settings(store, q, settings, error):
    with pytest.raises(error):
        await store.create_queue("self", settings)


async def test_delete_queue_removes_it_and_its_messages(store, q):
    await store.send(q, texts('"a"'))
    await store.delete_queue(q)
    with pytest.raises(QueueNotFound):
        await store.get_queue(q)
    await store.create_queue(q, QueueSettings())
    assert await contents(store, q) == []


async def test_a_dead_letter_queue_in_use_cannot_be_deleted(store, with_dlq):
    with pytest.raises(QueueConflict):
        await store.delete_queue("dlq")


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.get_queue("nope"),
        lambda s: s.delete_queue("nope"),
        lambda s: s.queue_stats("nope"),
        lambda s: s.send("nope", texts('"x"')),
        lambda s: s.receive("nope", 1, None),
        lambda s: s.peek("nope", 1),
        lambda s: s.ack("nope", "1.ab"),
        lambda s: s.release("nope", "1.ab", 0),
        lambda s: s.extend("nope", "1.ab", 5),
        lambda s: s.purge("nope"),
        lambda s: s.redrive("nope"),
        lambda s: s.next_visible_at("nope"),
    ],
)
async def test_every_operation_on_an_unknown_queue_raises_queue_not_found(store, operation):
    with pytest.raises(QueueNotFound):
        await operation(store)


async def test_list_queues_and_totals(store, q):
    await store.create_queue("b", QueueSettings())
    await store.send(q, texts('"1"', '"2"'))
    assert [s.queue.name for s in await store.list_queues()] == ["b", "q"]
    totals = await store.totals()
    assert (totals.queues, totals.messages) == (2, 2)


# -- sending and receiving ----------------------------------------------------------------------


async def test_messages_come_out_in_the_order_they_went_in(store, q):
    await store.send(q, texts(*(f'"{i}"' for i in range(50))))
    await store.send(q, texts('"50"'))
    assert await contents(store, q, 20) == [f'"{i}"' for i in range(20)]
    assert await contents(store, q) == [f'"{i}"' for i in range(20, 51)]


@pytest.mark.parametrize("size", [1, 3, 37, 129, 1000])
async def test_a_batch_of_any_size_is_stored_whole_and_in_order(store, q, size):
    sent = [f'"{size}-{i}"' for i in range(size)]
    result = await store.send(q, texts(*sent))
    assert len(result.ids) == size and result.ids == sorted(result.ids)
    assert await contents(store, q) == sent
    assert (await store.queue_stats(q)).messages == 0


async def test_receive_removes_so_a_message_is_delivered_once(store, q):
    await store.send(q, texts('"only"'))
    assert await contents(store, q) == ['"only"']
    assert await contents(store, q) == []


async def test_batch_ids_are_ascending_and_unique_across_queues(store, q):
    await store.create_queue("other", QueueSettings())
    first = await store.send(q, texts('"a"', '"b"'))
    second = await store.send("other", texts('"c"'))
    ids = first.ids + second.ids
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_ids_are_not_reused_after_the_queue_drains(store, q):
    (first,) = (await store.send(q, texts('"a"'))).ids
    await contents(store, q)
    (second,) = (await store.send(q, texts('"b"'))).ids
    assert second > first


@pytest.mark.parametrize(
    "content",
    [
        '"with\\u0000nul\\nand newline"',
        '"\\u00e9\\u6f22\\ud83d\\ude00"',
        '{"nested":[1,2.5,true,null,{"x":"y"}]}',
        "12345678901234567890123",
        "1.0",
        "-0.0",
        '"\\ud800 lone surrogate"',
        "[]",
        "null",
    ],
)
async def test_content_round_trips_exactly(store, q, content):
    await store.send(q, [NewMessage(content)])
    assert await contents(store, q) == [content]


async def test_receive_count_takes_at_most_count(store, q):
    await store.send(q, texts('"1"', '"2"', '"3"'))
    assert len((await store.receive(q, 2, None)).deliveries) == 2


# -- leases -------------------------------------------------------------------------------------


async def test_a_leased_message_is_hidden_then_comes_back_in_place_with_one_more_attempt(store, q):
    await store.send(q, texts('"first"', '"second"'))
    (leased,) = (await store.receive(q, 1, SHORT)).deliveries
    assert leased.attempts == 1 and leased.receipt
    assert await contents(store, q, 1, lease=SHORT) == ['"second"']
    await asyncio.sleep(SHORT + 0.1)
    back = (await store.receive(q, 2, None)).deliveries
    assert [(d.content, d.attempts) for d in back] == [('"first"', 2), ('"second"', 2)]


async def test_ack_removes_a_leased_message(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, 30)).deliveries
    await store.ack(q, leased.receipt)
    assert (await store.queue_stats(q)).messages == 0


async def test_a_receipt_works_once(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, 30)).deliveries
    await store.ack(q, leased.receipt)
    with pytest.raises(ReceiptNotFound):
        await store.ack(q, leased.receipt)


async def test_a_stale_receipt_cannot_touch_the_message_leased_again(store, q):
    await store.send(q, texts('"x"'))
    (old,) = (await store.receive(q, 1, SHORT)).deliveries
    await asyncio.sleep(SHORT + 0.1)
    (new,) = (await store.receive(q, 1, 30)).deliveries
    assert new.id == old.id and new.receipt != old.receipt
    for operation in (
        store.ack(q, old.receipt),
        store.release(q, old.receipt, 0),
        store.extend(q, old.receipt, 60),
    ):
        with pytest.raises(ReceiptNotFound):
            await operation
    await store.ack(q, new.receipt)


async def test_an_expired_receipt_cannot_ack(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, SHORT)).deliveries
    await asyncio.sleep(SHORT + 0.1)
    with pytest.raises(ReceiptNotFound):
        await store.ack(q, leased.receipt)
    assert await contents(store, q) == ['"x"']


@pytest.mark.parametrize("receipt", ["", "garbage", "12", "12.", ".abc", "999.abcdef"])
async def test_malformed_or_unknown_receipts_are_not_found(store, q, receipt):
    with pytest.raises(ReceiptNotFound):
        await store.ack(q, receipt)


async def test_release_makes_the_message_ready_again_at_once(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, 30)).deliveries
    assert await store.release(q, leased.receipt, 0) == 0
    assert await contents(store, q) == ['"x"']


async def test_release_with_a_delay_hides_the_message_until_then(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, 30)).deliveries
    await store.release(q, leased.receipt, SHORT)
    assert await contents(store, q) == []
    await asyncio.sleep(SHORT + 0.1)
    assert await contents(store, q) == ['"x"']


async def test_extend_keeps_the_message_hidden_past_its_first_lease(store, q):
    await store.send(q, texts('"x"'))
    (leased,) = (await store.receive(q, 1, SHORT)).deliveries
    await store.extend(q, leased.receipt, 30)
    await asyncio.sleep(SHORT + 0.1)
    assert await contents(store, q) == []
    await store.ack(q, leased.receipt)


# -- putting back what a receiver that left was given -------------------------------------------


async def test_restore_makes_a_leased_message_ready_at_once_without_the_attempt(store, q):
    await store.send(q, texts('"a"', '"b"'))
    (leased,) = (await store.receive(q, 1, 30)).deliveries
    assert await store.restore(q, [leased]) == 1
    again = (await store.receive(q, 2, None)).deliveries
    assert [(d.id, d.content, d.attempts) for d in again] == [
        (leased.id, '"a"', 1),
        (leased.id + 1, '"b"', 1),
    ]


async def test_restore_puts_a_removed_message_back_under_its_own_id_in_its_place(store, q):
    await store.send(q, texts('"a"', '"b"'))
    (removed,) = (await store.receive(q, 1, None)).deliveries
    assert await store.restore(q, [removed]) == 1
    assert (await store.queue_stats(q)).messages == 2
    again = (await store.receive(q, 2, None)).deliveries
    assert [(d.id, d.content, d.attempts) for d in again] == [
        (removed.id, '"a"', 1),
        (removed.id + 1, '"b"', 1),
    ]


async def test_restore_keeps_a_dead_letter_linked_to_its_source(store, with_dlq):
    await store.send(with_dlq, texts('"x"'))
    for _ in range(3):  # two attempts used, the third receive dead-letters it
        for delivery in (await store.receive(with_dlq, 1, 30)).deliveries:
            await store.release(with_dlq, delivery.receipt, 0)
    (dead,) = (await store.receive("dlq", 1, None)).deliveries
    assert dead.dead_letter_source == with_dlq
    await store.restore("dlq", [dead])
    assert await store.redrive("dlq") == {with_dlq: 1}


async def test_restore_leaves_a_lease_that_is_no_longer_the_one_handed_out(store, q):
    await store.send(q, texts('"a"'))
    (first,) = (await store.receive(q, 1, SHORT)).deliveries
    await asyncio.sleep(SHORT + 0.1)
    (second,) = (await store.receive(q, 1, 30)).deliveries
    assert await store.restore(q, [first]) == 0
    with pytest.raises(ReceiptNotFound):
        await store.ack(q, first.receipt)
    await store.ack(q, second.receipt)


async def test_restore_into_a_deleted_queue_puts_nothing_back(store, q):
    await store.send(q, texts('"a"'))
    (removed,) = (await store.receive(q, 1, None)).deliveries
    await store.delete_queue(q)
    assert await store.restore(q, [removed]) == 0


# -- one operation's fault is its own -----------------------------------------------------------


async def test_an_operation_that_fails_unexpectedly_fails_alone(store, q):
    """A key no store can keep (the API refuses it long before) must fail its own send only, not
    the others committed with it."""
    ordinary = [store.send(q, texts(f'"{i}"')) for i in range(100)]
    faulty = [store.send(q, [NewMessage('"x"', 0.0, "\ud800")]) for _ in range(20)]
    results = await asyncio.gather(*ordinary[:50], *faulty, *ordinary[50:], return_exceptions=True)
    outcomes = results[:50] + results[70:]
    assert [type(r).__name__ for r in outcomes] == ["SendResult"] * 100
    assert all(isinstance(r, InternalError) for r in results[50:70])
    assert sorted(await contents(store, q)) == sorted(f'"{i}"' for i in range(100))


# -- dead letters, delays, peek, idempotency ----------------------------------------------------


async def test_a_message_leased_max_attempts_times_moves_to_the_dead_letter_queue(store, with_dlq):
    await store.send(with_dlq, texts('"poison"'))
    for _ in range(2):
        (leased,) = (await store.receive(with_dlq, 1, 30)).deliveries
        await store.release(with_dlq, leased.receipt, 0)
    result = await store.receive(with_dlq, 1, 30)
    assert result.deliveries == [] and result.dead_lettered == {"dlq": 1}
    assert (await store.queue_stats(with_dlq)).dead_lettered == 1
    assert await contents(store, "dlq", 10, lease=30) == ['"poison"']


async def test_redrive_moves_dead_letters_back_to_their_source(store, with_dlq):
    await store.send(with_dlq, texts('"poison"'))
    for _ in range(3):
        for d in (await store.receive(with_dlq, 1, 30)).deliveries:
            await store.release(with_dlq, d.receipt, 0)
    assert await store.redrive("dlq") == {with_dlq: 1}
    (back,) = (await store.receive(with_dlq, 1, 30)).deliveries
    assert back.content == '"poison"' and back.attempts == 1


async def test_redrive_from_the_source_queue_brings_its_dead_letters_home(store, with_dlq):
    await store.send(with_dlq, texts('"poison"'))
    for _ in range(3):
        for d in (await store.receive(with_dlq, 1, 30)).deliveries:
            await store.release(with_dlq, d.receipt, 0)
    assert await store.redrive(with_dlq) == {with_dlq: 1}
    assert (await store.queue_stats("dlq")).messages == 0


async def test_a_delayed_message_is_invisible_until_due(store, q):
    await store.send(q, [NewMessage('"later"', delay=SHORT), NewMessage('"now"')])
    assert await contents(store, q) == ['"now"']
    assert await store.next_visible_at(q) is not None
    await asyncio.sleep(SHORT + 0.1)
    assert await contents(store, q) == ['"later"']


async def test_peek_shows_without_consuming(store, q):
    await store.send(q, texts('"a"', '"b"'))
    assert [d.content for d in await store.peek(q, 5)] == ['"a"', '"b"']
    assert await contents(store, q) == ['"a"', '"b"']


async def test_a_repeated_idempotency_key_returns_the_first_id_and_enqueues_nothing(store, q):
    first = await store.send(q, [NewMessage('"a"', key="k1")])
    again = await store.send(q, [NewMessage('"a"', key="k1")])
    assert again.ids == first.ids and again.duplicates == [True]
    assert (await store.queue_stats(q)).messages == 1


async def test_an_idempotency_key_is_forgotten_after_the_dedup_window(store):
    await store.create_queue("short", QueueSettings(dedup_window=SHORT))
    first = await store.send("short", [NewMessage('"a"', key="k")])
    await asyncio.sleep(SHORT + 0.1)
    again = await store.send("short", [NewMessage('"a"', key="k")])
    assert again.ids != first.ids


async def test_stats_count_each_state(store, with_dlq):
    await store.send(with_dlq, [*texts('"ready"', '"leased"'), NewMessage('"delayed"', delay=60)])
    await store.receive(with_dlq, 1, 30)  # leases "ready", the oldest
    stats = await store.queue_stats(with_dlq)
    assert (stats.messages, stats.ready, stats.leased, stats.delayed) == (3, 1, 1, 1)
    assert stats.oldest_ready_at is not None


async def test_purge_removes_every_message(store, q):
    await store.send(q, texts('"a"', '"b"'))
    assert await store.purge(q) == 2
    assert (await store.queue_stats(q)).messages == 0


# -- persistence --------------------------------------------------------------------------------


async def test_messages_and_leases_survive_reopening(data_dir):
    store = SQLiteStore(data_dir)
    await store.open()
    await store.create_queue("q", QueueSettings())
    await store.send("q", texts('"a"', '"b"', '"c"'))
    (leased,) = (await store.receive("q", 1, 60)).deliveries
    await store.close()

    store = SQLiteStore(data_dir)
    await store.open()
    try:
        assert await contents(store, "q") == ['"b"', '"c"']
        await store.ack("q", leased.receipt)
        assert (await store.totals()).messages == 0
    finally:
        await store.close()


@pytest.mark.parametrize(
    "damage",
    [b"this is not a database at all" * 200, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "garbage-after-header"],
)
async def test_a_damaged_database_is_refused_and_left_untouched(data_dir, damage):
    data_dir.mkdir(parents=True)
    path = data_dir / DATABASE_FILE
    path.write_bytes(damage)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataCorrupt, match=DATABASE_FILE):
        await SQLiteStore(data_dir).open()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


async def test_a_second_store_cannot_open_a_data_directory_in_use(data_dir):
    first = SQLiteStore(data_dir)
    await first.open()
    try:
        with pytest.raises(DataDirectoryError, match="in use"):
            await SQLiteStore(data_dir).open()
    finally:
        await first.close()
