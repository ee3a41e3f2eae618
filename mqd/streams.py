"""Streams: GET /stream upgrades to a WebSocket that carries many requests and their replies,
publishes confirmed once durable and subscriptions pushed as messages arrive (docs/streams.md;
the frames are defined in frames.py).

Why: an HTTP request per message costs mqd far more than storing the message (a WebSocket frame
in and a frame out cost about a fifth of a minimal JSON POST), and a client that wants many
messages in flight needs many connections. On a stream, requests are numbered by the client
(``seq``) and answered when done, in any order, so a producer keeps a window of publishes in
flight and they share group commits with every other producer.

A stream is a client like any other: its requests go through the broker, with the same checks
and the same errors as HTTP's (the same codes, in ``error`` frames), behind the same guard (the
token and the browser checks happen on the upgrade request). One request's error fails that
request only; only a frame that cannot be answered at all closes the stream, with a close code
that says why. Flow control: mqd stops reading a stream whose requests in flight reach
STREAM_IN_FLIGHT (or STREAM_BYTES_IN_FLIGHT), so a fast producer is slowed by TCP, not by mqd's
memory; subscriptions deliver only what their credit allows (subscriptions.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from . import frames, jsontext, parsing, protocol, replies
from .appkeys import BROKER, CONFIG, STREAMS
from .broker import Broker
from .errors import (
    InternalError,
    InvalidArgument,
    MqError,
    QueueNotFound,
    ReceiptNotFound,
    SubscriptionNotFound,
    TooManyStreams,
)
from .model import Delivery
from .subscriptions import Held, Subscription

log = logging.getLogger("mqd.streams")

# Requests that wait for the store run as tasks of their own, so that many are in flight (and
# share commits); the others are answered in order as they are read.
STORE_BOUND = {"publish", "ack", "release", "extend"}


async def open_stream(request: web.Request) -> web.WebSocketResponse:
    """GET /stream: the upgrade. Refused with 426 without one, 503 beyond --max-streams."""
    config = request.app[CONFIG]
    streams = request.app[STREAMS]
    websocket = web.WebSocketResponse(
        heartbeat=protocol.STREAM_HEARTBEAT_SECONDS,
        max_msg_size=config.max_body_bytes,
        compress=False,  # messages are small and CPU is what a stream saves
    )
    if not websocket.can_prepare(request):
        raise web.HTTPUpgradeRequired(
            text=f"GET {protocol.STREAM_PATH} is a WebSocket: send Upgrade: websocket (see docs/streams.md).",
            headers={"Upgrade": "websocket"},
        )
    if len(streams) >= config.max_streams:
        raise TooManyStreams(f"Too many streams are open ({config.max_streams}); retry shortly.")
    await websocket.prepare(request)
    stream = Stream(websocket, request.app[BROKER])
    streams.add(stream)
    try:
        await stream.serve()
    finally:
        streams.discard(stream)
        stream.close_down()
    return websocket


async def close_all(app: web.Application) -> None:
    """On shutdown: every stream is told mqd is going away (1001), and reconnects elsewhere or
    later; what they held is given back."""
    await asyncio.gather(
        *(stream.close(frames.CLOSE_GOING_AWAY, "mqd is stopping") for stream in list(app[STREAMS])),
        return_exceptions=True,
    )


class Stream:
    """One client's stream: reads its frames, answers each request, delivers its subscriptions."""

    def __init__(self, websocket: web.WebSocketResponse, broker: Broker) -> None:
        self.websocket = websocket
        self.broker = broker
        self.held = Held()
        self.subscriptions: dict[int, Subscription] = {}
        self._tasks: set[asyncio.Task] = set()
        self._in_flight = 0
        self._bytes_in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    def open(self) -> bool:
        return not self.websocket.closed

    async def serve(self) -> None:
        async for message in self.websocket:
            if message.type == WSMsgType.TEXT:
                try:
                    await self._read(message.data)
                except frames.ProtocolViolation as violation:
                    await self.close(violation.close_code, str(violation))
                    return
                except Exception:  # mqd's own fault: this stream ends, saying so, mqd goes on
                    log.exception("a stream failed reading a frame")
                    await self.close(frames.CLOSE_INTERNAL, "mqd failed; see its log")
                    return
            elif message.type == WSMsgType.BINARY:
                await self.close(frames.CLOSE_UNSUPPORTED, "frames are JSON text, not binary")
                return
            else:  # an error aiohttp met reading (too large, not UTF-8): it has closed the stream
                return

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code=code, message=reason.encode()[:120])

    def close_down(self) -> None:
        """The stream is closed: end its subscriptions, then give back what it held (a task of
        the broker's, which the store waits for before it closes)."""
        for subscription in self.subscriptions.values():
            subscription.task.cancel()
        ending = [subscription.task for subscription in self.subscriptions.values()]
        self.subscriptions.clear()
        self.broker.track(self._give_back_after(ending))

    async def _give_back_after(self, ending: list[asyncio.Task]) -> None:
        await asyncio.gather(*ending, *self._tasks, return_exceptions=True)
        self.broker.return_leases(self.held.take_all())

    # -- reading requests ------------------------------------------------------------------------

    async def _read(self, text: str) -> None:
        try:
            frame = jsontext.decode(text)
        except ValueError as exc:
            raise frames.ProtocolViolation(frames.CLOSE_NOT_JSON, f"a frame is not JSON: {exc}") from None
        request, seq = frames.request_of(frame)
        if request.type not in STORE_BOUND:
            await self._answer(request, seq, frame, text)
            return
        while (
            self._in_flight >= protocol.STREAM_IN_FLIGHT
            or self._bytes_in_flight >= protocol.STREAM_BYTES_IN_FLIGHT
        ):
            self._drained.clear()
            await self._drained.wait()  # stop reading: the client's TCP window fills, it waits
        self._in_flight += 1
        self._bytes_in_flight += len(text)
        task = asyncio.ensure_future(self._answer(request, seq, frame, text))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, size=len(text)))

    def _finished(self, task: asyncio.Task, *, size: int) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        self._bytes_in_flight -= size
        self._drained.set()

    async def _answer(self, request: frames.Request, seq: int, frame: dict[str, Any], text: str) -> None:
        """Carry out one request and send its one reply: ok, or error with a code."""
        try:
            fields = frames.fields_of(request, frame)
            result = await HANDLERS[request.type](self, seq, fields, frame, text)
        except MqError as exc:
            await self._send(_refusal("error", "seq", seq, exc))
            return
        except Exception:
            log.exception("a %s request of a stream failed", request.type)
            await self._send(_refusal("error", "seq", seq, InternalError()))
            return
        await self._send(f'{{"type":"ok","seq":{seq}{result}}}')

    async def _send(self, text: str) -> bool:
        """Write a frame; False if the stream has closed meanwhile."""
        try:
            await self.websocket.send_str(text)
        except (ConnectionError, RuntimeError):  # closed or closing: its reader ends the stream
            return False
        return True

    # -- the requests: each returns what its ok reply carries, as JSON members ("" or ',"x":1') --

    async def _publish(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        body = {name: value for name, value in frame.items() if name in parsing.SEND_FIELDS}
        messages, batch = parsing.send_of(text, body)
        result = await self.broker.send(fields["queue"], messages)
        if batch:
            return "," + replies.ids_json(result.ids, result.duplicates)[1:-1]
        return f',"id":{result.ids[0]},"duplicate":true' if result.duplicates[0] else f',"id":{result.ids[0]}'

    async def _subscribe(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        if seq in self.subscriptions:
            raise InvalidArgument(f"This stream already has a subscription {seq}; number each request anew.")
        if len(self.subscriptions) >= protocol.MAX_SUBSCRIPTIONS:
            raise InvalidArgument(f"A stream has at most {protocol.MAX_SUBSCRIPTIONS} subscriptions.")
        await self.broker.queue(fields["queue"])  # QueueNotFound, answered to this request
        subscription = Subscription(
            seq,
            fields["queue"],
            fields.get("lease"),
            self.broker,
            self.held,
            self.open,
            self._deliver,
            self._ended,
        )
        subscription.grant(fields.get("credit", 0))
        self.subscriptions[seq] = subscription
        return f',"sub":{seq}'

    async def _credit(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        self._subscription(fields["sub"]).grant(fields["credit"])
        return ""

    async def _cancel(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        subscription = self._subscription(fields["sub"])
        del self.subscriptions[subscription.number]
        subscription.task.cancel()  # a receive under way gives back what it took
        return ""

    async def _ack(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        await self._settle(fields["receipt"], lambda queue, receipt: self.broker.ack(queue, receipt))
        return ""

    async def _release(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        delay = fields.get("delay", 0.0)
        await self._settle(
            fields["receipt"], lambda queue, receipt: self.broker.release(queue, receipt, delay)
        )
        return ""

    async def _extend(self, seq: int, fields: dict[str, Any], frame: dict[str, Any], text: str) -> str:
        receipt = fields["receipt"]
        queue = self.held.queue_of(receipt)
        try:
            expires_at = await self.broker.extend(queue, receipt, fields["lease"])
        except (ReceiptNotFound, QueueNotFound):
            self.held.drop(receipt)  # its lease ended meanwhile, or its queue is gone
            raise
        return f',"lease_expires_at":{expires_at!r}'

    async def _settle(self, receipt: str, settle: Callable[[str, str], Awaitable[object]]) -> None:
        """Ack or release a lease this stream holds; either way it holds it no more."""
        queue = self.held.queue_of(receipt)
        try:
            await settle(queue, receipt)
        except (ReceiptNotFound, QueueNotFound):
            self.held.drop(receipt)  # its lease ended meanwhile, or its queue is gone
            raise
        self.held.drop(receipt)  # (a store that failed leaves it held: it may be tried again)

    def _subscription(self, number: int) -> Subscription:
        subscription = self.subscriptions.get(number)
        if subscription is None:
            raise SubscriptionNotFound(number)
        return subscription

    # -- what subscriptions send ------------------------------------------------------------------

    async def _deliver(self, subscription: Subscription, deliveries: list[Delivery]) -> None:
        text = (
            f'{{"type":"deliver","sub":{subscription.number},"messages":['
            + ",".join(map(replies.delivery_json, deliveries))
            + "]}"
        )
        if not await self._send(text):  # never written: as if never taken
            for delivery in deliveries:
                if delivery.receipt is not None:
                    self.held.drop(delivery.receipt)
            self.broker.give_back(subscription.queue, deliveries)

    async def _ended(self, subscription: Subscription, error: MqError) -> None:
        self.subscriptions.pop(subscription.number, None)
        await self._send(_refusal("ended", "sub", subscription.number, error))


def _refusal(kind: str, field: str, number: int, error: MqError) -> str:
    """An error frame (kind "error", for request ``seq``) or an end (kind "ended", of ``sub``)."""
    return replies.dumps({"type": kind, field: number, "code": error.code, "error": str(error)})


HANDLERS = {
    "publish": Stream._publish,
    "subscribe": Stream._subscribe,
    "credit": Stream._credit,
    "cancel": Stream._cancel,
    "ack": Stream._ack,
    "release": Stream._release,
    "extend": Stream._extend,
}
