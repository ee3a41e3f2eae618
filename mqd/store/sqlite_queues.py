"""The SQLite store's queue operations: declaring, deleting, counting, purging, redriving.

A mixin of SQLiteStore (sqlite.py): these methods run in its group-commit worker thread, inside
the transaction of their batch, and use its catalogue (``self._queues``: name -> QueueRow) and
clock (``self._clock``).
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidArgument, QueueConflict, QueueNotFound
from .base import Queue, QueueSettings, QueueStats, Totals


@dataclasses.dataclass(frozen=True)
class QueueRow:
    """A queue as the store holds it in memory: its row id, its settings, its dead-letter queue."""

    id: int
    queue: Queue
    dead_letter_queue_id: int | None


class QueueOperations:
    """Operations on the catalogue of queues (a mixin of SQLiteStore)."""

    def _row(self, name: str) -> QueueRow:
        row = self._queues.get(name)
        if row is None:
            raise QueueNotFound(name)
        return row

    def _create_queue(self, connection, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        existing = self._queues.get(name)
        if existing is not None:
            if existing.queue.settings != settings:
                raise QueueConflict(
                    f"Queue '{name}' already exists with other settings "
                    f"({_describe(existing.queue.settings)}); declare it with the same settings "
                    "or delete it first."
                )
            return existing.queue, False
        if (settings.max_attempts is None) != (settings.dead_letter_queue is None):
            raise InvalidArgument(
                "max_attempts and dead_letter_queue go together: exhausted messages are moved to "
                "the dead-letter queue, never dropped."
            )
        dlq_id = None
        if settings.dead_letter_queue is not None:
            if settings.dead_letter_queue == name:
                raise QueueConflict("A queue cannot be its own dead-letter queue.")
            dlq = self._queues.get(settings.dead_letter_queue)
            if dlq is None:
                raise QueueConflict(
                    f"Dead-letter queue '{settings.dead_letter_queue}' does not exist; create it first."
                )
            dlq_id = dlq.id
        created_at = self._clock()
        cursor = connection.execute(
            "INSERT INTO queues (name, created_at, max_attempts, dead_letter_queue_id, dedup_window) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, created_at, settings.max_attempts, dlq_id, settings.dedup_window),
        )
        queue = Queue(name, created_at, settings)
        self._queues[name] = QueueRow(cursor.lastrowid, queue, dlq_id)
        return queue, True

    def _delete_queue(self, connection, name: str) -> None:
        row = self._row(name)
        users = sorted(n for n, other in self._queues.items() if other.dead_letter_queue_id == row.id)
        if users:
            listed = ", ".join(f"'{n}'" for n in users)
            raise QueueConflict(
                f"Queue '{name}' is the dead-letter queue of {listed}; delete or redeclare those first."
            )
        connection.execute("DELETE FROM messages WHERE queue_id = ?", (row.id,))
        connection.execute("DELETE FROM idempotency_keys WHERE queue_id = ?", (row.id,))
        connection.execute(
            "UPDATE messages SET dead_letter_source_id = NULL WHERE dead_letter_source_id = ?", (row.id,)
        )
        connection.execute("DELETE FROM queues WHERE id = ?", (row.id,))
        del self._queues[name]

    def _stats(self, connection, row: QueueRow) -> QueueStats:
        now = self._clock()
        depth = connection.execute("SELECT depth FROM queues WHERE id = ?", (row.id,)).fetchone()[0]
        hidden, leased = connection.execute(
            "SELECT count(*), count(lease_token) FROM messages WHERE queue_id = ? AND visible_at > ?",
            (row.id, now),
        ).fetchone()
        dead_lettered = connection.execute(
            "SELECT count(*) FROM messages WHERE dead_letter_source_id = ? AND queue_id != ?",
            (row.id, row.id),
        ).fetchone()[0]
        head = connection.execute(
            "SELECT enqueued_at FROM messages WHERE queue_id = ? AND visible_at = 0 ORDER BY id LIMIT 1",
            (row.id,),
        ).fetchone()
        expired = connection.execute(
            "SELECT min(enqueued_at) FROM messages WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
            (row.id, now),
        ).fetchone()[0]
        candidates = [t for t in (head[0] if head else None, expired) if t is not None]
        return QueueStats(
            queue=row.queue,
            messages=depth,
            ready=depth - hidden,
            leased=leased,
            delayed=hidden - leased,
            dead_lettered=dead_lettered,
            oldest_ready_at=min(candidates) if candidates else None,
        )

    def _totals(self, connection) -> Totals:
        queues, messages = connection.execute(
            "SELECT count(*), coalesce(sum(depth), 0) FROM queues"
        ).fetchone()
        return Totals(queues, messages)

    def _purge(self, connection, name: str) -> int:
        row = self._row(name)
        removed = connection.execute("DELETE FROM messages WHERE queue_id = ?", (row.id,)).rowcount
        connection.execute("UPDATE queues SET depth = 0 WHERE id = ?", (row.id,))
        return removed

    def _redrive(self, connection, name: str) -> dict[str, int]:
        row = self._row(name)
        now = self._clock()
        names = {other.id: other.queue.name for other in self._queues.values()}
        not_leased = "(lease_token IS NULL OR visible_at <= ?)"
        moves = connection.execute(
            "SELECT queue_id, dead_letter_source_id, count(*) FROM messages "
            f"WHERE dead_letter_source_id IS NOT NULL AND {not_leased} "
            "AND (queue_id = ? OR dead_letter_source_id = ?) AND queue_id != dead_letter_source_id "
            "GROUP BY queue_id, dead_letter_source_id",
            (now, row.id, row.id),
        ).fetchall()
        moved: dict[str, int] = {}
        for from_id, to_id, _ in moves:
            count = connection.execute(
                "UPDATE messages SET queue_id = dead_letter_source_id, dead_letter_source_id = NULL, "
                "attempts = 0, visible_at = 0, lease_token = NULL WHERE queue_id = ? "
                f"AND dead_letter_source_id = ? AND {not_leased}",
                (from_id, to_id, now),
            ).rowcount
            self._move_depth(connection, from_id, to_id, count)
            moved[names[to_id]] = moved.get(names[to_id], 0) + count
        return moved

    def _move_depth(self, connection, from_id: int, to_id: int, count: int) -> None:
        connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (count, from_id))
        connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (count, to_id))


def _describe(settings: QueueSettings) -> str:
    return ", ".join(
        f"{field.name}={getattr(settings, field.name)!r}" for field in dataclasses.fields(settings)
    )
