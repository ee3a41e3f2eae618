"""The stream protocol as data: every frame a client may send, with its fields and their limits,
every frame mqd sends, and every close code. One source of truth: streams.py reads requests with
these definitions, and docs/streams.md is checked against them by a test.

A frame is a JSON object in one WebSocket text message. Every request a client sends carries a
``seq`` of its choosing and gets exactly one reply carrying it back: ``ok`` (with the result) or
``error`` (with a code from protocol.ERROR_CODES and a sentence). mqd sends ``deliver`` frames on
its own, for subscriptions, and ``ended`` when it ends one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import contract, protocol
from .contract import describe, quoted
from .errors import InvalidArgument


@dataclasses.dataclass(frozen=True)
class Receipt:
    name: str = "receipt"
    description: str = "A receipt of a message delivered on this stream with a lease."

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or contract.RECEIPT_PATTERN.fullmatch(value) is None:
            raise InvalidArgument(f"'receipt' must be a receipt mqd handed out, not {describe(value)}.")
        return value


SEQ = contract.Number("seq", 0, protocol.MAX_SEQ, integer=True, description="The request's number.")
SUB = contract.Number("sub", 0, protocol.MAX_SEQ, integer=True, description="A subscription's number.")
CREDIT = contract.Number(
    "credit", 0, protocol.MAX_CREDIT, integer=True, description="Messages mqd may deliver (more)."
)
RECEIPT = Receipt()


@dataclasses.dataclass(frozen=True)
class Request:
    """A frame type a client sends: its fields (besides ``type`` and ``seq``), which are required,
    and what the ``ok`` reply carries."""

    type: str
    summary: str
    fields: dict[str, Any]
    required: tuple[str, ...]
    ok: str


REQUESTS: dict[str, Request] = {
    request.type: request
    for request in (
        Request(
            "publish",
            "Send one message (content, delay, key) or a batch (messages), all or nothing; the ok "
            "comes once it is durable, as a 2xx of HTTP would.",
            {"queue": contract.QUEUE_NAME, "content": None, **contract.MESSAGE_FIELDS, "messages": None},
            ("queue",),
            '{"id": n} (with "duplicate": true for a repeated key); for a batch {"ids": [...], '
            '"duplicates": [...]}',
        ),
        Request(
            "subscribe",
            "Receive the queue's messages as they come, as many as the credit granted; with "
            "lease, leased (ack, release or extend each), else removed as delivered.",
            {"queue": contract.QUEUE_NAME, "lease": contract.LEASE, "credit": CREDIT},
            ("queue",),
            '{"sub": n}: the subscription\'s number, its deliveries\' "sub" (it is this seq)',
        ),
        Request(
            "credit",
            "Let mqd deliver this many more.",
            {"sub": SUB, "credit": CREDIT},
            ("sub", "credit"),
            "{}",
        ),
        Request(
            "cancel",
            "End a subscription; what it delivered with leases can still be acked or released.",
            {"sub": SUB},
            ("sub",),
            "{}",
        ),
        Request(
            "ack", "Acknowledge a message leased on this stream.", {"receipt": RECEIPT}, ("receipt",), "{}"
        ),
        Request(
            "release",
            "End a lease early; the message is ready again (after delay).",
            {"receipt": RECEIPT, "delay": contract.DELAY},
            ("receipt",),
            "{}",
        ),
        Request(
            "extend",
            "Make a lease end this many seconds from now.",
            {"receipt": RECEIPT, "lease": contract.LEASE},
            ("receipt", "lease"),
            '{"lease_expires_at": t}',
        ),
    )
}

# What mqd sends: replies, and frames of its own.
SENT = {
    "ok": '{"type": "ok", "seq": n, ...}: the request numbered seq was carried out; '
    "with the fields its request lists",
    "error": '{"type": "error", "seq": n, "code": "...", "error": "..."}: it was not; nothing of it was kept',
    "deliver": '{"type": "deliver", "sub": n, "messages": [...]}: messages for a subscription, '
    "each as a receive returns it (with receipt and lease_expires_at when leased)",
    "ended": '{"type": "ended", "sub": n, "code": "...", "error": "..."}: mqd ended a subscription '
    "(its queue was deleted); what it delivered with leases can still be acked",
}

# Close codes (RFC 6455) mqd closes a stream with, and why.
CLOSE_CODES = {
    1000: "normal: the client closed the stream",
    1001: "going away: mqd is stopping (reconnect once it is back)",
    1003: "a binary frame: frames are JSON text",
    1007: "a frame that is not JSON (or not UTF-8)",
    1008: "a frame mqd cannot answer: not an object, no or unknown type, no or bad seq",
    1009: "a frame larger than --max-body-bytes",
    1011: "mqd failed (its log says why)",
}
CLOSE_UNSUPPORTED, CLOSE_NOT_JSON, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_GOING_AWAY = (
    1003,
    1007,
    1008,
    1011,
    1001,
)


class ProtocolViolation(Exception):
    """A frame that cannot be answered: the stream is closed with ``close_code``."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code


def request_of(frame: Any) -> tuple[Request, int]:
    """The request type and seq of a decoded frame; ProtocolViolation when there is no way to
    answer it (no seq to answer with, or no type to act on)."""
    if not isinstance(frame, dict):
        raise ProtocolViolation(CLOSE_POLICY, "a frame must be a JSON object")
    try:
        seq = SEQ.parse(frame.get("seq"))
    except InvalidArgument:
        raise ProtocolViolation(
            CLOSE_POLICY, f"'seq' must be a whole number from 0 to {protocol.MAX_SEQ}"
        ) from None
    kind = frame.get("type")
    request = REQUESTS.get(kind) if isinstance(kind, str) else None
    if request is None:
        raise ProtocolViolation(CLOSE_POLICY, f"unknown frame type {quoted(str(kind))}")
    return request, seq


def fields_of(request: Request, frame: dict[str, Any]) -> dict[str, Any]:
    """The frame's fields, each checked with its definition (publish's message fields are left
    to parsing.send_of); InvalidArgument for a bad one, answered with an error frame."""
    unknown = sorted(set(frame) - set(request.fields) - {"type", "seq"})
    if unknown:
        raise InvalidArgument(
            f"Unknown field {quoted(unknown[0])} in a {request.type} frame; expected: "
            f"{', '.join(sorted(request.fields))}."
        )
    for name in request.required:
        if name not in frame:
            raise InvalidArgument(f"A {request.type} frame needs '{name}'.")
    if request.type == "publish":
        return {"queue": contract.QUEUE_NAME.parse(frame["queue"])}
    return {
        name: request.fields[name].parse(value) for name, value in frame.items() if name in request.fields
    }
