"""The stream connection the Publisher and the Consumer are built on: one WebSocket to mqd,
numbered requests matched with their replies, and reconnecting with growing pauses
(docs/streams.md is the protocol; docs/client.md the guide).

Both reconnect by themselves, like aio-pika's robust connections: a stream that breaks is opened
again (``reconnecting``), a consumer subscribes again, and a publisher sends again whatever mqd
had not confirmed (publisher.py, consumer.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from .errors import ConnectionFailed, MqError, Unauthorized, error_of
from .messages import decode

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
