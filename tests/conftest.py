"""Fixtures shared by the whole suite: the app behind pytest-aiohttp's client, and real daemons."""

from __future__ import annotations

import pytest

from mqd import config as mqd_config
from mqd.app import create_app
from mqd.store.sqlite import SQLiteStore

from .helpers import MqdProcess


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def make_config(data_dir):
    def make(**settings):
        return mqd_config.Config(data_dir=data_dir, **settings)

    return make


@pytest.fixture
async def client(aiohttp_client, make_config):
    """The real application (real store in a temporary directory) behind a test client."""
    return await aiohttp_client(create_app(make_config()))


@pytest.fixture
async def store(data_dir):
    store = SQLiteStore(data_dir)
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
