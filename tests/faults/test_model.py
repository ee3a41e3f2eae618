"""The broker against a plain in-memory model of the queue semantics, driven by hypothesis.

Random sequences of send (with priorities, groups, delays and ttls), receive (removing or
leasing), ack, release, time passing (leases, delays and ttls running out), expiry sweeps and
restarts of the store run against the real broker on each store (SQLite, and a real PostgreSQL)
and against a plain Python model of what a queue should do, on a queue declared with random
policies (dead-letter queue, max_messages with either overflow, max_in_flight, max_rate,
message_ttl); any difference is a bug. Time is the broker's clock, moved by the test: nothing
sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mqd.broker import Broker
from mqd.errors import QueueFull, ReceiptNotFound
from mqd.model import NewMessage, QueueSettings
from mqd.store.sqlite import SQLiteStore

from .. import postgres
from .conftest import scaled


@dataclasses.dataclass
class ModelMessage:
    id: int
    value: int
    visible_at: float  # its own: 0 ready, later hidden until then (delay or lease)
    priority: int = 0
    group: str | None = None
    expires_at: float | None = None  # cleared once it is delivered
    attempts: int = 0
    token: int | None = None  # the lease currently held, if any


@dataclasses.dataclass
class ModelSettings:
    dead_letter: bool  # max_attempts 2 and a dead-letter queue
    max_messages: int | None
    drop_oldest: bool
    max_in_flight: int | None
    max_rate: float | None
    message_ttl: float | None

    def queue_settings(self) -> QueueSettings:
        return QueueSettings(
            max_attempts=2 if self.dead_letter else None,
            dead_letter_queue="dlq" if self.dead_letter else None,
            message_ttl=self.message_ttl,
            max_messages=self.max_messages,
            overflow="drop_oldest" if self.drop_oldest else "reject",
            max_in_flight=self.max_in_flight,
            max_rate=self.max_rate,
        )


class QueueModel:
    """What a queue should do (docs/policies.md), with no storage, threads or SQL."""

    def __init__(self, settings: ModelSettings, now: float) -> None:
        self.settings = settings
        self.messages: list[ModelMessage] = []
        self.dead_letters: list[ModelMessage] = []  # in the dead-letter queue, as they were
        self.next_id = 1
        self.next_token = 1
        self.expired = self.dropped = 0
        self.reset_bucket(now)

    def reset_bucket(self, now: float) -> None:
        self.tokens, self.tokens_at = (self.capacity(), now) if self.settings.max_rate else (0.0, now)

    def capacity(self) -> float:
        return max(1.0, self.settings.max_rate / 10)

    def head(self, message: ModelMessage) -> bool:
        """Whether it is its group's turn: the oldest message of its group still here."""
        return message.group is None or message is min(
            (m for m in self.messages if m.group == message.group), key=lambda m: m.id
        )

    def ready(self, now: float) -> list[ModelMessage]:
        waiting = [m for m in self.messages if m.visible_at <= now and self.head(m)]
        return sorted(waiting, key=lambda m: (-m.priority, m.id))

    def leased(self, now: float) -> int:
        return sum(1 for m in self.messages if m.token is not None and m.visible_at > now)

    def send(self, values, now: float) -> bool:
        """Store (value, delay, priority, group, ttl) messages, all or nothing; False if refused."""
        limit = self.settings.max_messages
        if limit is not None and len(self.messages) + len(values) > limit:
            excess = len(self.messages) + len(values) - limit
            victims = [m for m in self.ready(now)][:excess] if self.settings.drop_oldest else []
            if len(values) > limit or len(victims) < excess:
                return False
            for victim in victims:
                self.remove(victim)
                self.dropped += 1
        for value, delay, priority, group, ttl in values:
            ttl = ttl if ttl is not None else self.settings.message_ttl
            expires_at = now + delay + ttl if ttl is not None else None
            visible_at = now + delay if delay else 0.0
            self.messages.append(ModelMessage(self.next_id, value, visible_at, priority, group, expires_at))
            self.next_id += 1
        return True

    def remove(self, message: ModelMessage) -> None:
        """Out of the queue by policy: to the dead-letter queue if there is one."""
        self.messages.remove(message)
        if self.settings.dead_letter:  # in line there by priority, then id (its own, kept)
            self.dead_letters.append(message)

    def allowed(self, count: int, lease: float | None, now: float) -> int:
        if self.settings.max_in_flight is not None and lease is not None:
            count = min(count, max(0, self.settings.max_in_flight - self.leased(now)))
        if self.settings.max_rate is not None:
            elapsed = max(0.0, now - self.tokens_at)
            self.tokens = min(self.capacity(), self.tokens + elapsed * self.settings.max_rate)
            self.tokens_at = max(now, self.tokens_at)
            count = min(count, max(0, int(self.tokens + 1e-9)))
        return count

    def receive(self, count: int, lease: float | None, now: float) -> list[tuple[int, int, int | None]]:
        """Messages in line by priority, then age, a page at a time: a page is the next ones in
        line, as many as are still wanted; its expired and exhausted messages are removed, the
        others delivered; a group's next message whose turn came meanwhile is in the next page."""
        count = self.allowed(count, lease, now)
        taken: list[tuple[int, int, int | None]] = []
        while len(taken) < count:
            page = self.ready(now)[: count - len(taken)]
            if not page:
                break
            for message in page:
                if message.expires_at is not None and message.expires_at <= now:
                    self.remove(message)
                    self.expired += 1
                elif self.settings.dead_letter and message.attempts >= 2:
                    self.remove(message)
                else:
                    taken.append(self.deliver(message, lease, now))
        if self.settings.max_rate is not None:
            self.tokens -= len(taken)
        return taken

    def deliver(self, message: ModelMessage, lease: float | None, now: float) -> tuple[int, int, int | None]:
        message.attempts += 1
        message.expires_at = None
        if lease is None:
            self.messages.remove(message)
            return message.value, message.attempts, None
        message.visible_at, message.token = now + lease, self.next_token
        self.next_token += 1
        return message.value, message.attempts, message.token

    def sweep(self, now: float) -> None:
        """The broker's expiry sweep: every message waiting past its expiry goes."""
        for message in sorted(self.messages, key=lambda m: (m.expires_at or 0, m.id)):
            if message.expires_at is not None and message.expires_at <= now:
                self.remove(message)
                self.expired += 1

    def holder(self, token: int, now: float) -> ModelMessage | None:
        return next((m for m in self.messages if m.token == token and m.visible_at > now), None)


class BrokerMatchesModel(RuleBasedStateMachine):
    """On SQLite; the subclass below runs the same machine on PostgreSQL."""

    bucket_survives_restart = False  # SQLite keeps max_rate's bucket in memory

    def make_store(self):
        return SQLiteStore(self.directory, fsync=False)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.mkdtemp(prefix="mq-model-")
        self.store_url = None
        self.now = 1_000_000.0
        self.model: QueueModel | None = None
        self.receipts: dict[int, str] = {}  # model token -> real receipt
        self.open()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def open(self) -> None:
        self.store = self.make_store()
        self.run(self.store.open())
        self.broker = Broker(self.store, clock=lambda: self.now)

    def teardown(self) -> None:
        self.broker.close()
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.store_url is not None:
            postgres.drop_schema(self.schema)

    @initialize(
        dead_letter=st.booleans(),
        max_messages=st.sampled_from([None, None, 3, 6]),
        drop_oldest=st.booleans(),
        max_in_flight=st.sampled_from([None, None, 1, 2]),
        max_rate=st.sampled_from([None, None, 0.5, 2.0]),
        message_ttl=st.sampled_from([None, None, 3.0]),
    )
    def declare(self, **settings) -> None:
        self.model = QueueModel(ModelSettings(**settings), self.now)
        self.run(self.broker.create_queue("dlq", QueueSettings()))
        self.run(self.broker.create_queue("q", self.model.settings.queue_settings()))

    @rule(
        messages=st.lists(
            st.tuples(
                st.integers(0, 10**6),
                st.sampled_from([0, 0, 0, 1.5, 4]),
                st.sampled_from([0, 0, 1, 9]),
                st.sampled_from([None, None, "a", "b"]),
                st.sampled_from([None, None, None, 2.0]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def send(self, messages) -> None:
        sending = [
            NewMessage(str(v), delay, None, priority, group, ttl)
            for v, delay, priority, group, ttl in messages
        ]
        try:
            self.run(self.broker.send("q", sending))
            stored = True
        except QueueFull:
            stored = False
        assert stored == self.model.send(messages, self.now)

    @rule(count=st.integers(1, 4), lease=st.sampled_from([None, None, 1.0, 3.0]))
    def receive(self, count: int, lease: float | None) -> None:
        got = self.run(self.broker.receive("q", count=count, lease=lease))
        expected = self.model.receive(count, lease, self.now)
        assert [(int(d.content), d.attempts) for d in got] == [(v, a) for v, a, _ in expected]
        for delivery, (_, _, token) in zip(got, expected, strict=True):
            if token is not None:
                self.receipts[token] = delivery.receipt

    @precondition(lambda self: self.receipts)
    @rule(data=st.data(), release_delay=st.sampled_from([None, 0, 2.0]))
    def settle(self, data, release_delay: float | None) -> None:
        """Ack (release_delay None) or release a lease, which may have run out or moved on."""
        token = data.draw(st.sampled_from(sorted(self.receipts)))
        receipt = self.receipts[token]
        holder = self.model.holder(token, self.now)
        try:
            if release_delay is None:
                self.run(self.broker.ack("q", receipt))
            else:
                self.run(self.broker.release("q", receipt, release_delay))
        except ReceiptNotFound:
            assert holder is None, "a valid receipt was refused"
            return
        assert holder is not None, "a stale receipt was accepted"
        if release_delay is None:
            self.model.messages.remove(holder)
        else:
            holder.token = None
            holder.visible_at = self.now + release_delay if release_delay else 0.0

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def expiry_sweep(self) -> None:
        self.run(self.broker.expire_now())
        self.model.sweep(self.now)

    @rule()
    def restart(self) -> None:
        self.broker.close()
        self.run(self.store.close())
        self.open()
        if not self.bucket_survives_restart:
            self.model.reset_bucket(self.now)

    @invariant()
    def depths_agree(self) -> None:
        if self.model is None:
            return
        stats = self.run(self.broker.queue_stats("q"))
        messages = self.model.messages
        assert stats.messages == len(messages)
        hidden = [m for m in messages if m.visible_at > self.now and self.model.head(m)]
        assert stats.ready == len(messages) - len(hidden)
        assert stats.leased == sum(1 for m in hidden if m.token is not None)
        assert stats.bytes == sum(len(str(m.value)) for m in messages)
        dead = self.run(self.broker.peek("dlq", 1000))
        in_line = sorted(self.model.dead_letters, key=lambda m: (-m.priority, m.id))
        assert [int(d.content) for d in dead] == [m.value for m in in_line]


class BrokerOnPostgresMatchesModel(BrokerMatchesModel):
    bucket_survives_restart = True  # a table row, shared by the nodes

    def make_store(self):
        from mqd.store.postgres import PostgresStore

        if self.store_url is None:
            self.store_url, self.schema = postgres.new_schema_url()
        return PostgresStore(self.store_url)


SETTINGS = settings(max_examples=scaled(30, 300), stateful_step_count=scaled(25, 60), deadline=None)
BrokerMatchesModel.TestCase.settings = SETTINGS
BrokerOnPostgresMatchesModel.TestCase.settings = SETTINGS
test_broker_matches_the_model_on_sqlite = BrokerMatchesModel.TestCase


@pytest.mark.skipif(bool(postgres.unavailable()), reason=str(postgres.unavailable()))
class TestBrokerOnPostgresMatchesTheModel(BrokerOnPostgresMatchesModel.TestCase):
    pass
