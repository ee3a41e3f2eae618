"""W10: how fast mqd says how it is: GET /status and GET /metrics with a large backlog waiting,
while sixteen producers keep sending (W2's load), on the SQLite store and on PostgreSQL.

Monitoring must not wait behind the work it watches: a health check that takes seconds under
load gets a busy daemon restarted, and a scrape that grows with the backlog gets slower exactly
when someone looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aiohttp

from . import nodes, servers, workloads
from .systems import BY_NAME

PROBE_EVERY_SECONDS = 0.05


async def _probe(url: str, path: str, until: float) -> list[float]:
    """Latencies of GET ``path`` in milliseconds, one request every PROBE_EVERY_SECONDS."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with session.get(url + path) as response:
                await response.read()
                assert response.status == 200, (path, response.status)
            latencies.append(1000 * (time.perf_counter() - started))
            await asyncio.sleep(PROBE_EVERY_SECONDS)
    return sorted(latencies)


async def _measure(server: servers.Server, backlog: int, seconds: float) -> dict[str, float]:
    system = BY_NAME["mqd"]
    await workloads.prepare(system, server)
    await workloads.preload(system, server, backlog)
    until = time.perf_counter() + seconds
    load = asyncio.ensure_future(workloads.many_producers(system, server, seconds))
    status, metrics = await asyncio.gather(
        _probe(server.url, "/status", until), _probe(server.url, "/metrics", until)
    )
    await load
    figures = {}
    for name, values in (("status", status), ("metrics", metrics)):
        figures[f"{name} p50"] = values[len(values) // 2]
        figures[f"{name} p99"] = values[min(len(values) - 1, int(len(values) * 0.99))]
        figures[f"{name} max"] = values[-1]
    return figures


async def latencies(backlog: int, seconds: float) -> dict[str, dict[str, float]]:
    """{"SQLite" | "PostgreSQL": {"status p50", "status p99", ..., "metrics max": ms}}."""
    found = {}
    with servers.temporary_directory("observe") as directory, servers.mqd(data_dir=directory) as server:
        found["SQLite"] = await _measure(server, backlog, seconds)
    if await nodes.unavailable() is None:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with contextlib.ExitStack() as stack:
            directory = stack.enter_context(servers.temporary_directory("observe-pg"))
            server = stack.enter_context(
                servers.mqd(data_dir=directory, store=f"{nodes.DEFAULT_URL}?schema={schema}")
            )
            found["PostgreSQL"] = await _measure(server, backlog, seconds)
        await nodes.drop_schema(schema)
    return found


def table(figures: dict[str, list[dict[str, float]]], backlog: int) -> str:
    """The W10 table from the runs' figures (medians of each)."""
    if not figures:
        return ""
    import statistics

    lines = [
        "",
        f"### W10 — /status and /metrics with {backlog:,} messages waiting, under W2's load",
        "",
        "| store | /status p50 / p99 / max ms | /metrics p50 / p99 / max ms |",
        "|---|---|---|",
    ]
    for store, runs in figures.items():
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        lines.append(
            f"| {store} | {m['status p50']:.1f} / {m['status p99']:.1f} / {m['status max']:.1f} "
            f"| {m['metrics p50']:.1f} / {m['metrics p99']:.1f} / {m['metrics max']:.1f} |"
        )
    return "\n".join(lines) + "\n"
