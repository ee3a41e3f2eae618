"""How the SQLite store removes messages the policies say must go, and moves a group on.

Plain functions of the writer's connection, run inside a batch's transaction. Rows are those of
``sqlite_reads.ready_rows``. A message removed by policy (it expired, it made room in a full
queue, it used up its attempts) goes to the dead-letter queue the broker names, or is deleted;
either way, if it was the head of a group, the group's next message gets its turn.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ..model import Removed, content_bytes
from .sqlite_reads import READY_COLUMNS, check

# Columns of a ready row (sqlite_reads.READY_COLUMNS).
ID, ATTEMPTS, ENQUEUED_AT, CHECKSUM, CONTENT, SOURCE, GROUP, EXPIRES_AT, PRIORITY = range(9)


def count(connection: sqlite3.Connection, queue_id: int, messages: int, size: int) -> None:
    """Add to a queue's counters of messages and bytes (kept in the same transaction)."""
    if messages or size:
        connection.execute(
            "UPDATE queues SET depth = depth + ?, bytes = bytes + ? WHERE id = ?", (messages, size, queue_id)
        )


def make_due_ready(connection: sqlite3.Connection, queue_id: int, now: float) -> None:
    """Leases and delays that ran out by ``now``: ready, in their original place."""
    connection.execute(
        "UPDATE messages SET visible_at = 0, lease_token = NULL "
        "WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
        (queue_id, now),
    )


def promote(connection: sqlite3.Connection, queue_id: int, groups: Iterable[str], now: float) -> int:
    """Give each group's next message its turn: the lowest id left in the group, if it is held,
    gets its own visibility again (ready if that has come by ``now``). How many are ready."""
    promoted = 0
    for group in set(groups):
        row = connection.execute(
            "UPDATE messages SET visible_at = CASE WHEN -visible_at - 1 <= ? THEN 0 ELSE -visible_at - 1 END "
            "WHERE id = (SELECT id FROM messages WHERE queue_id = ? AND grp = ? ORDER BY id LIMIT 1) "
            "AND visible_at < 0 RETURNING visible_at",
            (now, queue_id, group),
        ).fetchone()
        promoted += row is not None and row[0] == 0
    return promoted


def regroup(connection: sqlite3.Connection, queue_id: int, group: str) -> None:
    """Give a group one head again after messages came back into it (a receiver left before it
    was told of them): the leased one if one is, else the oldest; every other one waits."""
    members = connection.execute(
        "SELECT id, visible_at, lease_token FROM messages WHERE queue_id = ? AND grp = ? ORDER BY id",
        (queue_id, group),
    ).fetchall()
    leased = [member for member in members if member[2] is not None and member[1] > 0]
    head = (leased or members or [(None,)])[0][0]
    flips = [
        (message_id,)
        for message_id, visible_at, token in members
        if (message_id == head and visible_at < 0)
        or (message_id != head and token is None and visible_at >= 0)
    ]
    connection.executemany("UPDATE messages SET visible_at = -visible_at - 1 WHERE id = ?", flips)


def remove(
    connection: sqlite3.Connection, queue_id: int, rows: list, dead_letter_queue_id: int | None, now: float
) -> Removed:
    """Remove ready rows by policy: to the dead-letter queue (where they leave their group and
    their expiry, and start their attempts afresh), or deleted."""
    if not rows:
        return Removed()
    size = sum(content_bytes(row[CONTENT]) for row in rows)
    if dead_letter_queue_id is None:
        connection.executemany("DELETE FROM messages WHERE id = ?", [(row[ID],) for row in rows])
    else:
        connection.executemany(
            "UPDATE messages SET queue_id = ?, dead_letter_source_id = ?, attempts = 0, visible_at = 0, "
            "lease_token = NULL, grp = NULL, expires_at = NULL WHERE id = ?",
            [(dead_letter_queue_id, queue_id, row[ID]) for row in rows],
        )
        count(connection, dead_letter_queue_id, len(rows), size)
    count(connection, queue_id, -len(rows), -size)
    promoted = promote(connection, queue_id, [row[GROUP] for row in rows if row[GROUP] is not None], now)
    moved = len(rows) if dead_letter_queue_id is not None else 0
    return Removed(len(rows), moved, promoted)


def expiring_queues(connection: sqlite3.Connection, now: float) -> list[str]:
    """The names of the queues with messages waiting past their expiry: one walk of the expiry
    index over those messages."""
    return [
        row[0]
        for row in connection.execute(
            "SELECT name FROM queues WHERE id IN (SELECT queue_id FROM messages WHERE expires_at IS NOT NULL "
            "AND expires_at <= ? AND lease_token IS NULL)",
            (now,),
        )
    ]


def expire(
    connection: sqlite3.Connection, queue_id: int, now: float, dead_letter_queue_id: int | None, limit: int
) -> Removed:
    """Remove up to ``limit`` messages of the queue that waited past their expiry (ready,
    delayed, or waiting their group's turn; never leased ones)."""
    rows = connection.execute(
        f"SELECT {READY_COLUMNS} FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? "
        "AND queue_id = ? AND lease_token IS NULL ORDER BY expires_at LIMIT ?",
        (now, queue_id, limit),
    ).fetchall()
    check(rows)
    return remove(connection, queue_id, rows, dead_letter_queue_id, now)
