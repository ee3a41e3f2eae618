"""Messages as the library hands them out, and JSON that keeps numbers as mqd kept them.

mqd returns a message's content exactly as it was sent (``0.1000000000000000000001``, ``1e-400``,
a 30-digit integer); ``decode`` keeps every number's text beside its value (``JsonNumber``), so
writing the content out again (``encode``) gives back what was sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

LONGEST_INTEGER = 4000  # digits Python converts to int (longer ones keep their text only)


class JsonNumber(float):
    """A JSON number that keeps the text it was written as; arithmetic sees the nearest float."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> JsonNumber:
        number = float.__new__(cls, text)
        number.text = text
        return number


def _integer(text: str) -> int | JsonNumber:
    return int(text) if len(text) <= LONGEST_INTEGER else JsonNumber(text)


def decode(text: str | bytes) -> Any:
    """JSON from mqd, every number kept as written (see JsonNumber)."""
    return json.loads(text, parse_float=JsonNumber, parse_int=_integer)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(value: Any, *, writable: bool = False) -> str:
    """Compact JSON on one line, every JsonNumber written as its own text: what mqd kept. With
    ``writable``, a lone surrogate (which a string mqd accepted may hold, written as an escape)
    is escaped again, so that the text can be written as UTF-8."""
    text = _encode_value(value)
    return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text) if writable else text


def _encode_value(value: Any) -> str:
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode(str(k))}:{_encode_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode_value(item) for item in value) + "]"
    return _encode(value)


class Message:
    """A message received: ``id``, ``content`` (the JSON value sent), ``attempts``,
    ``enqueued_at``; with a lease also ``receipt`` and ``lease_expires_at``, and ``ack()``,
    ``release()`` and ``extend()`` (methods of the client or stream that received it: plain
    calls on a ``Client``, awaitables on an ``AsyncClient`` or a stream). ``data`` is the message
    as mqd sent it."""

    __slots__ = ("_settle", "data", "queue")

    def __init__(self, queue: str, data: dict[str, Any], settle: Callable[..., Any] | None = None) -> None:
        self.queue = queue
        self.data = data
        self._settle = settle

    @property
    def id(self) -> int:
        return self.data["id"]

    @property
    def content(self) -> Any:
        return self.data["content"]

    @property
    def attempts(self) -> int:
        return self.data["attempts"]

    @property
    def priority(self) -> int:
        return self.data.get("priority", 0)

    @property
    def group(self) -> str | None:
        return self.data.get("group")

    @property
    def enqueued_at(self) -> float:
        return self.data["enqueued_at"]

    @property
    def receipt(self) -> str | None:
        return self.data.get("receipt")

    @property
    def lease_expires_at(self) -> float | None:
        return self.data.get("lease_expires_at")

    def __getitem__(self, field: str) -> Any:
        """The message as mqd sent it: ``message["content"]`` is ``message.content``."""
        return self.data[field]

    def ack(self):
        """Acknowledge: the message is done and gone."""
        return self._settler()("ack", self)

    def release(self, delay: float = 0):
        """Give the message back: ready again (after ``delay`` seconds)."""
        return self._settler()("release", self, delay)

    def extend(self, lease: float):
        """Make the lease end ``lease`` seconds from now."""
        return self._settler()("extend", self, lease)

    def _settler(self) -> Callable[..., Any]:
        if self._settle is None or self.receipt is None:
            raise ValueError("this message was not leased: there is nothing to acknowledge")
        return self._settle

    def __repr__(self) -> str:
        return (
            f"Message(queue={self.queue!r}, id={self.id}, attempts={self.attempts}, content={self.content!r})"
        )
