"""The Publisher: sends on a stream of its own, many in flight, each answered once durable.

Every message it sends carries an idempotency key (the caller's, or one made here), so a message
sent again after a reconnect that mqd had in fact stored is recognised and not stored twice: a
reconnect neither loses nor duplicates.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from mqd.protocol import MAX_BATCH

from .errors import ApiError, ConnectionFailed, MqError
from .operations import message_body
from .streams import Stream, StreamLost, reconnecting

if TYPE_CHECKING:
    from .aio import AsyncClient


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
        priority: int = 0,
        group: str | None = None,
        ttl: float | None = None,
    ) -> int:
        """The message's id, once durable. Without ``key`` one is made (unless the publisher was
        made with ``keys=False``), so that a send repeated after a reconnect is not stored twice;
        a message without a key is sent again all the same, and may then be stored twice.
        ``priority``, ``group`` and ``ttl`` as for ``Client.send`` (docs/policies.md)."""
        if self._closed:
            raise MqError("the publisher is closed")
        if self._failure is not None:
            raise self._failure
        if key is None and self._make_keys:
            key = f"{self._keys}{next(self._made_keys)}"
        body = message_body(
            content, json_text=json_text, delay=delay, key=key, priority=priority, group=group, ttl=ttl
        )
        return await self._enqueue(queue, body, 0)

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
