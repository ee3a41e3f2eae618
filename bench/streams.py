"""The streams' own figures, on mqd alone: W4s, one producer keeping 1,000 sends in flight on one
stream; and 1,000 idle streams, what they cost in memory and whether an HTTP request still gets
through quickly beside them."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from . import servers
from .clients import QUEUE, MqdStream
from .workloads import PAYLOAD, _Meter

IN_FLIGHT = 1000
IDLE_STREAMS = 1000


async def window(server: servers.Server, seconds: float, keys: bool = True) -> float:
    """W4s: messages per second, one publisher with IN_FLIGHT sends awaited at once (with the
    idempotency keys a publisher gives every message by default, or without)."""
    adapter = MqdStream(server.url)
    await adapter.prepare()
    adapter.publisher = adapter.client.publisher(window=IN_FLIGHT, keys=keys)
    sent = 0

    async def keep_sending(deadline: float) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            await adapter.publisher.send(QUEUE, PAYLOAD)
            sent += 1

    try:
        with _Meter(server) as meter:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(keep_sending(deadline) for _ in range(IN_FLIGHT)))
    finally:
        await adapter.close()
    return meter.measurement(sent).rate


async def idle(server: servers.Server) -> dict[str, float]:
    """RSS added by IDLE_STREAMS open streams, each subscribed with credit to an empty queue, and
    GET /status latency beside them (milliseconds, median and worst of 50)."""
    before = servers.rss_bytes(server.pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.post(f"{server.url}/queues", json={"name": "idle"}):
            pass
        streams = []
        for number in range(IDLE_STREAMS):
            websocket = await session.ws_connect(f"{server.url}/stream")
            await websocket.send_json({"type": "subscribe", "seq": number, "queue": "idle", "credit": 10})
            streams.append(websocket)
        for websocket in streams:
            await websocket.receive()  # its ok
        after = servers.rss_bytes(server.pid)
        latencies = []
        for _ in range(50):
            started = time.perf_counter()
            async with session.get(f"{server.url}/status") as response:
                await response.read()
            latencies.append(1000 * (time.perf_counter() - started))
        await asyncio.gather(*(websocket.close() for websocket in streams))
    return {
        "idle_streams_rss_mib": (after - before) / 2**20,
        "idle_streams_status_p50_ms": statistics.median(latencies),
        "idle_streams_status_max_ms": max(latencies),
    }
