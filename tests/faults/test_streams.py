"""Streams under faults: kill -9 under stream producers and consumers (the client library's
publishers and consumers, reconnecting by themselves), and hostile frames.

What must hold: no message a publisher was told is durable is lost; in lease mode every message
is delivered at least once; a publisher that sends again after a reconnect stores nothing twice
(one message id per value); a hostile client never crashes mqd, never gets an internal_error for
what it sent, and never makes mqd's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from pathlib import Path

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mq

from ..helpers import MqdProcess, free_port
from .conftest import scaled

KILLS = scaled(4, 30)
HOSTILE_SECONDS = scaled(0, 600)  # the full run keeps hostile clients coming for ten minutes
PUBLISHERS = 4
CONSUMERS = 2


async def test_kill_9_under_stream_producers_and_consumers_loses_nothing_and_stores_nothing_twice(
    tmp_path, figures
):
    daemon = MqdProcess(tmp_path / "data", "--port", str(free_port())).start()
    confirmed: set[tuple[int, int]] = set()
    deliveries: list[tuple[tuple[int, int], int]] = []  # (value, message id)
    stop = asyncio.Event()
    try:
        async with mq.AsyncClient(daemon.url, timeout=10) as client:
            await client.create_queue("s")

            async def publish(number: int) -> None:
                async with client.publisher(window=20) as publisher:
                    sequence = 0
                    while not stop.is_set():
                        batch = [(number, sequence + i) for i in range(10)]
                        sequence += 10
                        ids = await asyncio.gather(*(publisher.send("s", list(v)) for v in batch))
                        assert len(ids) == len(batch)
                        confirmed.update(batch)

            async def consume() -> None:
                async with client.consume("s", prefetch=10, lease=5) as consumer:
                    async for message in consumer:
                        deliveries.append((tuple(message.content), message.id))
                        with contextlib.suppress(mq.ReceiptNotFound):  # its stream broke: it comes again
                            await message.ack()

            workers = [asyncio.ensure_future(publish(n)) for n in range(PUBLISHERS)]
            workers += [asyncio.ensure_future(consume()) for _ in range(CONSUMERS)]
            rng = random.Random(20261202)
            restarts = []
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                await asyncio.to_thread(daemon.kill)
                started = time.monotonic()
                await asyncio.to_thread(daemon.start)
                restarts.append(time.monotonic() - started)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers[:PUBLISHERS]), 60)
            deadline = time.monotonic() + 60
            while not confirmed <= {value for value, _ in deliveries}:
                assert time.monotonic() < deadline, "the consumers did not get every confirmed message"
                await asyncio.sleep(0.1)
            for worker in workers[PUBLISHERS:]:
                worker.cancel()
            await asyncio.gather(*workers[PUBLISHERS:], return_exceptions=True)
    finally:
        daemon.stop()
    ids_of: dict[tuple[int, int], set[int]] = {}
    for value, message_id in deliveries:
        ids_of.setdefault(value, set()).add(message_id)
    stored_twice = [value for value, ids in ids_of.items() if len(ids) > 1]
    delivered_again = len(deliveries) - len(ids_of)
    figures.update(
        kills=KILLS,
        confirmed=len(confirmed),
        delivered=len(deliveries),
        redelivered=delivered_again,
        stored_twice=len(stored_twice),
        restart_max_seconds=round(max(restarts), 3),
    )
    assert len(confirmed) > 200, "too little traffic to prove anything"
    assert confirmed - set(ids_of) == set(), "a confirmed message was lost"
    assert stored_twice == [], "a publisher's resend stored a message twice"


# -- power cuts ----------------------------------------------------------------------------------------

POWER_CUTS = scaled(2, 10)


async def _stream_power_cut_round(fs, rng: random.Random) -> dict:
    """Publishers and a leasing consumer on streams; the power cut mid-work; kill, remount,
    restart, drain over HTTP. Every value a publisher was told is durable must come out."""
    data_dir = fs.mountpoint / "data"
    daemon = MqdProcess(data_dir, "--fsync", "always", "--min-free-bytes", "0").start()
    confirmed: set[tuple[int, int]] = set()
    delivered: set[tuple[int, int]] = set()
    daemon.call("POST", "/queues", {"name": "s"})
    async with mq.AsyncClient(daemon.url, timeout=5) as client:

        async def publish(number: int) -> None:
            async with client.publisher(window=20) as publisher:
                for sequence in range(10**9):
                    await publisher.send("s", [number, sequence])
                    confirmed.add((number, sequence))

        async def consume() -> None:
            async with client.consume("s", prefetch=10, lease=2) as consumer:
                async for message in consumer:
                    delivered.add(tuple(message.content))
                    with contextlib.suppress(mq.ReceiptNotFound):
                        await message.ack()

        workers = [asyncio.ensure_future(publish(n)) for n in range(3)] + [asyncio.ensure_future(consume())]
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await asyncio.to_thread(fs.cut_power)
        await asyncio.sleep(0.2)  # let requests run into the dead disk
        await asyncio.to_thread(daemon.kill)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    await asyncio.to_thread(fs.unmount)
    await asyncio.to_thread(fs.mount)
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body, _ = daemon.call("GET", "/queues/s/messages?count=1000")
            if status == 200:
                delivered.update(tuple(m["content"]) for m in body["messages"])
            elif daemon.call("GET", "/queues/s")[1]["messages"] == 0:
                break
            else:
                await asyncio.sleep(0.2)  # leases cut off by the power run out within seconds
    finally:
        daemon.stop()
    for path in data_dir.iterdir():  # a fresh store for the next round
        path.unlink()
    return {"confirmed": len(confirmed), "lost": len(confirmed - delivered)}


async def test_power_cuts_under_streams_lose_nothing_confirmed(loop_fs, figures):
    fs = loop_fs(128)
    rng = random.Random(20261202)
    rounds = [await _stream_power_cut_round(fs, rng) for _ in range(POWER_CUTS)]
    figures.update(
        rounds=POWER_CUTS,
        confirmed=sum(r["confirmed"] for r in rounds),
        lost=sum(r["lost"] for r in rounds),
    )
    assert figures["confirmed"] > 50 * POWER_CUTS, "too little traffic to prove anything"
    assert figures["lost"] == 0, rounds


# -- hostile frames ------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)


def _nested(children):
    return st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    )


ANY_JSON = st.recursive(SCALARS, _nested, max_leaves=6)
TYPES = st.sampled_from(
    ["publish", "subscribe", "credit", "cancel", "ack", "release", "extend", "fly", 7, None]
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "seq": st.one_of(st.integers(-5, 2**60), ANY_JSON),
        "queue": st.one_of(st.just("h"), st.just("nope"), ANY_JSON),
        "content": ANY_JSON,
        "messages": st.one_of(st.lists(st.fixed_dictionaries({"content": ANY_JSON}), max_size=3), ANY_JSON),
        "key": ANY_JSON,
        "delay": ANY_JSON,
        "lease": st.one_of(st.floats(0, 100), ANY_JSON),
        "credit": st.one_of(st.integers(-10, 5000), ANY_JSON),
        "sub": st.one_of(st.integers(0, 50), ANY_JSON),
        "receipt": st.one_of(st.just("1.00000000000000ff"), st.text(max_size=30), ANY_JSON),
    },
)


@st.composite
def hostile_frame(draw) -> tuple[str, object]:
    """("text", a JSON text), ("raw", any text), ("binary", bytes) or ("huge", a length)."""
    kind = draw(st.sampled_from(["frame", "frame", "frame", "frame", "raw", "binary", "huge"]))
    if kind == "frame":
        return "text", json.dumps({"type": draw(TYPES), **draw(FIELDS)})
    if kind == "raw":
        return "text", draw(st.text(max_size=60))
    if kind == "binary":
        return "binary", draw(st.binary(max_size=60))
    return "text", '{"type":"publish","seq":1,"queue":"h","content":"' + "x" * (1024 * 1024 + 10) + '"}'


async def _attack(url: str, frames: list[tuple[str, object]], peer_receipt: str) -> list[dict]:
    """Open a stream, subscribe (so it holds leases of its own), send the frames and another
    client's receipt; every reply mqd sends back."""
    replies = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "/stream", max_msg_size=0) as ws:
        await ws.send_json({"type": "subscribe", "seq": 10**6, "queue": "h", "lease": 30, "credit": 3})
        await ws.send_json({"type": "ack", "seq": 10**6 + 1, "receipt": peer_receipt})
        with contextlib.suppress(ConnectionError):  # mqd closed the stream, as a frame deserved
            for kind, payload in frames:
                if kind == "binary":
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)
            await ws.send_json({"type": "credit", "seq": 10**6 + 2, "sub": 10**6, "credit": 1})
        while not ws.closed:
            try:
                message = await ws.receive(timeout=0.3)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            replies.append(json.loads(message.data))
    return replies


def test_hostile_frames_never_crash_mqd_or_give_an_internal_error(tmp_path, figures):
    daemon = MqdProcess(tmp_path / "data").start()
    try:
        daemon.call("POST", "/queues", {"name": "h"})
        daemon.call("POST", "/queues/h/messages", {"messages": [{"content": i} for i in range(50)]})
        _, peer, _ = daemon.call("GET", "/queues/h/messages?lease=600")
        rss = []
        examples = {"n": 0}

        @settings(
            max_examples=scaled(60, 3000),
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(frames=st.lists(hostile_frame(), min_size=1, max_size=8))
        def attack(frames):
            replies = asyncio.run(_attack(daemon.url, frames, peer["receipt"]))
            examples["n"] += 1
            assert [r for r in replies if r.get("code") == "internal_error"] == [], replies
            if examples["n"] % 20 == 0:
                rss.append(int(Path(f"/proc/{daemon.pid}/status").read_text().split("VmRSS:")[1].split()[0]))

        started = time.monotonic()
        attack()
        while time.monotonic() - started < HOSTILE_SECONDS:
            attack()  # another round of generated examples
        assert daemon.process.poll() is None, "mqd died"
        status, body, _ = daemon.call("GET", "/status")
        assert status == 200 and body["status"] == "ok"
        log = daemon.log()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
        figures.update(
            examples=examples["n"],
            seconds=round(time.monotonic() - started),
            rss_kib_first=rss[0] if rss else None,
            rss_kib_middle=rss[len(rss) // 2] if rss else None,
            rss_kib_last=rss[-1] if rss else None,
        )
        if len(rss) >= 4:  # once warmed up, memory stays where it was
            settled = rss[len(rss) // 2]
            assert rss[-1] - settled < 20 * 1024, rss
    finally:
        daemon.stop()
