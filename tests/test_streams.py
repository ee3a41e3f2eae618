"""GET /stream: the WebSocket protocol of docs/streams.md, through pytest-aiohttp's client
against the real application, on both stores."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from mqd import protocol
from mqd.app import create_app


async def create(client, name="q", **settings):
    response = await client.post("/queues", json={"name": name, **settings})
    assert response.status in (200, 201), await response.text()


class Frames:
    """A stream, read frame by frame: replies by seq, deliveries in order."""

    def __init__(self, websocket) -> None:
        self.websocket = websocket
        self.replies: dict[int, dict] = {}
        self.deliveries: list[dict] = []
        self.others: list[dict] = []
        self.seq = 0

    async def send(self, **frame) -> int:
        self.seq += 1
        await self.websocket.send_str(json.dumps({"seq": self.seq, **frame}))
        return self.seq

    async def request(self, **frame) -> dict:
        return await self.reply(await self.send(**frame))

    async def reply(self, seq: int) -> dict:
        while seq not in self.replies:
            await self._read()
        return self.replies.pop(seq)

    async def delivered(self, count: int, timeout: float = 10) -> list[dict]:
        """The next ``count`` messages delivered (across deliver frames)."""
        async with asyncio.timeout(timeout):
            while len(self.deliveries) < count:
                await self._read()
        taken, self.deliveries = self.deliveries[:count], self.deliveries[count:]
        return taken

    async def _read(self) -> None:
        message = await self.websocket.receive()
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame = json.loads(message.data)
        if frame["type"] in ("ok", "error"):
            self.replies[frame["seq"]] = frame
        elif frame["type"] == "deliver":
            self.deliveries += [{**m, "sub": frame["sub"]} for m in frame["messages"]]
        else:
            self.others.append(frame)


@pytest.fixture
async def stream(client):
    await create(client)
    websocket = await client.ws_connect(protocol.STREAM_PATH)
    yield Frames(websocket)
    await websocket.close()


async def receive(client, **params):
    response = await client.get("/queues/q/messages", params={k: str(v) for k, v in params.items()})
    return response.status, (await response.json() if response.status == 200 else None)


# -- publish -------------------------------------------------------------------------------------


async def test_a_publish_is_confirmed_with_its_id_and_is_then_there(client, stream):
    reply = await stream.request(type="publish", queue="q", content={"n": 1.50})
    assert reply["type"] == "ok" and isinstance(reply["id"], int)
    status, message = await receive(client)
    assert status == 200 and message["id"] == reply["id"]
    assert await (await client.get("/queues/q/messages?count=1")).read() == b""  # consumed


async def test_many_publishes_in_flight_are_each_confirmed_and_kept_in_order(client, stream, backend):
    seqs = [await stream.send(type="publish", queue="q", content=i) for i in range(300)]
    replies = [await stream.reply(seq) for seq in seqs]
    assert all(r["type"] == "ok" for r in replies)
    assert len({r["id"] for r in replies}) == 300
    _, body = await receive(client, count=300)
    contents = [m["content"] for m in body["messages"]]
    if backend == "sqlite":  # one batch commits at a time: in the order published
        assert contents == list(range(300))
    else:  # two batches may commit at once (docs/streams.md)
        assert sorted(contents) == list(range(300))


async def test_a_batch_publish_is_all_or_nothing_and_names_repeated_keys(client, stream):
    reply = await stream.request(
        type="publish", queue="q", messages=[{"content": "a", "key": "k"}, {"content": "b", "key": "k"}]
    )
    assert reply["ids"][0] == reply["ids"][1] and reply["duplicates"] == [1]
    refused = await stream.request(type="publish", queue="q", messages=[{"content": 1}, {"delay": -1}])
    assert refused["type"] == "error" and refused["code"] == "invalid_request"
    _, body = await receive(client, count=10)
    assert [m["content"] for m in body["messages"]] == ["a"]


async def test_a_refused_publish_fails_alone_and_the_stream_goes_on(client, stream):
    unknown = await stream.send(type="publish", queue="nope", content=1)
    bad_key = await stream.send(type="publish", queue="q", content=1, key="\ud800")
    good = await stream.send(type="publish", queue="q", content="kept")
    assert (await stream.reply(unknown))["code"] == "queue_not_found"
    assert (await stream.reply(bad_key))["code"] == "invalid_request"
    assert (await stream.reply(good))["type"] == "ok"
    assert (await receive(client))[1]["content"] == "kept"


async def test_a_repeated_key_is_confirmed_as_a_duplicate(stream):
    first = await stream.request(type="publish", queue="q", content=1, key="once")
    again = await stream.request(type="publish", queue="q", content=1, key="once")
    assert again == {"type": "ok", "seq": again["seq"], "id": first["id"], "duplicate": True}


# -- subscribe -------------------------------------------------------------------------------------


async def test_a_subscription_is_pushed_messages_as_they_arrive_up_to_its_credit(client, stream):
    reply = await stream.request(type="subscribe", queue="q", credit=2)
    assert reply["sub"] == reply["seq"]
    for i in range(3):
        await client.post("/queues/q/messages", json={"content": i})
    delivered = await stream.delivered(2)
    assert [m["content"] for m in delivered] == [0, 1] and "receipt" not in delivered[0]
    await asyncio.sleep(0.2)
    assert stream.deliveries == []  # no credit left: the third waits
    assert (await stream.request(type="credit", sub=reply["sub"], credit=5))["type"] == "ok"
    assert [m["content"] for m in await stream.delivered(1)] == [2]


async def test_leased_deliveries_are_acked_released_and_extended_on_the_stream(client, stream):
    sub = (await stream.request(type="subscribe", queue="q", lease=30, credit=3))["sub"]
    await client.post("/queues/q/messages", json={"messages": [{"content": i} for i in range(3)]})
    first, second, third = await stream.delivered(3)
    assert first["attempts"] == 1 and first["receipt"]
    assert (await stream.request(type="ack", receipt=first["receipt"]))["type"] == "ok"
    extended = await stream.request(type="extend", receipt=second["receipt"], lease=60)
    assert extended["lease_expires_at"] > second["lease_expires_at"]
    assert (await stream.request(type="release", receipt=third["receipt"]))["type"] == "ok"
    await stream.request(type="credit", sub=sub, credit=1)
    (again,) = await stream.delivered(1)
    assert (again["id"], again["attempts"]) == (third["id"], 2)
    stale = await stream.request(type="ack", receipt=first["receipt"])
    assert stale["code"] == "receipt_not_found"


async def test_a_receipt_not_held_by_this_stream_is_not_found(client, stream):
    await client.post("/queues/q/messages", json={"content": 1})
    _, leased = await receive(client, lease=30)
    reply = await stream.request(type="ack", receipt=leased["receipt"])
    assert reply["code"] == "receipt_not_found"


async def test_closing_a_stream_releases_its_leases_at_once(client, stream):
    await stream.request(type="subscribe", queue="q", lease=300, credit=5)
    await client.post("/queues/q/messages", json={"messages": [{"content": i} for i in range(3)]})
    held = await stream.delivered(3)
    await stream.websocket.close()
    async with asyncio.timeout(10):
        while (await (await client.get("/queues/q")).json())["ready"] < 3:
            await asyncio.sleep(0.02)  # not after the 300 s lease: at once
    _, body = await receive(client, count=10)
    # They were delivered (written to the stream), so that delivery counts: this is the second.
    assert [(m["id"], m["attempts"]) for m in body["messages"]] == [(m["id"], 2) for m in held]


async def test_a_subscription_of_a_deleted_queue_is_ended(client, stream):
    sub = (await stream.request(type="subscribe", queue="q", credit=1))["sub"]
    await client.delete("/queues/q")
    async with asyncio.timeout(10):
        while not stream.others:
            await stream._read()
    assert stream.others[0] == {
        "type": "ended",
        "sub": sub,
        "code": "queue_not_found",
        "error": stream.others[0]["error"],
    }


async def test_credit_beyond_the_limit_and_unknown_subscriptions_are_refused(stream):
    sub = (await stream.request(type="subscribe", queue="q", credit=protocol.MAX_CREDIT))["sub"]
    assert (await stream.request(type="credit", sub=sub, credit=1))["code"] == "invalid_request"
    assert (await stream.request(type="credit", sub=sub + 100, credit=1))["code"] == "subscription_not_found"
    assert (await stream.request(type="subscribe", queue="nope"))["code"] == "queue_not_found"


async def test_cancel_stops_deliveries(client, stream):
    sub = (await stream.request(type="subscribe", queue="q", credit=10))["sub"]
    assert (await stream.request(type="cancel", sub=sub))["type"] == "ok"
    await client.post("/queues/q/messages", json={"content": "stays"})
    await asyncio.sleep(0.2)
    assert stream.deliveries == [] and (await receive(client))[1]["content"] == "stays"


# -- frames that cannot be answered, and the upgrade ------------------------------------------------


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send_bytes(b"{}"), 1003),
        (lambda ws: ws.send_str("{not json"), 1007),
        (lambda ws: ws.send_str("[1, 2]"), 1008),
        (lambda ws: ws.send_str('{"type": "publish", "queue": "q", "content": 1}'), 1008),  # no seq
        (lambda ws: ws.send_str('{"type": "fly", "seq": 1}'), 1008),
        (lambda ws: ws.send_str('{"type": "ack", "seq": -1, "receipt": "1.ab"}'), 1008),
        (lambda ws: ws.send_str('{"seq": 1, "content": "' + "x" * (2 * 1024 * 1024) + '"}'), 1009),
    ],
    ids=["binary", "not-json", "not-an-object", "no-seq", "unknown-type", "bad-seq", "too-large"],
)
async def test_a_frame_that_cannot_be_answered_closes_the_stream_with_a_code_that_says_why(
    stream, send, code
):
    await send(stream.websocket)
    message = await stream.websocket.receive()
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == code, message


async def test_a_get_without_an_upgrade_is_426_with_a_code(client):
    response = await client.get(protocol.STREAM_PATH)
    assert response.status == 426 and (await response.json())["code"] == "upgrade_required"


async def test_a_web_page_of_another_site_cannot_open_a_stream(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(protocol.STREAM_PATH, headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403


async def test_a_stream_needs_the_token_as_every_request_does(store_url, aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(store=store_url, token="s3cret")))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(protocol.STREAM_PATH)
    assert refused.value.status == 401
    websocket = await client.ws_connect(protocol.STREAM_PATH, headers={"Authorization": "Bearer s3cret"})
    await websocket.send_str(json.dumps({"type": "subscribe", "seq": 1, "queue": "nope"}))
    assert json.loads((await websocket.receive()).data)["code"] == "queue_not_found"
    await websocket.close()


async def test_streams_beyond_the_limit_are_refused_before_the_upgrade(
    store_url, aiohttp_client, make_config
):
    client = await aiohttp_client(create_app(make_config(store=store_url, max_streams=2)))
    open_ones = [await client.ws_connect(protocol.STREAM_PATH) for _ in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(protocol.STREAM_PATH)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    await open_ones[0].close()
    async with asyncio.timeout(5):
        while True:  # its place is free once mqd has seen it close
            try:
                open_ones[0] = await client.ws_connect(protocol.STREAM_PATH)
                break
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.02)
    for websocket in open_ones:
        await websocket.close()
