"""W9: one, two and three mqd nodes on one PostgreSQL database (``--store postgresql://…``).

Sixteen producers, then sixteen consumers, spread evenly over the nodes. Besides messages per
second it reports PostgreSQL transactions per message (from pg_stat_database: each store call is
one round trip and one transaction): what the shared database pays for each message.
"""

from __future__ import annotations

import contextlib
import os
import uuid

from . import clients, servers, workloads
from .systems import System

DEFAULT_URL = os.environ.get("MQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _database(url: str, statement: str):
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


async def _transactions(url: str) -> int:
    return await _database(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")


async def unavailable(url: str = DEFAULT_URL) -> str | None:
    try:
        await _transactions(url)
    except Exception as exc:  # any failure: there is no PostgreSQL to measure against
        return f"no PostgreSQL at {url} ({exc})"
    return None


def _spread_over(nodes: list[servers.Server]) -> System:
    """A system whose adapters go to the nodes in turn, so the load is spread evenly."""
    turn = iter(range(10**9))
    return System(
        "mqd-nodes",
        "mqd on PostgreSQL",
        True,
        lambda _: None,
        lambda _server: clients.Http(nodes[next(turn) % len(nodes)].url),
    )


async def scaling(seconds: float, url: str = DEFAULT_URL) -> dict[int, dict[str, float]]:
    """{nodes: {"W2", "W3": msg/s, "W2 tx/msg", "W3 tx/msg", "W2 cpu", "W3 cpu": µs per message}}."""
    figures: dict[int, dict[str, float]] = {}
    for count in (1, 2, 3):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with contextlib.ExitStack() as stack:
            nodes = [
                stack.enter_context(
                    servers.mqd(
                        data_dir=stack.enter_context(servers.temporary_directory("node")),
                        store=f"{url}?schema={schema}",
                    )
                )
                for _ in range(count)
            ]
            total = nodes[0]
            total.pids = [node.pid for node in nodes]  # CPU of every node counts
            system = _spread_over(nodes)
            await workloads.prepare(system, total)
            before = await _transactions(url)
            w2 = await workloads.many_producers(system, total, seconds)
            w2_tx = (await _transactions(url) - before) / max(1.0, w2.rate * seconds)
            backlog = int(max(500, min(40_000, w2.rate * seconds)))
            await workloads.preload(system, total, backlog)
            before = await _transactions(url)
            w3 = await workloads.many_consumers(system, total, 0, seconds * 3)
            w3_tx = (await _transactions(url) - before) / max(1.0, w3.rate * seconds * 3)
            figures[count] = {
                "W2": w2.rate,
                "W3": w3.rate,
                "W2 tx/msg": w2_tx,
                "W3 tx/msg": w3_tx,
                "W2 cpu": w2.cpu_us,
                "W3 cpu": w3.cpu_us,
            }
        await drop_schema(schema, url)
    return figures


async def drop_schema(schema: str, url: str = DEFAULT_URL) -> None:
    await _database(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
