"""JSON on the wire: strict decoding of request bodies, and replies spliced from stored text.

Message content is kept as the JSON text the client sent (re-serialised compactly), and replies
embed that text as it is: a receive never decodes and re-encodes content. Content is stored with
``ensure_ascii`` so that any string JSON can carry, lone surrogates included, round-trips exactly
and the stored text is always valid UTF-8.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from .store.base import Delivery, QueueStats

_encode_compact = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def decode(raw: bytes | str) -> Any:
    """Parse a JSON document strictly (no NaN or Infinity); ValueError with a readable reason."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return _decoder.decode(raw)


def encode_content(value: Any) -> str:
    """The stored form of a message's content; ValueError for numbers JSON cannot carry."""
    try:
        return _encode_compact(value)
    except ValueError:
        raise ValueError("a number in the content is too large to represent") from None


def encode_string(value: str) -> str:
    """``encode_content`` for a string, which is never refused: the C encoder, called directly."""
    return encode_basestring_ascii(value)


def ids_json(ids: list[int]) -> str:
    return '{"ids":[' + ",".join(map(str, ids)) + "]}"


def dumps(value: Any) -> str:
    return _encode_compact(value)


def delivery_json(delivery: Delivery) -> str:
    """One message as a JSON object, its content spliced in as stored."""
    text = (
        f'{{"id":{delivery.id},"content":{delivery.content},"attempts":{delivery.attempts},'
        f'"enqueued_at":{delivery.enqueued_at!r}'
    )
    if delivery.receipt is not None:
        text += (
            f',"receipt":{_encode_compact(delivery.receipt)},"lease_expires_at":{delivery.lease_expires_at!r}'
        )
    return text + "}"


def deliveries_json(deliveries: list[Delivery]) -> str:
    return '{"messages":[' + ",".join(delivery_json(d) for d in deliveries) + "]}"


def queue_dict(stats: QueueStats, now: float) -> dict[str, Any]:
    queue = stats.queue
    oldest = stats.oldest_ready_at
    return {
        "name": queue.name,
        "created_at": queue.created_at,
        "max_attempts": queue.settings.max_attempts,
        "dead_letter_queue": queue.settings.dead_letter_queue,
        "dedup_window": queue.settings.dedup_window,
        "messages": stats.messages,
        "ready": stats.ready,
        "leased": stats.leased,
        "delayed": stats.delayed,
        "dead_lettered": stats.dead_lettered,
        "oldest_ready_age_seconds": round(max(0.0, now - oldest), 3) if oldest is not None else None,
    }
