"""mq, the client library: its sync and asyncio twins, its errors, its streams, and the guide's
examples, against real mqd processes; its streams across a daemon killed and restarted."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mq
from mq import errors
from mqd import protocol

from .helpers import MqdProcess, free_port

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "client.md"


@pytest.fixture
def daemon(mqd):
    return mqd()


def test_the_guides_examples_run_as_written(daemon, tmp_path):
    """Every ```python block of docs/client.md, in order, against one real mqd."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 4
    for number, block in enumerate(blocks, start=1):
        script = tmp_path / f"example{number}.py"
        script.write_text(block.replace("http://127.0.0.1:8000", daemon.url))
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"example {number}:\n{result.stderr}"
        assert "Traceback" not in result.stderr
    assert (
        "1000 durable"
        in subprocess.run(
            [sys.executable, str(tmp_path / "example3.py")], capture_output=True, text=True, timeout=120
        ).stdout
    )


def test_every_error_code_has_its_exception():
    assert set(errors.BY_CODE) == set(protocol.ERROR_CODES)
    assert errors.BY_CODE["queue_not_found"] is mq.QueueNotFound


def test_the_sync_client_does_every_operation(daemon):
    with mq.Client(daemon.url) as client:
        (queue, created) = client.create_queue("dead")
        assert created and queue["name"] == "dead"
        assert client.create_queue("dead")[1] is False
        client.create_queue("work", max_attempts=1, dead_letter_queue="dead")
        first = client.send("work", {"n": mq.JsonNumber("0.1000000000000000000001")})
        assert client.send_many("work", [1, 2]) == [first + 1, first + 2]
        assert [m.content for m in client.peek("work", 5)][1:] == [1, 2]
        (leased,) = client.receive("work", lease=30)
        assert leased.id == first and leased.content["n"].text == "0.1000000000000000000001"
        assert leased.extend(60) > leased.lease_expires_at
        leased.release()
        (next_one,) = client.receive("work", lease=30)  # the first, delivered once, is dead-lettered
        assert next_one.content == 1 and client.queue("dead")["messages"] == 1
        assert client.redrive("dead") == {"moved": 1, "queues": {"work": 1}}
        assert client.purge("work") == 3
        assert client.status()["status"] == "ok" and "mq_build_info" in client.metrics()
        client.delete_queue("work")
        with pytest.raises(mq.QueueNotFound) as missing:
            client.queue("work")
        assert (missing.value.code, missing.value.status) == ("queue_not_found", 404)


async def test_the_async_client_is_the_same_shape(daemon):
    async with mq.AsyncClient(daemon.url) as client:
        await client.create_queue("q")
        message_id = await client.send("q", "hello")
        (message,) = await client.receive("q", lease=30)
        assert (message.id, message.content) == (message_id, "hello")
        await message.ack()
        with pytest.raises(mq.ReceiptNotFound):
            await message.ack()
        with pytest.raises(mq.InvalidRequest):
            await client.create_queue("bad name")


def test_a_token_and_a_unix_socket(mqd, tmp_path):
    socket_path = tmp_path / "mqd.sock"
    daemon = mqd("--unix", str(socket_path), env={"MQD_TOKEN": "s3cret"})
    with pytest.raises(mq.Unauthorized), mq.Client(daemon.url) as anonymous:
        anonymous.list_queues()
    with mq.Client(f"unix:{socket_path}", token="s3cret") as client:
        client.create_queue("q")
        client.send("q", 1)

    async def streamed() -> list[int]:
        async with (
            mq.AsyncClient(f"unix:{socket_path}", token="s3cret") as client,
            client.publisher() as publisher,
        ):
            return [await publisher.send("q", n) for n in range(3)]

    assert len(asyncio.run(streamed())) == 3


def test_a_url_that_is_not_mqds_is_refused_before_anything_is_sent():
    with pytest.raises(mq.BadUrl):
        mq.Client("127.0.0.1:8000")
    with pytest.raises(mq.BadUrl):
        mq.AsyncClient("ftp://127.0.0.1")


async def test_a_publisher_refused_for_one_message_fails_that_one_only(daemon):
    async with mq.AsyncClient(daemon.url) as client:
        await client.create_queue("q")
        async with client.publisher() as publisher:
            results = await asyncio.gather(
                publisher.send("q", "good"),
                publisher.send("q", "bad", delay=-1),
                publisher.send("q", "also good"),
                publisher.send("nope", "no queue"),
                return_exceptions=True,
            )
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert isinstance(results[1], mq.InvalidRequest) and isinstance(results[3], mq.QueueNotFound)
        assert [m.content for m in await client.receive("q", count=10)] == ["good", "also good"]


async def test_policies_from_the_async_client_and_a_publisher_on_a_stream(daemon):
    async with mq.AsyncClient(daemon.url) as client:
        await client.create_queue("audit")
        queue, _ = await client.create_queue("q", max_in_flight=2, message_ttl=600)
        assert (queue["max_in_flight"], queue["message_ttl"]) == (2, 600.0)
        async with client.publisher() as publisher:  # over a stream: publish frames
            await publisher.send("q", "low")
            await publisher.send("q", "first of g", group="g")
            await publisher.send("q", "second of g", group="g", priority=9)
            await publisher.send("q", "urgent", priority=9, ttl=60)
        received = await client.receive("q", count=10, lease=30)  # max_in_flight 2: two of four
        assert [(m.content, m.priority, m.group) for m in received] == [("urgent", 9, None), ("low", 0, None)]
        await received[0].ack()
        (next_one,) = await client.receive("q", count=10, lease=30)
        assert (next_one.content, next_one.group) == ("first of g", "g")  # its group's turn first
        assert (await client.update_queue("q", max_in_flight=None))["max_in_flight"] is None
        await client.bind_exchange("both", ["q", "audit"])
        copies = await client.publish("both", "to each", priority=3)
        assert set(copies) == {"q", "audit"}


# -- reconnecting ------------------------------------------------------------------------------------


def restartable(tmp_path: Path) -> MqdProcess:
    """An mqd on a port of its own, so that it can come back where its clients look for it."""
    return MqdProcess(tmp_path / "data", "--port", str(free_port())).start()


async def test_a_publisher_across_a_killed_daemon_loses_nothing_and_stores_nothing_twice(tmp_path):
    daemon = restartable(tmp_path)
    try:
        async with mq.AsyncClient(daemon.url) as client:
            await client.create_queue("q")
            async with client.publisher(window=50) as publisher:
                sends = [asyncio.ensure_future(publisher.send("q", n)) for n in range(2000)]
                while sum(s.done() for s in sends) < 300:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(daemon.kill)  # mid-stream: confirmed, in flight, waiting
                await asyncio.to_thread(daemon.start)
                ids = await asyncio.wait_for(asyncio.gather(*sends), 60)
            assert len(set(ids)) == 2000
            stored = []
            while batch := await client.receive("q", count=1000):
                stored += [m.content for m in batch]
        assert sorted(stored) == list(range(2000))  # every one, once
    finally:
        daemon.stop()


async def test_a_consumer_across_a_killed_daemon_gets_every_message(tmp_path):
    daemon = restartable(tmp_path)
    try:
        async with mq.AsyncClient(daemon.url) as client:
            await client.create_queue("q")
            await client.send_many("q", list(range(500)))
            seen: set[int] = set()
            killed = False
            async with client.consume("q", prefetch=20, lease=30) as consumer:
                async for message in consumer:
                    if len(seen) == 100 and not killed:
                        killed = True
                        await asyncio.to_thread(daemon.kill)
                        await asyncio.to_thread(daemon.start)
                    try:
                        await message.ack()
                        seen.add(message.content)
                    except mq.ReceiptNotFound:
                        pass  # its lease ended with the stream: it comes again
                    if len(seen) == 500:
                        break
        assert seen == set(range(500))
    finally:
        daemon.stop()
