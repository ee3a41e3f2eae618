"""How mqctl prints: content as it is, tables for people, tab-separated lines for programs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mq.messages import encode as json_line


def counted(number: int, noun: str) -> str:
    """ "1 message", "2 messages": the count word agrees."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def content_text(content: Any) -> str:
    """A string prints as it is; any other JSON value prints as JSON."""
    if isinstance(content, str):
        return content
    return json_line(content)


def size(count: int) -> str:
    """Bytes for people: 812 bytes, 40.0 KiB, 1.3 GiB."""
    if count < 1024:
        return counted(count, "byte")
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def moment(epoch: float) -> str:
    """A point in time for people, in the machine's time zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def duration(seconds: float | None) -> str:
    """3d4h, 2h5m, 4m12s, 9.5s: two units at most, for people."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] | None = None) -> str:
    """Aligned columns with a header; numbers right-aligned."""
    numeric = numeric or set()
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def tab_separated(rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join("\t".join("" if c is None else str(c) for c in row) for row in rows)


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the flush at exit cannot fail again."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
