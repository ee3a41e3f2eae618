"""Fixtures shared by the whole suite: the app behind pytest-aiohttp's client, and real daemons."""

from __future__ import annotations

import pytest

from mqd import config as mqd_config
from mqd.app import create_app
from mqd.store.sqlite import SQLiteStore

try:
    from mqd.store.postgres import PostgresStore
except ImportError:  # asyncpg is missing: the PostgreSQL tests skip, saying so
    PostgresStore = None

from . import postgres
from .helpers import Mq, MqdProcess


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def make_config(data_dir):
    def make(**settings):
        return mqd_config.Config(data_dir=data_dir, **settings)

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Each store contract and API test runs on both stores: SQLite, and a real PostgreSQL."""
    if request.param == "postgresql" and postgres.unavailable():
        pytest.skip(postgres.unavailable())
    return request.param


@pytest.fixture
def store_url(backend):
    """None for SQLite; for PostgreSQL a URL with a schema of its own, dropped afterwards. Set up
    before the stores and apps that use it, so it is torn down after they have closed."""
    if backend == "sqlite":
        yield None
        return
    url, schema = postgres.new_schema_url()
    yield url
    postgres.drop_schema(schema)


@pytest.fixture
async def client(store_url, aiohttp_client, make_config):
    """The real application (a real store: SQLite in a temporary directory, or PostgreSQL)
    behind pytest-aiohttp's test client."""
    return await aiohttp_client(create_app(make_config(store=store_url)))


@pytest.fixture
async def store(store_url, data_dir):
    store = PostgresStore(store_url) if store_url else SQLiteStore(data_dir)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def mqd(tmp_path):
    """A factory of real mqd processes; every one is stopped at the end of the test."""
    started: list[MqdProcess] = []

    def start(*args: str, data_dir=None, wait: bool = True, env=None) -> MqdProcess:
        process = MqdProcess(data_dir or tmp_path / "data", *args, env=env)
        started.append(process)
        return process.start(wait=wait)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def mq(tmp_path):
    mq = Mq(tmp_path / "data")
    yield mq
    result = mq("stop", "--timeout", "10", "--force")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def running(mq):
    mq.start()
    assert mq("create", "q").returncode == 0
    return mq


@pytest.fixture
def postgres_nodes(tmp_path):
    """Three real mqd processes on one PostgreSQL schema of their own, dropped afterwards."""
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    started = [MqdProcess(tmp_path / f"node{i}", "--store", url).start() for i in range(3)]
    yield started
    for node in started:
        node.stop()
    postgres.drop_schema(schema)
