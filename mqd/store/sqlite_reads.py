"""The SQLite store's reads: plain functions of a connection, run by the reader thread on its
read-only connection (and a few by the writer inside its transaction).

Nothing here counts ready messages: depth is a counter in the queues table, and the other counts
(leased, delayed, dead letters) walk an index over hidden or dead-lettered rows only, so a
million messages waiting cost a read nothing.
"""

from __future__ import annotations

import sqlite3

from ..errors import DataCorrupt
from ..model import (
    Delivery,
    ExportedMessage,
    Queue,
    QueueSettings,
    QueueStats,
    Totals,
    content_checksum,
    unheld,
)

_QUEUES = (
    "SELECT id, name, created_at, dead_letter_queue_id, max_attempts, dedup_window, message_ttl, "
    "max_messages, max_bytes, overflow, max_in_flight, max_rate FROM queues"
)


def _queue(row: tuple, names: dict[int, str]) -> Queue:
    queue_id, name, created_at, dlq_id, max_attempts, *policies = row
    settings = QueueSettings(max_attempts, names.get(dlq_id), *policies)
    return Queue(queue_id, name, created_at, settings, dlq_id)


def all_queues(connection: sqlite3.Connection) -> list[Queue]:
    rows = connection.execute(_QUEUES + " ORDER BY name").fetchall()
    names = {row[0]: row[1] for row in rows}
    return [_queue(row, names) for row in rows]


def find_queue(connection: sqlite3.Connection, name: str) -> Queue | None:
    row = connection.execute(_QUEUES + " WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    dlq_id = row[3]
    dlq = connection.execute("SELECT name FROM queues WHERE id = ?", (dlq_id,)).fetchone() if dlq_id else None
    return _queue(row, {dlq_id: dlq[0]} if dlq else {})


def exchanges(connection: sqlite3.Connection) -> dict[str, list[Queue]]:
    queues = {queue.id: queue for queue in all_queues(connection)}
    found: dict[str, list[Queue]] = {}
    for exchange, queue_id in connection.execute(
        "SELECT exchange, queue_id FROM exchange_bindings ORDER BY exchange"
    ):
        found.setdefault(exchange, []).append(queues[queue_id])
    return {name: sorted(bound, key=lambda q: q.name) for name, bound in found.items()}


def stats(connection: sqlite3.Connection, now: float, queue_id: int | None) -> list[QueueStats]:
    queues = all_queues(connection)
    if queue_id is not None:
        queues = [queue for queue in queues if queue.id == queue_id]
    return [_stats(connection, queue, now) for queue in queues]


def _stats(connection: sqlite3.Connection, queue: Queue, now: float) -> QueueStats:
    depth, size = connection.execute("SELECT depth, bytes FROM queues WHERE id = ?", (queue.id,)).fetchone()
    hidden, leased = connection.execute(
        "SELECT count(*), count(lease_token) FROM messages WHERE queue_id = ? AND visible_at > ?",
        (queue.id, now),
    ).fetchone()
    dead_lettered = connection.execute(
        "SELECT count(*) FROM messages WHERE dead_letter_source_id = ? AND queue_id != ?",
        (queue.id, queue.id),
    ).fetchone()[0]
    head = connection.execute(
        "SELECT enqueued_at FROM messages WHERE queue_id = ? AND visible_at = 0 ORDER BY id LIMIT 1",
        (queue.id,),
    ).fetchone()
    expired = connection.execute(
        "SELECT min(enqueued_at) FROM messages WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
        (queue.id, now),
    ).fetchone()[0]
    candidates = [t for t in (head[0] if head else None, expired) if t is not None]
    return QueueStats(
        queue=queue,
        messages=depth,
        ready=depth - hidden,
        leased=leased,
        delayed=hidden - leased,
        dead_lettered=dead_lettered,
        oldest_ready_at=min(candidates) if candidates else None,
        bytes=size,
    )


def totals(connection: sqlite3.Connection) -> Totals:
    queues, messages = connection.execute("SELECT count(*), coalesce(sum(depth), 0) FROM queues").fetchone()
    return Totals(queues, messages)


READY_COLUMNS = (
    "id, attempts, enqueued_at, checksum, content, dead_letter_source_id, grp, expires_at, priority"
)


def ready_rows(connection: sqlite3.Connection, queue_id: int, count: int) -> list:
    """(id, attempts, enqueued_at, checksum, content, dead_letter_source_id, grp, expires_at,
    priority) of the next ready messages, highest priority first and oldest first within one,
    their checksums checked: one walk of the index on (queue_id, visible_at, priority DESC, id)."""
    rows = connection.execute(
        f"SELECT {READY_COLUMNS} FROM messages WHERE queue_id = ? AND visible_at = 0 "
        "ORDER BY priority DESC, id LIMIT ?",
        (queue_id, count),
    ).fetchall()
    check(rows)
    return rows


def peek(connection: sqlite3.Connection, queue_id: int, count: int, now: float) -> list[Delivery]:
    """The next ready messages, those whose lease or delay ran out by ``now`` among them (in
    their places), without changing anything: two index walks, merged by id."""
    ready = ready_rows(connection, queue_id, count)
    due = connection.execute(
        f"SELECT {READY_COLUMNS} FROM messages WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ? "
        "ORDER BY priority DESC, id LIMIT ?",
        (queue_id, now, count),
    ).fetchall()
    check(due)
    rows = sorted(ready + due, key=lambda row: (-row[8], row[0]))
    unexpired = [row for row in rows if row[7] is None or row[7] > now][:count]
    return [Delivery(row[0], row[4], row[1], row[2], priority=row[8], group=row[6]) for row in unexpired]


def export(connection: sqlite3.Connection, after: int, count: int) -> list[ExportedMessage]:
    """The next ``count`` messages by id, of every queue (the primary key's order: one walk)."""
    rows = connection.execute(
        "SELECT m.id, m.attempts, m.enqueued_at, m.checksum, m.content, s.name, q.name, m.visible_at, "
        "m.priority, m.grp, m.expires_at FROM messages m JOIN queues q ON q.id = m.queue_id "
        "LEFT JOIN queues s ON s.id = m.dead_letter_source_id WHERE m.id > ? ORDER BY m.id LIMIT ?",
        (after, count),
    ).fetchall()
    check(rows)
    return [
        ExportedMessage(
            row[6],
            row[0],
            row[4],
            row[1],
            row[2],
            unheld(row[7]) if row[7] < 0 else row[7],
            row[5],
            row[8],
            row[9],
            row[10],
        )
        for row in rows
    ]


def next_visible_at(connection: sqlite3.Connection, queue_id: int) -> float | None:
    return connection.execute(
        "SELECT min(visible_at) FROM messages WHERE queue_id = ? AND visible_at > 0", (queue_id,)
    ).fetchone()[0]


def check(rows: list) -> None:
    for message_id, _, _, checksum, content, *_ in rows:
        if content_checksum(content) != checksum:
            raise DataCorrupt(
                f"Message {message_id} is damaged (its checksum does not match); "
                "stop mqd and run mqd --verify."
            )
