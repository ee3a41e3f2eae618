"""Streams for programs: a Publisher that keeps many sends in flight, and a Consumer that mqd
pushes messages to (docs/streams.md is the protocol; docs/client.md the guide).

Both reconnect by themselves, with backoff, like aio-pika's robust connections: a stream that
breaks is opened again, a consumer subscribes again, and a publisher sends again whatever mqd had
not confirmed. Every message a publisher sends carries an idempotency key (its own, or one made
here), so a message sent again after a reconnect that mqd had in fact stored is recognised and
not stored twice: a reconnect neither loses nor duplicates. What a consumer held when its stream
broke was released by mqd at once; acknowledging it then raises ReceiptNotFound, and it will be
delivered again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from mqd.protocol import MAX_BATCH

from .errors import ApiError, ConnectionFailed, MqError, ReceiptNotFound, Unauthorized, error_of
from .messages import Message, decode
from .operations import message_body

if TYPE_CHECKING:
    from .aio import AsyncClient

log = logging.getLogger("mq.streams")

FIRST_RETRY_SECONDS = 0.05
LAST_RETRY_SECONDS = 5.0


class StreamLost(MqError):
    """The stream broke; what was in flight on it is sent again on the next."""

    code = "stream_lost"


class Stream:
    """One WebSocket to mqd: numbered requests matched with their replies, deliveries handed to
    ``on_deliver(sub, messages)``, ends of subscriptions to ``on_ended(sub, error)``."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse, on_deliver=None, on_ended=None) -> None:
        self.websocket = websocket
        self._on_deliver = on_deliver
        self._on_ended = on_ended
        self._replies: dict[int, asyncio.Future] = {}
        self._numbers = itertools.count(1)
        self.lost = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, client: AsyncClient, **handlers: Any) -> Stream:
        try:
            websocket = await client.session().ws_connect(client.stream_url(), max_msg_size=0, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as exc:
            raise error_of(exc.status, None, f"mqd refused the stream ({exc.status} {exc.message})") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise ConnectionFailed(client.url, str(exc) or type(exc).__name__) from None
        return cls(websocket, **handlers)

    async def request(self, frame: str, seq: int) -> asyncio.Future:
        """Send a request (``frame`` is its JSON text, numbered ``seq``); the future of its ok
        reply, or of ApiError / StreamLost. Sending waits while the socket's buffer is full."""
        future = asyncio.get_running_loop().create_future()
        if self.lost.done():
            future.set_exception(StreamLost("the stream is closed"))
            return future
        self._replies[seq] = future
        try:
            await self.websocket.send_str(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self._lose()
        return future

    def next_seq(self) -> int:
        return next(self._numbers)

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        seq = self.next_seq()
        return await (await self.request(json.dumps({"type": kind, "seq": seq, **fields}), seq))

    async def close(self) -> None:
        await self.websocket.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for message in self.websocket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = decode(message.data)
                kind = frame.get("type")
                if kind in ("ok", "error"):
                    future = self._replies.pop(frame.get("seq"), None)
                    if future is not None and not future.done():
                        if kind == "ok":
                            future.set_result(frame)
                        else:
                            future.set_exception(error_of(None, frame, "mqd refused the request"))
                elif kind == "deliver" and self._on_deliver is not None:
                    self._on_deliver(frame["sub"], frame["messages"])
                elif kind == "ended" and self._on_ended is not None:
                    self._on_ended(frame["sub"], error_of(None, frame, "mqd ended the subscription"))
        finally:
            self._lose()

    def _lose(self) -> None:
        if not self.lost.done():
            close_code = self.websocket.close_code
            self.lost.set_result(close_code)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(StreamLost("the stream broke before mqd answered"))
        self._replies.clear()


async def reconnecting(client: AsyncClient, closed: Callable[[], bool], **handlers: Any) -> Stream | None:
    """A new stream, trying again with growing pauses while mqd cannot be reached or refuses for
    a while; None once ``closed()``. A refusal that waiting cannot cure (a wrong token) raises."""
    pause = FIRST_RETRY_SECONDS
    while not closed():
        try:
            return await Stream.open(client, **handlers)
        except Unauthorized:
            raise
        except MqError as exc:
            log.warning("stream to %s: %s; trying again in %.2g s", client.url, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_RETRY_SECONDS)
    return None


# -- publishing ------------------------------------------------------------------------------------


class _Outgoing:
    __slots__ = ("alone", "body", "future", "items", "number", "queue", "resend")

    def __init__(
        self, number: int, queue: str, body: str, future: asyncio.Future, items: int = 0, resend: bool = True
    ) -> None:
        self.number = number  # its place in the order of sends
        self.queue = queue
        self.body = body  # '{"content":...,"key":...}', or a batch's items joined by commas
        self.future = future
        self.items = items  # 0: one message; n: a batch of n, sent and confirmed as one
        self.alone = bool(items)  # a batch, or a message a batch refused: sent in a frame of its own
        self.resend = resend  # after a broken stream: sent again (it has keys), or failed


class Publisher:
    """Sends on a stream of its own: ``await publisher.send(queue, content)`` returns the id once
    mqd has the message durably, and many sends may be awaited at once (up to ``window``
    unconfirmed): concurrent sends to one queue travel together, in batches of up to 1000."""

    def __init__(self, client: AsyncClient, *, window: int = 1000, keys: bool = True) -> None:
        self._client = client
        self._make_keys = keys
        self._room = asyncio.Semaphore(window)
        self._waiting: deque[_Outgoing] = deque()
        self._wake = asyncio.Event()
        self._unconfirmed = 0
        self._outstanding: set[_Outgoing] = set()  # sent or waiting, not yet answered
        self._all_confirmed = asyncio.Event()
        self._all_confirmed.set()
        self._keys = f"mq-{secrets.token_hex(8)}-"
        self._numbers = itertools.count(1)
        self._made_keys = itertools.count(1)
        self._closed = False
        self._runner: asyncio.Task | None = None
        self._failure: MqError | None = None

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def send(
        self,
        queue: str,
        content: Any = None,
        *,
        json_text: str | None = None,
        delay: float = 0,
        key: str | None = None,
    ) -> int:
        """The message's id, once durable. Without ``key`` one is made (unless the publisher was
        made with ``keys=False``), so that a send repeated after a reconnect is not stored twice;
        a message without a key is sent again all the same, and may then be stored twice."""
        if self._closed:
            raise MqError("the publisher is closed")
        if self._failure is not None:
            raise self._failure
        if key is None and self._make_keys:
            key = f"{self._keys}{next(self._made_keys)}"
        return await self._enqueue(queue, message_body(content, json_text=json_text, delay=delay, key=key), 0)

    async def send_batch(self, queue: str, items: list[str], *, resend: bool = False) -> list[int]:
        """Send ``items`` (each a message's JSON, as mq.operations.message_body writes it) as one
        batch, all or nothing; their ids. A batch counts as one in the window. If the stream
        breaks before mqd confirms it, ConnectionFailed: mqd may or may not have stored it. With
        ``resend`` it is sent again instead, which is right only when every item has a key of its
        own (keys cost mqd a lookup and an index entry each: a batch without them is 2.5 times
        cheaper to store)."""
        if self._closed:
            raise MqError("the publisher is closed")
        if self._failure is not None:
            raise self._failure
        return await self._enqueue(queue, ",".join(items), len(items), resend)

    async def _enqueue(self, queue: str, body: str, items: int, resend: bool = True) -> Any:
        async with self._room:
            future = asyncio.get_running_loop().create_future()
            outgoing = _Outgoing(next(self._numbers), queue, body, future, items, resend)
            self._unconfirmed += 1
            self._all_confirmed.clear()
            self._waiting.append(outgoing)
            self._outstanding.add(outgoing)
            self._wake.set()
            if self._runner is None:
                self._runner = asyncio.ensure_future(self._run())
            try:
                return await outgoing.future
            finally:
                self._outstanding.discard(outgoing)
                self._unconfirmed -= 1
                if not self._unconfirmed:
                    self._all_confirmed.set()

    async def close(self) -> None:
        """Wait until every send is confirmed (or refused), then close the stream."""
        await self._all_confirmed.wait()
        self._closed = True
        self._wake.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while not self._closed:
                stream = await reconnecting(self._client, lambda: self._closed)
                if stream is None:
                    return
                try:
                    await self._send_on(stream)
                finally:
                    await stream.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refusal reconnecting cannot cure: every send hears of it
            self._failure = exc if isinstance(exc, MqError) else MqError(f"the publisher failed: {exc!r}")
            self._waiting.clear()
            for outgoing in list(self._outstanding):
                if not outgoing.future.done():
                    outgoing.future.set_exception(self._failure)

    async def _send_on(self, stream: Stream) -> None:
        in_flight: dict[int, list[_Outgoing]] = {}
        while not stream.lost.done() and not (self._closed and not self._waiting):
            if not self._waiting:
                await _first_of(self._wake, stream.lost)
                self._wake.clear()
                continue
            batch = self._take_batch()
            seq = stream.next_seq()
            in_flight[seq] = batch
            reply = await stream.request(_publish_frame(seq, batch), seq)
            reply.add_done_callback(functools.partial(self._confirmed, in_flight, seq))
        # The stream broke: what it did not confirm goes again, in the order it was sent (but
        # batches without keys, whose fate nobody can tell).
        unconfirmed = [o for batch in in_flight.values() for o in batch if not o.future.done()]
        for outgoing in unconfirmed:
            if not outgoing.resend:
                broke = ConnectionFailed(self._client.url, "the stream broke before mqd confirmed the batch")
                outgoing.future.set_exception(broke)
        again = sorted((o for o in unconfirmed if o.resend), key=lambda o: o.number)
        self._waiting.extendleft(reversed(again))

    def _take_batch(self) -> list[_Outgoing]:
        first = self._waiting.popleft()
        batch = [first]
        if first.alone:
            return batch
        while (
            self._waiting
            and len(batch) < MAX_BATCH
            and self._waiting[0].queue == first.queue
            and not self._waiting[0].alone
        ):
            batch.append(self._waiting.popleft())
        return batch

    def _confirmed(self, in_flight: dict[int, list[_Outgoing]], seq: int, reply: asyncio.Future) -> None:
        if reply.cancelled() or isinstance(reply.exception(), StreamLost):
            return  # left in flight: sent again on the next stream
        batch = in_flight.pop(seq)
        error = reply.exception()
        if error is None:
            frame = reply.result()
            if batch[0].items:
                if not batch[0].future.done():
                    batch[0].future.set_result(frame["ids"])
                return
            for outgoing, message_id in zip(batch, frame.get("ids") or [frame["id"]], strict=True):
                if not outgoing.future.done():
                    outgoing.future.set_result(message_id)
        elif len(batch) > 1 and isinstance(error, ApiError) and error.code == "invalid_request":
            for outgoing in reversed(batch):  # one bad message refuses a batch: each goes alone
                outgoing.alone = True
                self._waiting.appendleft(outgoing)
            self._wake.set()
        else:
            for outgoing in batch:
                if not outgoing.future.done():
                    outgoing.future.set_exception(error)


async def _first_of(event: asyncio.Event, future: asyncio.Future) -> None:
    """Until ``event`` is set or ``future`` is done."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiting, future], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


def _publish_frame(seq: int, batch: list[_Outgoing]) -> str:
    queue = json.dumps(batch[0].queue)
    if batch[0].items:
        return f'{{"type":"publish","seq":{seq},"queue":{queue},"messages":[{batch[0].body}]}}'
    if len(batch) == 1:
        return f'{{"type":"publish","seq":{seq},"queue":{queue},{batch[0].body[1:]}'
    return f'{{"type":"publish","seq":{seq},"queue":{queue},"messages":[{",".join(o.body for o in batch)}]}}'


# -- consuming -------------------------------------------------------------------------------------


class Consumer:
    """Messages of one queue as mqd pushes them (``async for message in consumer``), at most
    ``prefetch`` owed at a time. With ``lease`` each is leased: ``await message.ack()`` (or
    release, extend) on this stream, and credit for the next comes as messages are settled; with
    ``lease=None`` each is removed as delivered (at most once) and credit comes as they are taken.
    """

    def __init__(
        self, client: AsyncClient, queue: str, *, prefetch: int = 100, lease: float | None = 30.0
    ) -> None:
        if not 1 <= prefetch <= 1000:
            raise ValueError("prefetch must be from 1 to 1000")
        self._client = client
        self.queue = queue
        self.prefetch = prefetch
        self.lease = lease
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        self._stream: Stream | None = None
        self._sub: int | None = None
        self._owed_back = 0  # settled (or taken) since credit was last granted
        self._closed = False
        self._runner: asyncio.Task | None = None
        self._grants: set[asyncio.Task] = set()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        return await self.get()

    async def get(self) -> Message:
        """The next message (waiting for one)."""
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())
        item = await self._inbox.get()
        if isinstance(item, BaseException):
            self._inbox.put_nowait(item)  # every later get hears of it too
            raise item
        if self.lease is None:
            self._credit_back()
        return item

    async def close(self) -> None:
        """Close the stream: whatever it held leased is released by mqd at once."""
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while not self._closed:
                stream = await reconnecting(
                    self._client, lambda: self._closed, on_deliver=self._delivered, on_ended=self._ended
                )
                if stream is None:
                    return
                self._stream, self._owed_back = stream, 0
                try:
                    fields = {"queue": self.queue, "credit": self.prefetch}
                    if self.lease is not None:
                        fields["lease"] = self.lease
                    self._sub = (await stream.call("subscribe", **fields))["sub"]
                    await stream.lost
                except StreamLost:
                    pass
                self._drop_undelivered()  # mqd released them when the stream broke
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no such queue, a wrong token: the consumer cannot go on, and says so
            self._inbox.put_nowait(exc)

    def _delivered(self, sub: int, messages: list[dict[str, Any]]) -> None:
        settle = functools.partial(self._settle, self._stream)  # on the stream that delivered them
        for data in messages:
            self._inbox.put_nowait(Message(self.queue, data, settle))

    def _ended(self, sub: int, error: ApiError) -> None:
        self._inbox.put_nowait(error)

    def _drop_undelivered(self) -> None:
        kept = []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, BaseException):
                kept.append(item)
        for item in kept:
            self._inbox.put_nowait(item)

    async def _settle(self, stream: Stream, how: str, message: Message, *args: Any) -> Any:
        if stream is not self._stream or stream.lost.done():
            raise _lease_ended(message)
        fields: dict[str, Any] = {"receipt": message.receipt}
        if how == "release" and args and args[0]:
            fields["delay"] = args[0]
        if how == "extend":
            fields["lease"] = args[0]
        try:
            reply = await stream.call(how, **fields)
        except StreamLost:
            raise _lease_ended(message) from None
        except ReceiptNotFound:
            if how != "extend":
                self._credit_back()  # settled all the same: its lease had run out
            raise
        if how != "extend":
            self._credit_back()
        return reply.get("lease_expires_at")

    def _credit_back(self) -> None:
        """One more message settled (or taken): grant credit back in handfuls, not one by one."""
        self._owed_back += 1
        if (
            self._owed_back >= max(1, self.prefetch // 2)
            and self._stream is not None
            and self._sub is not None
        ):
            credit, self._owed_back = self._owed_back, 0
            grant = asyncio.ensure_future(self._grant(self._stream, credit))
            self._grants.add(grant)
            grant.add_done_callback(self._grants.discard)

    async def _grant(self, stream: Stream, credit: int) -> None:
        with contextlib.suppress(MqError):  # the stream broke: the next subscription has full credit
            await stream.call("credit", sub=self._sub, credit=credit)


def _lease_ended(message: Message) -> ReceiptNotFound:
    return ReceiptNotFound(
        f"the lease of message {message.id} ended with the stream that delivered it; "
        "it may be delivered again",
        code="receipt_not_found",
    )
