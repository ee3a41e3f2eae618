"""The Consumer: messages of one queue that mqd pushes on a stream of its own, with credit.

What a consumer held when its stream broke was released by mqd at once; acknowledging it then
raises ReceiptNotFound, and it will be delivered again (at least once). The consumer subscribes
again on a new stream by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any

from .errors import ApiError, MqError, ReceiptNotFound
from .messages import Message
from .streams import Stream, StreamLost, reconnecting

if TYPE_CHECKING:
    from .aio import AsyncClient


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
