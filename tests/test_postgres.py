"""What only the PostgreSQL store has to prove: nodes sharing one database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mqd.broker import Broker
from mqd.errors import DataCorrupt, QueueNotFound, StorageUnavailable
from mqd.model import ExportedMessage, NewMessage, QueueSettings, content_checksum
from mqd.store.postgres import PostgresStore
from mqd.store.postgres_migrations import SCHEMA_VERSION, tables

from . import postgres
from .helpers import until_waiting


@pytest.fixture
def url():
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    yield url
    postgres.drop_schema(schema)


async def test_nodes_starting_together_create_the_schema_once(url):
    stores = [PostgresStore(url) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        schema = stores[0].schema
        versions = await stores[0]._pool.fetch(f"SELECT version FROM {schema}.schema_version")
        assert [row["version"] for row in versions] == [SCHEMA_VERSION]
        made = await asyncio.gather(*(s.create_queue("q", QueueSettings(), 1.0) for s in stores))
        assert sorted(created for _, created in made) == [False] * 4 + [True]  # one, across nodes
        assert len(await stores[3].stats(1.0)) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_schema_from_a_newer_mqd_is_refused(url):
    store = PostgresStore(url)
    await store.open()
    await store._pool.execute(f"INSERT INTO {store.schema}.schema_version VALUES (99)")
    await store.close()
    with pytest.raises(DataCorrupt, match="newer mqd"):
        await PostgresStore(url).open()


async def test_an_older_schema_is_upgraded_its_functions_dropped_and_depths_counted(url):
    store = PostgresStore(url)  # for its URL and schema name only
    s = store.schema
    connection = await asyncpg.connect(store.url)
    try:  # the tables as version 2 left them: no counters, no imports, no policies; a function
        await connection.execute(f"CREATE SCHEMA {s}; {tables(s)}")
        await connection.execute(
            f"""CREATE TABLE {s}.schema_version (version integer NOT NULL);
                INSERT INTO {s}.schema_version VALUES (2);
                INSERT INTO {s}.queues (name, created_at, dedup_window) VALUES ('q', 1, 300);
                CREATE FUNCTION {s}.receive() RETURNS integer LANGUAGE sql AS 'SELECT 1'"""
        )
        for content in ('"kept"', '"too"'):
            await connection.execute(
                f"INSERT INTO {s}.messages (queue_id, visible_at, enqueued_at, checksum, content) "
                "SELECT id, 0, 1, $1, $2 FROM {s}.queues".replace("{s}", s),
                content_checksum(content),
                content,
            )
    finally:
        await connection.close()
    upgraded = PostgresStore(url)
    await upgraded.open()
    try:
        assert await upgraded._pool.fetchval(f"SELECT version FROM {s}.schema_version") == SCHEMA_VERSION
        functions = await upgraded._pool.fetchval(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace", s
        )
        assert functions == 0
        assert (await upgraded.totals()).messages == 2  # counted from the rows, once
        broker = Broker(upgraded)
        assert (await broker.queue_stats("q")).bytes == 11
        await broker.send("q", [NewMessage('"urgent"', priority=9)])  # the new columns
        assert [d.content for d in await broker.receive("q", count=5)] == ['"urgent"', '"kept"', '"too"']
    finally:
        await upgraded.close()


@pytest.fixture
async def two_nodes(url):
    """A sending node's store, and a receiving node's broker waiting on a queue both share."""
    sender, receiver = PostgresStore(url), PostgresStore(url)
    await sender.open()
    await receiver.open()
    broker = Broker(receiver)
    await broker.create_queue("q", QueueSettings())
    yield Broker(sender), broker
    broker.close()
    await sender.close()
    await receiver.close()


async def test_a_send_on_one_node_wakes_a_long_poll_on_another(two_nodes):
    sender, broker = two_nodes
    waiting = asyncio.ensure_future(broker.receive("q", wait=20))
    await until_waiting(broker, 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sender.send("q", [NewMessage('"hello"')])
    (delivery,) = await asyncio.wait_for(waiting, 10)
    assert delivery.content == '"hello"'
    assert loop.time() - started < 5  # woken by NOTIFY, not by a poll or the 20 s timeout


async def test_a_delayed_send_on_another_node_wakes_a_waiter_when_due(two_nodes):
    sender, broker = two_nodes
    waiting = asyncio.ensure_future(broker.receive("q", wait=20))
    await until_waiting(broker, 1)
    await sender.send("q", [NewMessage('"later"', delay=1)])
    (delivery,) = await asyncio.wait_for(waiting, 10)
    assert delivery.content == '"later"'


class Proxy:
    """A TCP relay between the store and PostgreSQL that the test can cut and restore: a network
    that drops, for real."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.links):
            writer.transport.abort()

    async def _relay(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links |= {writer, upstream_writer}

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_a_lost_database_is_503_then_mqd_reconnects_by_itself(url):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = Proxy(parts.port or 5432)
    await proxy.start()
    store = PostgresStore(url.replace(f":{parts.port or 5432}/", f":{proxy.port}/"))
    await store.open()
    broker = Broker(store)
    try:
        await broker.create_queue("q", QueueSettings())
        await proxy.cut()  # the network to the database goes away
        with pytest.raises(StorageUnavailable, match="PostgreSQL"):
            await broker.send("q", [NewMessage('"during"')])
        await proxy.start()  # and comes back, on the same port
        for _ in range(50):
            try:
                result = await broker.send("q", [NewMessage('"after"')])
                break
            except StorageUnavailable:
                await asyncio.sleep(0.1)
        assert result.ids, "mqd did not reconnect by itself"
    finally:
        await store.close()
        await proxy.cut()


async def test_status_says_unavailable_in_its_own_shape_while_the_database_is_cut(
    url, aiohttp_client, make_config
):
    from urllib.parse import urlsplit

    from mqd.app import create_app

    port = urlsplit(url).port or 5432
    proxy = Proxy(port)
    await proxy.start()
    client = await aiohttp_client(create_app(make_config(store=url.replace(f":{port}/", f":{proxy.port}/"))))
    try:
        assert (await client.get("/status")).status == 200
        await proxy.cut()
        response = await client.get("/status")
        body = await response.json()
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert (body["status"], body["code"]) == ("unavailable", "store_unavailable")
        assert body["store"]["kind"] == "postgresql" and body["pid"]  # who is unwell, as in a 200
    finally:
        await proxy.cut()


async def test_a_connection_killed_by_the_server_is_replaced_at_the_cost_of_one_retry_at_most(url):
    store = PostgresStore(url, pool_size=1)
    await store.open()
    broker = Broker(store)
    try:
        await broker.create_queue("q", QueueSettings())
        killer = await asyncpg.connect(postgres.URL)
        killed = await killer.fetchval(
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = $1", store.application
        )
        await killer.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", killed)
        deadline = asyncio.get_running_loop().time() + 10
        while await killer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", killed):
            assert asyncio.get_running_loop().time() < deadline  # (the listener comes back anew)
            await asyncio.sleep(0.01)
        await killer.close()
        # The pool replaces the dead connection; at most the one request that meets it before
        # its socket's end has been read can notice (a 503, retry), never a later one.
        try:
            result = await broker.send("q", [NewMessage('"after"')])
        except StorageUnavailable:
            result = await broker.send("q", [NewMessage('"after"')])
        assert result.ids
    finally:
        await store.close()


def test_the_store_url_shown_carries_no_password_wherever_it_was_written():
    from mqd.store.postgres import public_url, split_url

    url, schema = split_url("postgresql://me:pw1@db.example:5433/mq?password=pw2&sslmode=require&schema=s1")
    shown = public_url(url, schema)
    assert "pw1" not in shown and "pw2" not in shown
    assert shown == "postgresql://me@db.example:5433/mq?sslmode=require&schema=s1"


async def test_an_import_into_a_queue_deleted_unbeknown_is_queue_not_found(two_nodes):
    importing, _ = two_nodes
    exported = [ExportedMessage("q", 1, '"x"', 0, 1.0, 0.0)]
    assert await importing.import_messages("first", exported) == 1
    store = importing.store
    await store._pool.execute(f"DELETE FROM {store.schema}.queues WHERE name = 'q'")  # no news of it
    with pytest.raises(QueueNotFound):  # not an internal error
        await importing.import_messages("second", exported)
