"""GET /metrics in the Prometheus text format (0.0.4), written by hand: a few counters and
histograms do not need a client library.

What is measured: requests by route, method and status with a latency histogram (a middleware);
store commits, their latency and how many operations each carried (group commit at work); and,
at scrape time, every queue's depth by state and its traffic counters from the broker.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Iterable

from aiohttp import web

from . import __version__
from .broker import Broker
from .errors import MqError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Counts per bucket; observed from one thread at a time (the event loop, or the store's)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> Iterable[str]:
        cumulative = 0
        prefix = f"{labels}," if labels else ""
        suffix = f"{{{labels}}}" if labels else ""
        for bound, count in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            cumulative += count
            yield f'{name}_bucket{{{prefix}le="{bound}"}} {cumulative}'
        yield f"{name}_sum{suffix} {self.sum:.6f}"
        yield f"{name}_count{suffix} {cumulative}"


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Everything mqd counts; one per application."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        self.commit_operations = Histogram(BATCH_BUCKETS)

    def observe_commit(self, seconds: float, operations: int) -> None:
        """Called by the store after each commit (from its own thread)."""
        self.commit_latency.observe(seconds)
        self.commit_operations.observe(operations)

    def commits(self) -> dict[str, float]:
        """Totals since start: a reader of two samples gets commits per second, their mean
        latency and operations per commit over the interval (the console does)."""
        return {
            "count": sum(self.commit_latency.counts),
            "operations": int(self.commit_operations.sum),
            "seconds": round(self.commit_latency.sum, 6),
        }

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        resource = request.match_info.route.resource
        key = (resource.canonical if resource is not None else "unmatched", request.method)
        self.requests[(*key, status)] += 1
        histogram = self.latency.get(key)
        if histogram is None:
            histogram = self.latency[key] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    async def render(self, broker: Broker) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("mq_build_info", "gauge", "The running mqd's version.")
        out.append(f'mq_build_info{{version="{__version__}"}} 1')
        family("mq_uptime_seconds", "gauge", "Seconds since mqd started.")
        out.append(f"mq_uptime_seconds {broker.clock() - broker.started_at:.3f}")
        family("mq_waiting_receivers", "gauge", "Long-poll receivers waiting for a message.")
        out.append(f"mq_waiting_receivers {broker.waiting_receivers}")

        try:
            queues = await broker.list_queues()
            store_up = 1
        except MqError:  # the metrics matter most now: serve them, with the store's state
            queues, store_up = [], 0
        family("mq_store_up", "gauge", "1 if the store answered this scrape, 0 if it could not.")
        out.append(f"mq_store_up {store_up}")
        family("mq_store_failed", "gauge", "1 once the store has failed: restart mqd (see /status).")
        out.append(f"mq_store_failed {int(broker.store.failure() is not None)}")
        family("mq_queue_messages", "gauge", "Messages in a queue, by state.")
        for stats in queues:
            name = _label(stats.queue.name)
            for state, value in (
                ("ready", stats.ready),
                ("leased", stats.leased),
                ("delayed", stats.delayed),
            ):
                out.append(f'mq_queue_messages{{queue="{name}",state="{state}"}} {value}')
        family(
            "mq_queue_bytes", "gauge", "Bytes of content in a queue, in every state (what max_bytes counts)."
        )
        out += [f'mq_queue_bytes{{queue="{_label(s.queue.name)}"}} {s.bytes}' for s in queues]
        family("mq_queue_limit", "gauge", "A queue's policy limits, those set (docs/policies.md).")
        for stats in queues:
            settings = stats.queue.settings
            for limit in ("max_messages", "max_bytes", "max_in_flight", "max_rate", "message_ttl"):
                value = getattr(settings, limit)
                if value is not None:
                    out.append(
                        f'mq_queue_limit{{queue="{_label(stats.queue.name)}",limit="{limit}"}} {value:g}'
                    )
        family("mq_queue_dead_lettered", "gauge", "Messages of a queue now waiting in its dead-letter queue.")
        out += [f'mq_queue_dead_lettered{{queue="{_label(s.queue.name)}"}} {s.dead_lettered}' for s in queues]
        family("mq_queue_oldest_ready_age_seconds", "gauge", "Age of a queue's oldest ready message.")
        now = broker.clock()
        for stats in queues:
            if stats.oldest_ready_at is not None:
                age = max(0.0, now - stats.oldest_ready_at)
                out.append(
                    f'mq_queue_oldest_ready_age_seconds{{queue="{_label(stats.queue.name)}"}} {age:.3f}'
                )
        for field, help_text in (
            ("sent", "Messages stored by sends (repeated idempotency keys excluded)."),
            ("received", "Messages delivered to receivers (removed or leased)."),
            ("returned", "Messages taken for a receiver that left before its reply was written, put back."),
            ("acked", "Leased messages acknowledged."),
            ("released", "Leased messages released early."),
            ("dead_lettered", "Messages moved to a dead-letter queue (attempts used up, expired, dropped)."),
            ("expired", "Messages that waited past their ttl (dead-lettered, or dropped without a DLQ)."),
            ("dropped", "Messages that made room in a full queue (overflow drop_oldest)."),
            ("refused", "Sends refused because the queue was full (overflow reject)."),
        ):
            family(f"mq_messages_{field}_total", "counter", help_text)
            for stats in queues:
                counters = broker.counters.get(stats.queue.name)
                value = getattr(counters, field) if counters is not None else 0
                out.append(f'mq_messages_{field}_total{{queue="{_label(stats.queue.name)}"}} {value}')

        family("mq_http_requests_total", "counter", "HTTP requests answered, by route, method and status.")
        for (route, method, status), count in sorted(self.requests.items()):
            labels = f'route="{_label(route)}",method="{method}",status="{status}"'
            out.append(f"mq_http_requests_total{{{labels}}} {count}")
        family("mq_http_request_duration_seconds", "histogram", "Time to answer HTTP requests, by route.")
        for (route, method), histogram in sorted(self.latency.items()):
            out += histogram.lines(
                "mq_http_request_duration_seconds", f'route="{_label(route)}",method="{method}"'
            )
        family(
            "mq_store_commit_duration_seconds", "histogram", "Time each store commit took (fsync included)."
        )
        out += self.commit_latency.lines("mq_store_commit_duration_seconds", "")
        family("mq_store_commit_operations", "histogram", "Operations committed together (group commit).")
        out += self.commit_operations.lines("mq_store_commit_operations", "")
        out += _process_lines()
        return "\n".join(out) + "\n"


def _process_lines() -> list[str]:
    lines = []
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
        lines += [
            "# HELP process_resident_memory_bytes Resident memory of mqd.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {resident_pages * os.sysconf('SC_PAGE_SIZE')}",
        ]
        lines += [
            "# HELP process_open_fds Open file descriptors of mqd.",
            "# TYPE process_open_fds gauge",
            f"process_open_fds {len(os.listdir('/proc/self/fd'))}",
        ]
    except OSError:
        pass
    return lines
