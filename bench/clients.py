"""One small adapter per system, all with the same interface, so one load generator drives them all.

``send`` returns once the system acknowledged the message (for the durable modes: once it is on
disk, where the system can promise that); ``receive`` removes one message for good (or returns
False if there was none); ``send_batch`` is the fastest enqueue the system offers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import aiohttp

QUEUE = "bench"


class Adapter(Protocol):
    async def prepare(self) -> None: ...  # create the queue (called once, before the workers)
    async def send(self, payload: str) -> None: ...
    async def send_batch(self, payloads: list[str]) -> None: ...
    async def receive(self) -> bool: ...
    async def close(self) -> None: ...


class Http:
    """mqd, the HTTP ceiling and the JSON-file service: the same routes."""

    def __init__(self, url: str, lease: bool = False, purge: bool = True) -> None:
        self.url = url
        self.lease = lease
        self.purge = purge  # the ceiling and the JSON-file service have no purge route
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))

    async def prepare(self) -> None:
        async with self.session.post(f"{self.url}/queues", json={"name": QUEUE}) as response:
            assert response.status in (200, 201), response.status
        if self.purge:
            async with self.session.delete(f"{self.url}/queues/{QUEUE}/messages") as response:
                assert response.status == 200, response.status

    async def send(self, payload: str) -> None:
        async with self.session.post(
            f"{self.url}/queues/{QUEUE}/messages", json={"content": payload}
        ) as response:
            assert response.status == 201, response.status
            await response.read()

    async def send_batch(self, payloads: list[str]) -> None:
        body = {"messages": [{"content": p} for p in payloads]}
        async with self.session.post(f"{self.url}/queues/{QUEUE}/messages", json=body) as response:
            assert response.status == 201, response.status
            await response.read()

    async def receive(self) -> bool:
        query = "?lease=30" if self.lease else ""
        async with self.session.get(f"{self.url}/queues/{QUEUE}/messages{query}") as response:
            if response.status == 204:
                return False
            assert response.status == 200, response.status
            message = await response.json()
        if self.lease:
            async with self.session.delete(
                f"{self.url}/queues/{QUEUE}/messages/{message['receipt']}"
            ) as response:
                assert response.status == 204, response.status
        return True

    async def close(self) -> None:
        await self.session.close()


class MqdStream:
    """mqd over streams, through the client library: a publisher per producer (its sends
    confirmed once durable; a batch is many sends in flight at once, coalesced by the publisher),
    a consumer per consumer (lease + ack each message, prefetch 10)."""

    def __init__(self, url: str) -> None:
        import mq

        self.url = url
        self.client = mq.AsyncClient(url)
        self.publisher = None
        self.consumer = None

    async def prepare(self) -> None:
        await self.client.create_queue(QUEUE)
        await self.client.purge(QUEUE)

    async def send(self, payload: str) -> None:
        if self.publisher is None:
            self.publisher = self.client.publisher()
        await self.publisher.send(QUEUE, payload)

    async def send_batch(self, payloads: list[str]) -> None:
        if self.publisher is None:
            self.publisher = self.client.publisher()
        await asyncio.gather(*(self.publisher.send(QUEUE, p) for p in payloads))

    async def receive(self) -> bool:
        if self.consumer is None:
            self.consumer = self.client.consume(QUEUE, prefetch=10, lease=30)
        try:
            message = await asyncio.wait_for(self.consumer.get(), 0.5)
        except TimeoutError:
            return False
        await message.ack()
        return True

    async def close(self) -> None:
        for stream in (self.publisher, self.consumer):
            if stream is not None:
                await stream.close()
        await self.client.close()


class Redis:
    """LPUSH / RPOP, the list-as-a-queue pattern."""

    def __init__(self, port: int) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis(host="127.0.0.1", port=port)

    async def prepare(self) -> None:
        await self.client.delete(QUEUE)

    async def send(self, payload: str) -> None:
        await self.client.lpush(QUEUE, payload)

    async def send_batch(self, payloads: list[str]) -> None:
        await self.client.lpush(QUEUE, *payloads)

    async def receive(self) -> bool:
        return await self.client.rpop(QUEUE) is not None

    async def close(self) -> None:
        await self.client.aclose()


class Beanstalkd:
    """put / reserve-with-timeout 0 + delete, over beanstalkd's text protocol (a dozen lines)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            for command in (f"use {QUEUE}", f"watch {QUEUE}", "ignore default"):
                self.writer.write(command.encode() + b"\r\n")
                await self.reader.readline()

    async def prepare(self) -> None:
        await self._connect()

    def _put(self, payload: str) -> bytes:
        data = payload.encode()
        return b"put 0 0 120 %d\r\n%s\r\n" % (len(data), data)

    async def send(self, payload: str) -> None:
        await self.send_batch([payload])

    async def send_batch(self, payloads: list[str]) -> None:
        await self._connect()
        self.writer.write(b"".join(self._put(p) for p in payloads))  # pipelined
        for _ in payloads:
            line = await self.reader.readline()
            assert line.startswith(b"INSERTED"), line

    async def receive(self) -> bool:
        await self._connect()
        self.writer.write(b"reserve-with-timeout 0\r\n")
        line = await self.reader.readline()
        if line.startswith(b"TIMED_OUT"):
            return False
        _, job, size = line.split()
        await self.reader.readexactly(int(size) + 2)
        self.writer.write(b"delete " + job + b"\r\n")
        assert (await self.reader.readline()).startswith(b"DELETED")
        return True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RabbitMQ:
    """A durable queue, persistent messages and publisher confirms (durable mode), or a transient
    queue without confirms (fast mode); basic.get + ack to consume."""

    def __init__(self, url: str, durable: bool) -> None:
        self.url = url
        self.durable = durable
        self.name = f"{QUEUE}-{'durable' if durable else 'fast'}"
        self.connection = self.channel = self.queue = None

    async def _connect(self) -> None:
        if self.connection is None:
            import aio_pika

            self.connection = await aio_pika.connect(self.url)
            self.channel = await self.connection.channel(publisher_confirms=self.durable)
            self.queue = await self.channel.declare_queue(self.name, durable=self.durable)

    async def prepare(self) -> None:
        await self._connect()
        await self.queue.purge()

    def _message(self, payload: str):
        import aio_pika

        mode = aio_pika.DeliveryMode.PERSISTENT if self.durable else aio_pika.DeliveryMode.NOT_PERSISTENT
        return aio_pika.Message(payload.encode(), delivery_mode=mode)

    async def send(self, payload: str) -> None:
        await self._connect()
        await self.channel.default_exchange.publish(self._message(payload), routing_key=self.name)

    async def send_batch(self, payloads: list[str]) -> None:
        await self._connect()
        exchange = self.channel.default_exchange
        await asyncio.gather(*(exchange.publish(self._message(p), routing_key=self.name) for p in payloads))

    async def receive(self) -> bool:
        await self._connect()
        message = await self.queue.get(no_ack=False, fail=False)
        if message is None:
            return False
        await message.ack()
        return True

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


class Nats:
    """JetStream: a stream on file (or memory) storage, publish waiting for its ack, a pull
    consumer that fetches and acks."""

    def __init__(self, url: str, storage: str) -> None:
        self.url = url
        self.storage = storage
        self.stream = f"BENCH_{storage.upper()}"
        self.subject = f"bench.{storage}"
        self.connection = self.js = self.subscription = None

    async def _connect(self) -> None:
        if self.connection is None:
            import nats

            self.connection = await nats.connect(self.url)
            self.js = self.connection.jetstream()

    async def prepare(self) -> None:
        from nats.js.api import StorageType

        await self._connect()
        storage = StorageType.FILE if self.storage == "file" else StorageType.MEMORY
        with contextlib.suppress(Exception):  # no such stream yet
            await self.js.delete_stream(self.stream)
        await self.js.add_stream(name=self.stream, subjects=[self.subject], storage=storage)

    async def send(self, payload: str) -> None:
        await self._connect()
        await self.js.publish(self.subject, payload.encode())

    async def send_batch(self, payloads: list[str]) -> None:
        await self._connect()
        await asyncio.gather(*(self.js.publish(self.subject, p.encode()) for p in payloads))

    async def receive(self) -> bool:
        import nats.errors

        await self._connect()
        if self.subscription is None:
            self.subscription = await self.js.pull_subscribe(
                self.subject, durable="bench", stream=self.stream
            )
        try:
            (message,) = await self.subscription.fetch(1, timeout=0.2)
        except nats.errors.TimeoutError:
            return False
        await message.ack_sync()
        return True

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
