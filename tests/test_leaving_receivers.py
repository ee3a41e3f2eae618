"""Receivers that leave: a message never goes to a client whose connection has closed.

Real mqd processes on both stores, and real sockets that close at each moment that matters:
while the receiver waits in line, while the store is taking messages for it (the store is held
up by a lock the test holds, the way a slow disk or a busy database would), and with one waiter
or many, for one message or several.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from . import postgres


@pytest.fixture
def daemon(mqd, store_url):
    started = mqd("--store", store_url) if store_url else mqd()
    started.store_url = store_url
    assert started.call("POST", "/queues", {"name": "q"})[0] == 201
    return started


def waiting(daemon) -> int:
    return daemon.call("GET", "/status")[1]["waiting_receivers"]


def returned(daemon) -> int:
    text = daemon.call("GET", "/metrics")[1]
    found = re.search(r'^mq_messages_returned_total\{queue="q"\} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.02)


def receive_path(lease=None, **params) -> str:
    if lease is not None:
        params["lease"] = lease
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return "/queues/q/messages" + (f"?{query}" if query else "")


async def start_request(daemon, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET on a real socket of our own, so the test decides when the client leaves."""
    address = urlsplit(daemon.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def leave(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def reply_status(reader: asyncio.StreamReader) -> int:
    return int((await asyncio.wait_for(reader.readline(), 10)).split()[1])


@contextlib.asynccontextmanager
async def store_held_up(daemon):
    """Hold the store's write lock, as a slow disk or a busy database would: every write waits."""
    if daemon.store_url is None:
        connection = sqlite3.connect(daemon.data_dir / "mq.sqlite3", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    import asyncpg

    schema = parse_qs(urlsplit(daemon.store_url).query)["schema"][0]
    connection = await asyncpg.connect(postgres.URL)
    try:
        async with connection.transaction():
            await connection.execute(f"LOCK TABLE {schema}.messages IN EXCLUSIVE MODE")
            yield
    finally:
        await connection.close()


@pytest.mark.parametrize("lease", [None, 30], ids=["consume", "lease"])
async def test_a_long_poll_whose_client_left_takes_no_message(daemon, lease):
    _, writer = await start_request(daemon, receive_path(lease, wait=60))
    await until(lambda: waiting(daemon) == 1)
    await leave(writer)
    await until(lambda: waiting(daemon) == 0)  # at once, not when its 60 s run out
    assert daemon.call("POST", "/queues/q/messages", {"content": "precious"})[0] == 201
    status, message, _ = daemon.call("GET", receive_path(lease))
    assert status == 200
    assert (message["content"], message["attempts"]) == ("precious", 1)


async def test_receivers_that_left_free_their_place_under_the_waiter_cap(mqd):
    daemon = mqd("--max-waiters", "2")
    daemon.call("POST", "/queues", {"name": "q"})
    gone = [await start_request(daemon, receive_path(wait=60)) for _ in range(2)]
    await until(lambda: waiting(daemon) == 2)
    for _, writer in gone:
        await leave(writer)
    await until(lambda: waiting(daemon) == 0)
    staying = [await start_request(daemon, receive_path(wait=60)) for _ in range(2)]
    await until(lambda: waiting(daemon) == 2)  # not refused with 503 for the dead ones
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": 1}, {"content": 2}]})
    assert [await reply_status(reader) for reader, _ in staying] == [200, 200]


@pytest.mark.parametrize("lease", [None, 30], ids=["consume", "lease"])
async def test_of_many_waiters_only_those_still_there_get_messages(daemon, lease):
    waiters = [await start_request(daemon, receive_path(lease, wait=60)) for _ in range(6)]
    await until(lambda: waiting(daemon) == 6)
    for _, writer in waiters[::2]:
        await leave(writer)
    await until(lambda: waiting(daemon) == 3)
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": i} for i in range(6)]})
    delivered = []
    for reader, writer in waiters[1::2]:
        assert await reply_status(reader) == 200
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
        delivered.append(json.loads(await reader.readexactly(length))["content"])
        await leave(writer)
    status, rest, _ = daemon.call("GET", receive_path(count=10))
    assert status == 200
    remaining = [m["content"] for m in rest["messages"]]
    assert [m["attempts"] for m in rest["messages"]] == [1] * 3
    assert sorted(delivered + remaining) == list(range(6))


async def test_a_long_poll_for_several_messages_whose_client_left_takes_none(daemon):
    _, writer = await start_request(daemon, receive_path(count=5, wait=60))
    await until(lambda: waiting(daemon) == 1)
    await leave(writer)
    await until(lambda: waiting(daemon) == 0)
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": i} for i in range(5)]})
    _, body, _ = daemon.call("GET", receive_path(count=10))
    assert [m["content"] for m in body["messages"]] == list(range(5))


@pytest.mark.parametrize("lease", [None, 30], ids=["consume", "lease"])
async def test_messages_taken_as_the_client_left_are_put_back_at_once(daemon, lease):
    message_id = daemon.call("POST", "/queues/q/messages", {"content": "precious"})[1]["id"]
    async with store_held_up(daemon):
        _, writer = await start_request(daemon, receive_path(lease, count=3))
        await asyncio.sleep(1)  # the request reaches its handler, which waits for the store
        await leave(writer)
    await until(lambda: returned(daemon) == 1)  # taken once the store could, then put back
    status, message, _ = daemon.call("GET", receive_path(lease))
    assert status == 200  # at once: not hidden until a 30 s lease runs out
    assert (message["id"], message["content"], message["attempts"]) == (message_id, "precious", 1)


@pytest.mark.parametrize("lease", [None, 30], ids=["consume", "lease"])
async def test_messages_whose_reply_could_not_be_written_are_put_back_at_once(daemon, lease):
    """The client leaves while its reply is being written: a reply of 36 MB that it stops
    reading after the status line, then resets. The messages were taken and could not all be
    handed over, so they are put back (and the lease's attempt is not counted)."""
    count = 40
    for i in range(count):
        assert daemon.call("POST", "/queues/q/messages", {"content": f"{i}:" + "x" * 900_000})[0] == 201
    reader, writer = await start_request(daemon, receive_path(lease, count=count))
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert await reply_status(reader) == 200  # mqd has begun to write it
    writer.transport.abort()  # unread data in the socket: the kernel answers with a reset
    await until(lambda: returned(daemon) == count)
    status, body, _ = daemon.call("GET", receive_path(count=count))
    assert status == 200
    assert sorted(int(m["content"].split(":")[0]) for m in body["messages"]) == list(range(count))
    assert {m["attempts"] for m in body["messages"]} == {1}
