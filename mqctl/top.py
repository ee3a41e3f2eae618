"""``mqctl top``: a live view of the queues, their depths and their traffic rates.

Depths and traffic counters both come from GET /queues; rates are differences of the counters
between two refreshes. On a terminal the view is redrawn in place; otherwise each refresh is
printed as tab-separated lines, one block per refresh.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mq import Client

from . import output

HEADERS = ("QUEUE", "READY", "LEASED", "DELAYED", "DEAD", "OLDEST", "IN/s", "OUT/s", "ACK/s")
CLEAR = "\x1b[H\x1b[2J"


def counters(queues: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(queue, sent|received|acked) -> total since mqd started."""
    return {
        (q["name"], kind): q.get("counters", {}).get(kind, 0)
        for q in queues
        for kind in ("sent", "received", "acked")
    }


def rows(queues: list[dict[str, Any]], now: dict, before: dict | None, seconds: float) -> list[list[Any]]:
    def rate(queue: str, kind: str) -> str:
        if before is None or seconds <= 0:
            return "-"
        return f"{max(0, now.get((queue, kind), 0) - before.get((queue, kind), 0)) / seconds:.0f}"

    return [
        [
            q["name"],
            q["ready"],
            q["leased"],
            q["delayed"],
            q["dead_lettered"],
            output.duration(q["oldest_ready_age_seconds"]),
            rate(q["name"], "sent"),
            rate(q["name"], "received"),
            rate(q["name"], "acked"),
        ]
        for q in queues
    ]


def run(client: Client, interval: float, iterations: int | None) -> None:
    terminal = sys.stdout.isatty()
    before = None
    taken_at = time.monotonic()
    shown = 0
    while iterations is None or shown < iterations:
        queues = client.list_queues()
        now = counters(queues)
        elapsed = time.monotonic() - taken_at
        taken_at = time.monotonic()
        table = rows(queues, now, before, elapsed)
        before = now
        if terminal:
            stamp = time.strftime("%H:%M:%S")
            body = output.table(HEADERS, table, numeric=set(range(1, 9))) if table else "no queues"
            sys.stdout.write(
                f"{CLEAR}mq at {client.url} — {stamp} — every {interval:g}s, Ctrl-C to quit\n\n{body}\n"
            )
        else:
            sys.stdout.write(output.tab_separated(table) + "\n\n")
        sys.stdout.flush()
        shown += 1
        if iterations is None or shown < iterations:
            time.sleep(interval)
