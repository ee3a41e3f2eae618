"""The broker against a plain in-memory model of the queue semantics, driven by hypothesis.

Random sequences of send, receive (removing or leasing), ack, release, time passing (leases and
delays running out) and restarts of the store run against the real broker on each store (SQLite,
and a real PostgreSQL) and against a few lines of Python that say what a queue should do; any
difference is a bug. Time is the broker's clock, moved by the test: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mqd.broker import Broker
from mqd.errors import ReceiptNotFound
from mqd.model import NewMessage, QueueSettings
from mqd.store.sqlite import SQLiteStore

from .. import postgres
from .conftest import scaled


@dataclasses.dataclass
class ModelMessage:
    id: int
    value: int
    visible_at: float
    attempts: int = 0
    token: int | None = None  # the lease currently held, if any


class QueueModel:
    """What a queue should do, with no storage, threads or SQL."""

    def __init__(self) -> None:
        self.messages: list[ModelMessage] = []
        self.next_id = 1
        self.next_token = 1

    def send(self, value: int, delay: float, now: float) -> None:
        self.messages.append(ModelMessage(self.next_id, value, now + delay if delay else 0.0))
        self.next_id += 1

    def receive(self, count: int, lease: float | None, now: float) -> list[tuple[int, int, int | None]]:
        ready = [m for m in self.messages if m.visible_at <= now][:count]
        taken = []
        for message in ready:
            message.attempts += 1
            if lease is None:
                self.messages.remove(message)
                taken.append((message.value, message.attempts, None))
            else:
                message.visible_at, message.token = now + lease, self.next_token
                self.next_token += 1
                taken.append((message.value, message.attempts, message.token))
        return taken

    def holder(self, token: int, now: float) -> ModelMessage | None:
        return next((m for m in self.messages if m.token == token and m.visible_at > now), None)


class BrokerMatchesModel(RuleBasedStateMachine):
    """On SQLite; the subclass below runs the same machine on PostgreSQL."""

    def make_store(self):
        return SQLiteStore(self.directory, fsync=False)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.mkdtemp(prefix="mq-model-")
        self.store_url = None
        self.now = 1_000_000.0
        self.model = QueueModel()
        self.receipts: dict[int, str] = {}  # model token -> real receipt
        self.open()
        self.run(self.broker.create_queue("q", QueueSettings()))

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

    @rule(value=st.integers(0, 10**6), delay=st.sampled_from([0, 0, 0, 1.5, 4]))
    def send(self, value: int, delay: float) -> None:
        self.run(self.broker.send("q", [NewMessage(str(value), delay)]))
        self.model.send(value, delay, self.now)

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
    def restart(self) -> None:
        self.broker.close()
        self.run(self.store.close())
        self.open()

    @invariant()
    def depths_agree(self) -> None:
        stats = self.run(self.broker.queue_stats("q"))
        assert stats.messages == len(self.model.messages)
        hidden = [m for m in self.model.messages if m.visible_at > self.now]
        assert stats.ready == len(self.model.messages) - len(hidden)
        assert stats.leased == sum(1 for m in hidden if m.token is not None)


class BrokerOnPostgresMatchesModel(BrokerMatchesModel):
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
