"""The JSON of replies: message content spliced in as it is stored, the rest encoded compactly.

Content is kept as the JSON text the client sent (see jsontext.py), so a receive never decodes
and encodes it again; everything else is ASCII-only JSON.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .model import Delivery, ExportedMessage, QueueStats

_encode_compact = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


def ids_json(ids: list[int], duplicates: list[bool]) -> str:
    """A batch's ids, and the positions of the items whose idempotency key repeated an earlier
    send (their id is that send's: nothing new was stored for them)."""
    repeated = ""
    if any(duplicates):
        repeated = ",".join(str(i) for i, duplicate in enumerate(duplicates) if duplicate)
    return '{"ids":[' + ",".join(map(str, ids)) + '],"duplicates":[' + repeated + "]}"


def dumps(value: Any) -> str:
    return _encode_compact(value)


def delivery_json(delivery: Delivery) -> str:
    """One message as a JSON object, its content spliced in as stored."""
    text = (
        f'{{"id":{delivery.id},"content":{delivery.content},"attempts":{delivery.attempts},'
        f'"enqueued_at":{delivery.enqueued_at!r}'
    )
    if delivery.lease_token is not None:
        text += f',"receipt":"{delivery.receipt}","lease_expires_at":{delivery.lease_expires_at!r}'
    if delivery.priority:
        text += f',"priority":{delivery.priority}'
    if delivery.group is not None:
        text += f',"group":{dumps(delivery.group)}'
    return text + "}"


def deliveries_json(deliveries: list[Delivery]) -> str:
    return '{"messages":[' + ",".join(delivery_json(d) for d in deliveries) + "]}"


def exported_json(messages: list[ExportedMessage], next_after: int | None) -> str:
    """An export's page: every field of each message, its content spliced in as stored."""
    items = ",".join(
        f'{{"queue":"{m.queue}","id":{m.id},"content":{m.content},"attempts":{m.attempts},"enqueued_at":{m.enqueued_at!r},'
        f'"visible_at":{m.visible_at!r},"dead_letter_source":{dumps(m.dead_letter_source)}'
        + (f',"priority":{m.priority}' if m.priority else "")
        + (f',"group":{dumps(m.group)}' if m.group is not None else "")
        + (f',"expires_at":{m.expires_at!r}' if m.expires_at is not None else "")
        + "}"
        for m in messages
    )
    return f'{{"messages":[{items}],"next_after":{dumps(next_after)}}}'


def queue_dict(stats: QueueStats, now: float, counters: Any) -> dict[str, Any]:
    """A queue as the API shows it; ``counters`` are its traffic counters (broker.QueueCounters)."""
    queue = stats.queue
    oldest = stats.oldest_ready_at
    return {
        "name": queue.name,
        "created_at": queue.created_at,
        "max_attempts": queue.settings.max_attempts,
        "dead_letter_queue": queue.settings.dead_letter_queue,
        "dedup_window": queue.settings.dedup_window,
        "message_ttl": queue.settings.message_ttl,
        "max_messages": queue.settings.max_messages,
        "max_bytes": queue.settings.max_bytes,
        "overflow": queue.settings.overflow,
        "max_in_flight": queue.settings.max_in_flight,
        "max_rate": queue.settings.max_rate,
        "messages": stats.messages,
        "bytes": stats.bytes,
        "ready": stats.ready,
        "leased": stats.leased,
        "delayed": stats.delayed,
        "dead_lettered": stats.dead_lettered,
        "oldest_ready_age_seconds": round(max(0.0, now - oldest), 3) if oldest is not None else None,
        "counters": dataclasses.asdict(counters),
    }
