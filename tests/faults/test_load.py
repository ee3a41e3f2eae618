"""Load: sustained traffic without errors or growing memory; a thousand idle long-polls served
exactly once; slow and half-open connections that must not hold up a well-behaved client.

The figures are recorded for docs/reliability.md; timings are asserted only in the full run
(MQ_FAULTS=full), on a quiet machine — in CI they are reported, not judged.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import statistics
import threading
import time

import aiohttp

from mq import Client

from ..helpers import MqdProcess
from .checker import History, check
from .conftest import FULL, scaled
from .workload import ConsumeConsumer, Producer, Target, drain

DURATION = scaled(15, 600)
SAMPLE_EVERY = scaled(1, 5)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_sustained_load_has_no_errors_and_flat_memory(tmp_path, figures):
    daemon = MqdProcess(tmp_path / "data").start()
    daemon.call("POST", "/queues", {"name": "q"})
    target, history = Target(daemon.url), History()
    stop_producing, stop_consuming = threading.Event(), threading.Event()
    producers = [Producer(target, "q", history, stop_producing, number=i, size=1000) for i in range(4)]
    consumers = [ConsumeConsumer(target, "q", history, stop_consuming) for _ in range(4)]
    samples = []
    try:
        for worker in producers + consumers:
            worker.start()
        started = time.monotonic()
        while time.monotonic() - started < DURATION:
            time.sleep(SAMPLE_EVERY)
            samples.append(rss_bytes(daemon.pid))
        stop_producing.set()
        for producer in producers:
            producer.join(30)
        drain(target, ["q"])
    finally:
        stop_producing.set()
        stop_consuming.set()
        for worker in producers + consumers:
            worker.join(30)
        daemon.stop()
    errors = [e for w in producers + consumers for e in w.errors]
    verdict = check(history)
    last_half = samples[len(samples) // 2 :]
    growth = max(last_half) - min(last_half)
    figures.update(
        seconds=DURATION,
        messages=verdict.acknowledged,
        messages_per_second=round(verdict.acknowledged / DURATION),
        errors=len(errors),
        rss_mib_first=round(samples[0] / 2**20, 1),
        rss_mib_last=round(samples[-1] / 2**20, 1),
        rss_growth_mib_second_half=round(growth / 2**20, 1),
        **{k: v for k, v in verdict.figures().items() if k in ("lost", "duplicated", "unexpected")},
    )
    assert errors == []
    assert verdict.lost == [] and verdict.duplicated == [] and verdict.unexpected == []
    if FULL:
        assert growth <= 0.1 * max(last_half), "memory kept growing under steady load"


async def _long_polls_then_sends(url: str, receivers: int) -> tuple[list, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def receive():
            async with session.get(f"{url}/queues/q/messages?wait=60") as response:
                return response.status, await response.json() if response.status == 200 else None

        waiting = [asyncio.ensure_future(receive()) for _ in range(receivers)]
        while True:
            async with session.get(f"{url}/status") as response:
                if (await response.json())["waiting_receivers"] >= receivers:
                    break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        items = [{"content": i} for i in range(receivers)]
        async with session.post(f"{url}/queues/q/messages", json={"messages": items}) as response:
            assert response.status == 201
        results = await asyncio.gather(*waiting)
        return results, time.monotonic() - started


def test_a_thousand_idle_long_polls_are_each_served_exactly_once(tmp_path, figures):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    daemon = MqdProcess(tmp_path / "data").start()
    try:
        daemon.call("POST", "/queues", {"name": "q"})
        results, seconds = asyncio.run(_long_polls_then_sends(daemon.url, 1000))
    finally:
        daemon.stop()
    assert all(status == 200 for status, _ in results)
    contents = sorted(body["content"] for _, body in results)
    assert contents == list(range(1000)), "a message was delivered twice or not at all"
    figures.update(receivers=1000, all_served_within_seconds=round(seconds, 3))
    if FULL:
        assert seconds < 1


def _fast_client_latency(url: str, requests: int = 200) -> float:
    with Client(url) as client:
        timings = []
        for i in range(requests):
            started = time.perf_counter()
            client.send("q", i)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _slow_and_half_open(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sockets = []
    for i in range(count):
        sock = socket.create_connection((host, int(port)))
        if i % 2:
            sock.sendall(b"POST /queues/q/messages HTTP/1.1\r\nHost: local")  # and never finishes
        sockets.append(sock)  # the others say nothing at all
    return sockets


def test_slow_and_half_open_connections_do_not_hold_up_a_fast_client(tmp_path, figures):
    daemon = MqdProcess(tmp_path / "data").start()
    try:
        daemon.call("POST", "/queues", {"name": "q"})
        alone = _fast_client_latency(daemon.url)
        sockets = _slow_and_half_open(daemon.url, 50)
        try:
            for sock in sockets[1::2]:
                sock.sendall(b"h")  # trickle: one more byte now and then
            crowded = _fast_client_latency(daemon.url)
        finally:
            for sock in sockets:
                sock.close()
        assert daemon.call("GET", "/status")[0] == 200
    finally:
        daemon.stop()
    ratio = crowded / alone
    figures.update(
        p50_alone_ms=round(alone * 1000, 3),
        p50_with_50_bad_connections_ms=round(crowded * 1000, 3),
        ratio=round(ratio, 2),
    )
    if FULL:
        assert ratio < 2
