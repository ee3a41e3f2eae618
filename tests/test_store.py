"""The store contract: what every backend promises, checked on the store itself, on SQLite and
on a real PostgreSQL, on a fake clock (time is an argument of every primitive: no test sleeps)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mqd.errors import (
    DataCorrupt,
    DataDirectoryError,
    DeadLetterQueueInUse,
    InternalError,
    QueueGone,
    QueueNotFound,
)
from mqd.model import DeadLetterRule, Lease, NewMessage, Queue, QueueSettings, content_checksum
from mqd.store import sqlite_tables
from mqd.store.sqlite import DATABASE_FILE, SQLiteStore

START = 1_000_000.0


class Queued:
    """One queue of a store, and the time: each call passes ``now`` and the queue's policy, as
    the broker does."""

    def __init__(self, store, queue: Queue, now: float = START) -> None:
        self.store, self.queue, self.now = store, queue, now

    @property
    def id(self) -> int:
        return self.queue.id

    def later(self, seconds: float) -> None:
        self.now += seconds

    async def send(
        self,
        *contents: str,
        delay: float = 0.0,
        key: str | None = None,
        priority: int = 0,
        group: str | None = None,
        ttl: float | None = None,
    ):
        messages = [NewMessage(c, delay, key, priority, group, ttl) for c in contents]
        settings = self.queue.settings
        return await self.store.send(
            self.id,
            messages,
            self.now,
            settings.dedup_window,
            settings.limit,
            self.queue.dead_letter_queue_id,
        )

    async def take(self, count: int = 1000, lease: float | None = None):
        leasing = None if lease is None else Lease.new(self.now + lease, count)
        rule = None
        if self.queue.settings.max_attempts is not None:
            rule = DeadLetterRule(self.queue.settings.max_attempts, self.queue.dead_letter_queue_id)
        return await self.store.take(self.id, count, self.now, leasing, rule, self.queue.settings.caps)

    async def contents(self, count: int = 1000, lease: float | None = None) -> list[str]:
        return [d.content for d in (await self.take(count, lease)).deliveries]

    async def ack(self, delivery) -> bool:
        return (await self.store.ack(self.id, delivery.id, delivery.lease_token, self.now)).found

    async def release(self, delivery, delay: float = 0.0) -> bool:
        visible_at = self.now + delay if delay else 0.0
        return await self.store.release(self.id, delivery.id, delivery.lease_token, self.now, visible_at)

    async def extend(self, delivery, lease: float) -> bool:
        return await self.store.extend(self.id, delivery.id, delivery.lease_token, self.now, self.now + lease)

    async def stats(self):
        (stats,) = await self.store.stats(self.now, self.id)
        return stats


async def declare(store, name: str, settings: QueueSettings | None = None) -> Queued:
    queue, _ = await store.create_queue(name, settings or QueueSettings(), START)
    return Queued(store, queue)


@pytest.fixture
async def q(store) -> Queued:
    return await declare(store, "q")


@pytest.fixture
async def work(store) -> Queued:
    """A queue with a dead-letter queue, after two deliveries."""
    await declare(store, "dlq")
    return await declare(store, "work", QueueSettings(max_attempts=2, dead_letter_queue="dlq"))


async def use_up(work: Queued, attempts: int = 3) -> None:
    """Lease and release the queue's messages until they are dead-lettered."""
    for _ in range(attempts):
        for delivery in (await work.take(1, lease=30)).deliveries:
            await work.release(delivery)


# -- queues -------------------------------------------------------------------------------------


async def test_declaring_a_queue_again_returns_it_as_it_is(store):
    first, created = await store.create_queue("q", QueueSettings(), START)
    again, created_again = await store.create_queue("q", QueueSettings(dedup_window=5), START + 1)
    assert (created, created_again) == (True, False)
    assert again == first  # the broker decides whether other settings are a conflict


async def test_a_dead_letter_queue_that_does_not_exist_is_not_found(store):
    with pytest.raises(QueueNotFound) as missing:
        await store.create_queue("work", QueueSettings(max_attempts=3, dead_letter_queue="nope"), START)
    assert missing.value.name == "nope"


async def test_find_queue_knows_its_settings_and_dead_letter_queue(store, work):
    found = await store.find_queue("work")
    assert found == work.queue and found.dead_letter_queue_id == (await store.find_queue("dlq")).id
    assert await store.find_queue("nope") is None


async def test_delete_queue_removes_it_and_its_messages(store, q):
    await q.send('"a"')
    await store.delete_queue(q.id)
    assert await store.find_queue("q") is None
    again = await declare(store, "q")
    assert again.id != q.id and await again.contents() == []


async def test_a_dead_letter_queue_in_use_cannot_be_deleted(store, work):
    with pytest.raises(DeadLetterQueueInUse) as refused:
        await store.delete_queue(work.queue.dead_letter_queue_id)
    assert refused.value.users == ["work"]


async def test_every_primitive_on_a_deleted_queue_says_it_is_gone(store, q):
    await store.delete_queue(q.id)
    for operation in (
        lambda: store.delete_queue(q.id),
        lambda: q.send('"x"'),
        lambda: q.take(),
        lambda: store.ack(q.id, 1, "ab", START),
        lambda: store.release(q.id, 1, "ab", START, 0),
        lambda: store.extend(q.id, 1, "ab", START, START + 5),
        lambda: store.purge(q.id),
        lambda: store.redrive(q.id, START),
    ):
        with pytest.raises(QueueGone):
            await operation()
    assert await store.stats(START, q.id) == []


async def test_stats_list_every_queue_by_name_and_totals_count_everything(store, q):
    other = await declare(store, "b")
    await q.send('"1"', '"2"')
    await other.send('"3"')
    assert [s.queue.name for s in await store.stats(START)] == ["b", "q"]
    totals = await store.totals()
    assert (totals.queues, totals.messages) == (2, 3)


# -- sending and taking -------------------------------------------------------------------------


async def test_messages_come_out_in_the_order_they_went_in(q):
    await q.send(*(f'"{i}"' for i in range(50)))
    await q.send('"50"')
    assert await q.contents(20) == [f'"{i}"' for i in range(20)]
    assert await q.contents() == [f'"{i}"' for i in range(20, 51)]


@pytest.mark.parametrize("size", [1, 3, 37, 129, 1000])
async def test_a_batch_of_any_size_is_stored_whole_and_in_order(q, size):
    sent = [f'"{size}-{i}"' for i in range(size)]
    result = await q.send(*sent)
    assert len(result.ids) == size and result.ids == sorted(result.ids)
    assert await q.contents() == sent
    assert (await q.stats()).messages == 0


async def test_concurrent_sends_and_takes_share_commits_and_lose_nothing(q):
    results = await asyncio.gather(*(q.send(f'"{i}"') for i in range(200)))
    ids = [r.ids[0] for r in results]
    assert len(set(ids)) == 200
    taken = await asyncio.gather(*(q.take(7) for _ in range(40)))
    got = [d.content for t in taken for d in t.deliveries]
    assert sorted(got) == sorted(f'"{i}"' for i in range(200)) and len(got) == 200


async def test_ids_are_not_reused_after_the_queue_drains(q):
    (first,) = (await q.send('"a"')).ids
    await q.contents()
    (second,) = (await q.send('"b"')).ids
    assert second > first


@pytest.mark.parametrize(
    "content",
    [
        '"with\\u0000nul\\nand newline"',
        '"\\u00e9\\u6f22\\ud83d\\ude00"',
        '"é漢😀 as written"',
        '{"nested":[1,2.5,true,null,{"x":"y"}]}',
        "12345678901234567890123",
        "1e-400",
        "-0.0",
        '"\\ud800 lone surrogate"',
        "[]",
        "null",
    ],
)
async def test_content_is_kept_as_its_text(q, content):
    await q.send(content)
    assert await q.contents() == [content]


async def test_take_takes_at_most_count(q):
    await q.send('"1"', '"2"', '"3"')
    assert len((await q.take(2)).deliveries) == 2


# -- leases -------------------------------------------------------------------------------------


async def test_a_leased_message_is_hidden_then_comes_back_in_place_with_one_more_attempt(q):
    await q.send('"first"', '"second"')
    (leased,) = (await q.take(1, lease=10)).deliveries
    assert leased.attempts == 1 and leased.receipt == f"{leased.id}.{leased.lease_token}"
    assert await q.contents(1, lease=10) == ['"second"']
    q.later(10.5)
    back = (await q.take(2)).deliveries
    assert [(d.content, d.attempts) for d in back] == [('"first"', 2), ('"second"', 2)]


async def test_each_taken_message_gets_its_own_token(q):
    await q.send('"a"', '"b"', '"c"')
    leased = (await q.take(3, lease=10)).deliveries
    assert len({d.lease_token for d in leased}) == 3


async def test_ack_removes_a_leased_message_once(q):
    await q.send('"x"')
    (leased,) = (await q.take(1, lease=30)).deliveries
    assert await q.ack(leased) is True
    assert await q.ack(leased) is False
    assert (await q.stats()).messages == 0


async def test_a_stale_lease_cannot_touch_the_message_leased_again(q):
    await q.send('"x"')
    (old,) = (await q.take(1, lease=5)).deliveries
    q.later(6)
    (new,) = (await q.take(1, lease=30)).deliveries
    assert new.id == old.id and new.lease_token != old.lease_token
    assert (await q.ack(old), await q.release(old), await q.extend(old, 60)) == (False, False, False)
    assert await q.ack(new) is True


async def test_an_expired_lease_cannot_ack(q):
    await q.send('"x"')
    (leased,) = (await q.take(1, lease=5)).deliveries
    q.later(6)
    assert await q.ack(leased) is False
    assert await q.contents() == ['"x"']


async def test_release_makes_the_message_ready_again_at_once(q):
    await q.send('"x"')
    (leased,) = (await q.take(1, lease=30)).deliveries
    assert await q.release(leased) is True
    assert await q.contents() == ['"x"']


async def test_release_with_a_delay_hides_the_message_until_then(q):
    await q.send('"x"')
    (leased,) = (await q.take(1, lease=30)).deliveries
    await q.release(leased, delay=5)
    assert await q.contents() == []
    q.later(5.1)
    assert await q.contents() == ['"x"']


async def test_extend_keeps_the_message_hidden_past_its_first_lease(q):
    await q.send('"x"')
    (leased,) = (await q.take(1, lease=5)).deliveries
    assert await q.extend(leased, 30) is True
    q.later(6)
    assert await q.contents() == []
    assert await q.ack(leased) is True


# -- putting back what a receiver that left was given -------------------------------------------


async def test_restore_makes_a_leased_message_ready_at_once_without_the_attempt(store, q):
    await q.send('"a"', '"b"')
    (leased,) = (await q.take(1, lease=30)).deliveries
    assert await store.restore(q.id, [leased]) == 1
    again = (await q.take(2)).deliveries
    assert [(d.id, d.content, d.attempts) for d in again] == [
        (leased.id, '"a"', 1),
        (leased.id + 1, '"b"', 1),
    ]


async def test_restore_puts_a_removed_message_back_under_its_own_id_in_its_place(store, q):
    await q.send('"a"', '"b"')
    (removed,) = (await q.take(1)).deliveries
    assert await store.restore(q.id, [removed]) == 1
    assert (await q.stats()).messages == 2
    again = (await q.take(2)).deliveries
    assert [(d.id, d.content, d.attempts) for d in again] == [
        (removed.id, '"a"', 1),
        (removed.id + 1, '"b"', 1),
    ]


async def test_restore_keeps_a_dead_letter_linked_to_its_source(store, work):
    dlq = Queued(store, await store.find_queue("dlq"))
    await work.send('"x"')
    await use_up(work)
    (dead,) = (await dlq.take(1)).deliveries
    assert dead.dead_letter_source_id == work.id
    await store.restore(dlq.id, [dead])
    assert [(queue.name, moved) for queue, moved in await store.redrive(dlq.id, START)] == [("work", 1)]


async def test_restore_leaves_a_lease_that_is_no_longer_the_one_handed_out(store, q):
    await q.send('"a"')
    (first,) = (await q.take(1, lease=5)).deliveries
    q.later(6)
    (second,) = (await q.take(1, lease=30)).deliveries
    assert await store.restore(q.id, [first]) == 0
    assert await q.ack(second) is True


async def test_restore_into_a_deleted_queue_puts_nothing_back(store, q):
    await q.send('"a"')
    (removed,) = (await q.take(1)).deliveries
    await store.delete_queue(q.id)
    assert await store.restore(q.id, [removed]) == 0


# -- one operation's fault is its own -----------------------------------------------------------


async def test_an_operation_that_fails_unexpectedly_fails_alone(store, q):
    """A key no store can keep (the API refuses it long before) must fail its own send only, not
    the others committed with it."""
    ordinary = [q.send(f'"{i}"') for i in range(100)]
    faulty = [q.send('"x"', key="\ud800") for _ in range(20)]
    results = await asyncio.gather(*ordinary[:50], *faulty, *ordinary[50:], return_exceptions=True)
    outcomes = results[:50] + results[70:]
    assert [type(r).__name__ for r in outcomes] == ["SendResult"] * 100
    assert all(isinstance(r, InternalError) for r in results[50:70])
    assert sorted(await q.contents()) == sorted(f'"{i}"' for i in range(100))


# -- dead letters, delays, peek, idempotency ----------------------------------------------------


async def test_a_message_leased_max_attempts_times_moves_to_the_dead_letter_queue(store, work):
    await work.send('"poison"')
    for _ in range(2):
        (leased,) = (await work.take(1, lease=30)).deliveries
        await work.release(leased)
    result = await work.take(1, lease=30)
    assert result.deliveries == [] and result.dead_lettered == 1
    assert (await work.stats()).dead_lettered == 1
    dlq = Queued(store, await store.find_queue("dlq"))
    assert await dlq.contents(10, lease=30) == ['"poison"']


async def test_a_dead_letter_frees_the_way_for_the_next_message(work):
    await work.send('"poison"', '"good"')
    for _ in range(2):
        (leased,) = (await work.take(1, lease=30)).deliveries
        await work.release(leased)
    result = await work.take(1, lease=30)
    assert result.dead_lettered == 1 and [d.content for d in result.deliveries] == ['"good"']


async def test_redrive_moves_dead_letters_back_to_their_source(store, work):
    await work.send('"poison"')
    await use_up(work)
    dlq_id = work.queue.dead_letter_queue_id
    assert [(queue.name, moved) for queue, moved in await store.redrive(dlq_id, START)] == [("work", 1)]
    (back,) = (await work.take(1, lease=30)).deliveries
    assert back.content == '"poison"' and back.attempts == 1


async def test_redrive_from_the_source_queue_brings_its_dead_letters_home(store, work):
    await work.send('"poison"')
    await use_up(work)
    assert [(queue.name, moved) for queue, moved in await store.redrive(work.id, START)] == [("work", 1)]
    (dlq,) = await store.stats(START, work.queue.dead_letter_queue_id)
    assert dlq.messages == 0


async def test_a_delayed_message_is_invisible_until_due(store, q):
    await q.send('"later"', delay=5)
    await q.send('"now"')
    assert await q.contents() == ['"now"']
    assert await store.next_visible_at(q.id) == pytest.approx(START + 5)
    q.later(5.1)
    assert await q.contents() == ['"later"']


async def test_peek_shows_without_consuming_and_sees_leases_that_ran_out(store, q):
    await q.send('"a"', '"b"')
    assert [d.content for d in await store.peek(q.id, 5, q.now)] == ['"a"', '"b"']
    await q.take(1, lease=5)
    assert [d.content for d in await store.peek(q.id, 5, q.now)] == ['"b"']
    q.later(6)
    assert [d.content for d in await store.peek(q.id, 5, q.now)] == ['"a"', '"b"']
    assert await q.contents() == ['"a"', '"b"']


async def test_a_repeated_idempotency_key_returns_the_first_id_and_enqueues_nothing(q):
    first = await q.send('"a"', key="k1")
    again = await q.send('"a"', key="k1")
    assert again.ids == first.ids and again.duplicates == [True]
    assert (await q.stats()).messages == 1


async def test_concurrent_sends_with_one_key_store_one_message(q):
    results = await asyncio.gather(*(q.send(f'"{i}"', key="same") for i in range(10)))
    assert (
        len({r.ids[0] for r in results}) == 1
        and sorted(r.duplicates[0] for r in results) == [False] + [True] * 9
    )
    assert (await q.stats()).messages == 1


async def test_an_idempotency_key_is_forgotten_after_the_dedup_window(store):
    short = await declare(store, "short", QueueSettings(dedup_window=5))
    first = await short.send('"a"', key="k")
    short.later(5.1)
    again = await short.send('"a"', key="k")
    assert again.ids != first.ids


async def test_stats_count_each_state(work):
    await work.send('"ready"', '"leased"')
    await work.send('"delayed"', delay=60)
    await work.take(1, lease=30)  # leases "ready", the oldest
    stats = await work.stats()
    assert (stats.messages, stats.ready, stats.leased, stats.delayed) == (3, 1, 1, 1)
    assert stats.oldest_ready_at == START


async def test_purge_removes_every_message(q):
    await q.send('"a"', '"b"')
    assert await q.store.purge(q.id) == 2
    assert (await q.stats()).messages == 0
    assert (await q.store.totals()).messages == 0


# -- export and import -----------------------------------------------------------------------------


async def test_export_gives_every_message_in_every_state_by_id(work):
    await work.send('"a"', '"leased"', "1.50")
    await work.send('"later"', delay=60)
    await work.take(2, lease=30)  # "a" and "leased"
    first = await work.store.export(0, 2)
    rest = await work.store.export(first[-1].id, 10)
    exported = first + rest
    assert [m.content for m in exported] == ['"a"', '"leased"', "1.50", '"later"']
    assert [m.queue for m in exported] == ["work"] * 4
    assert [m.visible_at for m in exported] == [START + 30, START + 30, 0.0, START + 60]
    assert [m.attempts for m in exported] == [1, 1, 0, 0]


async def test_an_import_stores_as_exported_and_skips_what_its_source_stored(store, work):
    target = await declare(store, "target")
    await work.send('"one"', '"two"')
    exported = [m._replace(queue="target") for m in await store.export(0, 10)]
    ids = {"target": target.id}
    assert await store.import_messages("source-1", exported, ids) == {"target": 2}
    assert await store.import_messages("source-1", exported, ids) == {}  # repeated: nothing twice
    assert await store.import_messages("source-2", exported[1:], ids) == {"target": 1}  # another source
    assert await target.contents() == ['"one"', '"two"', '"two"']


async def test_an_import_keeps_states_and_dead_letter_origins(store, work):
    dlq = await declare(store, "dlq-copy")
    await work.send('"dead"')
    await use_up(work)
    dead = [m for m in await store.export(0, 10) if m.dead_letter_source == "work"]
    assert len(dead) == 1
    moved = [dead[0]._replace(queue="dlq-copy", visible_at=START + 99)]
    await store.import_messages("s", moved, {"dlq-copy": dlq.id, "work": work.id})
    copy = (await store.export(dead[0].id, 10))[-1]
    assert (copy.queue, copy.dead_letter_source, copy.visible_at, copy.attempts) == (
        "dlq-copy",
        "work",
        START + 99,
        dead[0].attempts,
    )


async def test_an_import_into_a_deleted_queue_stores_nothing(store, q):
    other = await declare(store, "other")
    await q.send('"a"')
    exported = await store.export(0, 10)
    await store.delete_queue(other.id)
    with pytest.raises(QueueGone):
        await store.import_messages("s", [exported[0]._replace(queue="other")], {"other": other.id})
    assert (await store.totals()).messages == 1


# -- persistence (SQLite) -----------------------------------------------------------------------


async def test_messages_and_leases_survive_reopening(data_dir):
    store = SQLiteStore(data_dir)
    await store.open()
    q = await declare(store, "q")
    await q.send('"a"', '"b"', '"c"')
    (leased,) = (await q.take(1, lease=60)).deliveries
    await store.close()

    store = SQLiteStore(data_dir)
    await store.open()
    try:
        again = Queued(store, await store.find_queue("q"))
        assert await again.contents() == ['"b"', '"c"']
        assert await again.ack(leased) is True
        assert (await store.totals()).messages == 0
    finally:
        await store.close()


async def test_a_store_of_schema_1_is_upgraded_and_keeps_its_messages(data_dir):
    import sqlite3

    data_dir.mkdir(parents=True)
    old = sqlite3.connect(data_dir / DATABASE_FILE)
    old.executescript(
        f"{sqlite_tables.SCHEMA_1} PRAGMA application_id={sqlite_tables.APPLICATION_ID}; "
        "PRAGMA user_version=1;"
        "INSERT INTO queues (name, created_at, dedup_window, depth) VALUES ('q', 1, 300, 1);"
    )
    old.execute(
        "INSERT INTO messages (queue_id, visible_at, attempts, enqueued_at, checksum, content) "
        "VALUES (1, 0, 0, 1, ?, ?)",
        (content_checksum('"kept"'), '"kept"'),
    )
    old.commit()
    old.close()
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        (stats,) = await store.stats(START)
        assert (stats.messages, stats.bytes, stats.queue.settings.overflow) == (1, 6, "reject")
        exported = await store.export(0, 10)
        assert [m.content for m in exported] == ['"kept"']
        assert await store.import_messages("s", exported, {"q": 1}) == {"q": 1}  # the new table
        q = Queued(store, stats.queue)
        await q.send('"urgent"', priority=9)  # the new columns
        assert [d.content for d in (await q.take(3)).deliveries] == ['"urgent"', '"kept"', '"kept"']
    finally:
        await store.close()
    upgraded = sqlite3.connect(data_dir / DATABASE_FILE)
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == sqlite_tables.SCHEMA_VERSION
    upgraded.close()


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
