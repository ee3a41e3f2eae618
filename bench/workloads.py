"""The workloads, the same for every system: each drives adapters for a fixed time (or until a
preloaded backlog is drained) and reports messages per second and the server's CPU per message."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from .servers import Server, cpu_seconds
from .systems import System

PAYLOAD = "x" * 100  # 100-byte messages
PRODUCERS = CONSUMERS = 16
BATCH = 1000
BATCH_SENDERS = 4


@dataclasses.dataclass
class Measurement:
    rate: float  # messages per second
    cpu_us: float  # server CPU per message, microseconds
    p50_ms: float | None = None
    p99_ms: float | None = None


class _Meter:
    """Messages per second and the server's CPU per message over a stretch of work."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> _Meter:
        self.cpu = cpu_seconds(self.server)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu = cpu_seconds(self.server) - self.cpu

    def measurement(self, messages: int, **extra) -> Measurement:
        messages = max(messages, 1)
        return Measurement(messages / self.seconds, 1e6 * self.cpu / messages, **extra)


async def _adapters(system: System, server: Server, count: int) -> list:
    return [system.adapter(server) for _ in range(count)]


async def _close(adapters: list) -> None:
    await asyncio.gather(*(a.close() for a in adapters))


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


async def one_producer(system: System, server: Server, seconds: float) -> Measurement:
    """W1: one producer, each send waiting for its acknowledgement."""
    (adapter,) = await _adapters(system, server, 1)
    latencies = []
    try:
        with _Meter(server) as meter:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await adapter.send(PAYLOAD)
                latencies.append(time.perf_counter() - started)
    finally:
        await _close([adapter])
    latencies.sort()
    return meter.measurement(
        len(latencies), p50_ms=1000 * _percentile(latencies, 0.5), p99_ms=1000 * _percentile(latencies, 0.99)
    )


async def many_producers(system: System, server: Server, seconds: float) -> Measurement:
    """W2: sixteen concurrent producers."""
    adapters = await _adapters(system, server, PRODUCERS)
    sent = 0

    async def produce(adapter, deadline: float) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            await adapter.send(PAYLOAD)
            sent += 1

    try:
        with _Meter(server) as meter:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(produce(a, deadline) for a in adapters))
    finally:
        await _close(adapters)
    return meter.measurement(sent)


async def preload(system: System, server: Server, messages: int) -> None:
    """Fill the queue quickly (with the system's fastest enqueue) before a drain or a backlog test."""
    adapters = await _adapters(system, server, BATCH_SENDERS)
    batches = [min(BATCH, messages - start) for start in range(0, messages, BATCH)]

    async def fill(adapter, mine: list[int]) -> None:
        for size in mine:
            await adapter.send_batch([PAYLOAD] * size)

    try:
        await asyncio.gather(*(fill(a, batches[i::BATCH_SENDERS]) for i, a in enumerate(adapters)))
    finally:
        await _close(adapters)


async def many_consumers(system: System, server: Server, messages: int, seconds: float) -> Measurement:
    """W3: sixteen concurrent consumers draining ``messages`` (removed for good), for at most
    ``seconds``."""
    await preload(system, server, messages)
    adapters = await _adapters(system, server, CONSUMERS)
    received = 0

    async def consume(adapter, deadline: float) -> None:
        nonlocal received
        while time.perf_counter() < deadline and await adapter.receive():
            received += 1

    try:
        with _Meter(server) as meter:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(consume(a, deadline) for a in adapters))
    finally:
        await _close(adapters)
    return meter.measurement(received)


async def fastest_enqueue(system: System, server: Server, seconds: float) -> Measurement:
    """W4: the fastest enqueue the system offers (mqd: batches of 1,000), four senders."""
    adapters = await _adapters(system, server, BATCH_SENDERS)
    sent = 0

    async def fill(adapter, deadline: float) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            await adapter.send_batch([PAYLOAD] * BATCH)
            sent += BATCH

    try:
        with _Meter(server) as meter:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(fill(a, deadline) for a in adapters))
    finally:
        await _close(adapters)
    return meter.measurement(sent)


async def prepare(system: System, server: Server) -> None:
    adapter = system.adapter(server)
    try:
        await adapter.prepare()
    finally:
        await adapter.close()
