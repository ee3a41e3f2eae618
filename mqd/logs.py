"""One line per event on stderr: for people (text) or for machines (--log-format json).

Under systemd the journal stamps each line itself, so the text format leaves the time out when
stderr is the journal (JOURNAL_STREAM names it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def moment(epoch: float) -> str:
    """A point in time for people, in the machine's time zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def counted(number: int, noun: str) -> str:
    """ "1 message", "2 messages": the count word agrees."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream != "" and f"{info.st_dev}:{info.st_ino}" == f"{device}:{inode}"


def configure(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif _stderr_is_journal():
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
