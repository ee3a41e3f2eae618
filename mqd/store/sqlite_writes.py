"""The SQLite store's writes: each kind of operation as one function over all its requests in a
batch (see batching.py), run by the writer thread inside the batch's transaction.

``Writes`` holds what only the writer thread touches: the catalogue of queues as the database
has it, the next message id, and the free-space verdict. A message is ready when ``visible_at``
is 0; before anyone takes, leases and delays that ran out by ``now`` are made ready again, in
their original place. Per-queue depth is a counter kept in the same transaction as the change.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeadLetterQueueInUse, QueueConflict, QueueGone, QueueNotFound
from ..model import (
    STORED_SETTINGS,
    Bucket,
    ExportedMessage,
    Queue,
    QueueSettings,
    Settled,
    content_bytes,
    content_checksum,
    held,
    new_in_import,
)
from . import sqlite_reads
from . import sqlite_removals as removals
from .sqlite_sending import Plan, Sending
from .sqlite_taking import Taking
from .sqlite_verify import highest_id

log = logging.getLogger("mqd.store")

_SETTINGS = ", ".join(STORED_SETTINGS)


class Writes(Sending, Taking):
    def __init__(self, data_dir: Path, min_free_bytes: int) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.queues: dict[int, Queue] = {}
        self.next_id = 1
        self.buckets: dict[int, Bucket] = {}  # max_rate's, by queue: in memory (one writer)
        self._next_key_sweep = 0.0
        self._space_fresh = False  # looked at during the current batch
        self._space_low = False
        self._headroom = 0  # free bytes beyond the reserve at the last look
        self._written_since_look = 0  # bytes (estimated) written since then

    def load(self, connection: sqlite3.Connection) -> None:
        """(Re)read the catalogue and the id sequence: at start-up and after a rollback."""
        self.queues = {queue.id: queue for queue in sqlite_reads.all_queues(connection)}
        self.next_id = highest_id(connection) + 1

    def before_batch(self, connection: sqlite3.Connection) -> None:
        self._space_fresh = False

    def _queue(self, queue_id: int) -> Queue:
        queue = self.queues.get(queue_id)
        if queue is None:
            raise QueueGone(queue_id)
        return queue

    # -- queues ----------------------------------------------------------------------------------

    def create_queues(self, connection, requests: list[tuple[str, QueueSettings, float]]) -> list:
        return [self._create_queue(connection, *request) for request in requests]

    def _create_queue(self, connection, name: str, settings: QueueSettings, now: float):
        existing = next((q for q in self.queues.values() if q.name == name), None)
        if existing is not None:
            return existing, False
        dlq_id = self._dead_letter_queue_id(settings)
        if isinstance(dlq_id, QueueNotFound):
            return dlq_id
        cursor = connection.execute(
            f"INSERT INTO queues (name, created_at, dead_letter_queue_id, {_SETTINGS}) "
            f"VALUES (?, ?, ?, {', '.join('?' * _SETTINGS.count(',') + '?')})",
            (name, now, dlq_id, *settings.stored()),
        )
        queue = Queue(cursor.lastrowid, name, now, settings, dlq_id)
        self.queues[queue.id] = queue
        return queue, True

    def _dead_letter_queue_id(self, settings: QueueSettings) -> int | QueueNotFound | None:
        if settings.dead_letter_queue is None:
            return None
        dlq = next((q for q in self.queues.values() if q.name == settings.dead_letter_queue), None)
        return QueueNotFound(settings.dead_letter_queue) if dlq is None else dlq.id

    def updates(self, connection, requests: list[tuple[int, dict]]) -> list:
        return [self._update(connection, queue_id, changes) for queue_id, changes in requests]

    def _update(self, connection, queue_id: int, changes: dict):
        queue = self.queues.get(queue_id)
        if queue is None:
            return QueueGone(queue_id)
        try:
            settings = queue.settings.changed(queue.name, changes)
        except QueueConflict as conflict:
            return conflict
        dlq_id = self._dead_letter_queue_id(settings)
        if isinstance(dlq_id, QueueNotFound):
            return dlq_id
        assignments = ", ".join(f"{column.strip()} = ?" for column in _SETTINGS.split(","))
        connection.execute(
            f"UPDATE queues SET dead_letter_queue_id = ?, {assignments} WHERE id = ?",
            (dlq_id, *settings.stored(), queue_id),
        )
        if settings.max_rate != queue.settings.max_rate:
            self.buckets.pop(queue_id, None)
        updated = self.queues[queue_id] = Queue(queue_id, queue.name, queue.created_at, settings, dlq_id)
        return updated

    def delete_queues(self, connection, requests: list[int]) -> list:
        return [self._delete_queue(connection, queue_id) for queue_id in requests]

    def _delete_queue(self, connection, queue_id: int):
        queue = self.queues.get(queue_id)
        if queue is None:
            return QueueGone(queue_id)
        users = sorted(q.name for q in self.queues.values() if q.dead_letter_queue_id == queue_id)
        if users:
            return DeadLetterQueueInUse(queue.name, users)
        connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
        connection.execute("DELETE FROM idempotency_keys WHERE queue_id = ?", (queue_id,))
        connection.execute("DELETE FROM exchange_bindings WHERE queue_id = ?", (queue_id,))
        connection.execute(
            "UPDATE messages SET dead_letter_source_id = NULL WHERE dead_letter_source_id = ?", (queue_id,)
        )
        connection.execute("DELETE FROM queues WHERE id = ?", (queue_id,))
        del self.queues[queue_id]
        return None

    def purges(self, connection, requests: list[int]) -> list:
        results = []
        for queue_id in requests:
            if queue_id not in self.queues:
                results.append(QueueGone(queue_id))
                continue
            results.append(
                connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,)).rowcount
            )
            connection.execute("UPDATE queues SET depth = 0, bytes = 0 WHERE id = ?", (queue_id,))
        return results

    def redrives(self, connection, requests: list[tuple[int, float]]) -> list:
        return [self._redrive(connection, queue_id, now) for queue_id, now in requests]

    def _redrive(self, connection, queue_id: int, now: float):
        if queue_id not in self.queues:
            return QueueGone(queue_id)
        not_leased = "(lease_token IS NULL OR visible_at <= ?)"
        moves = connection.execute(
            "SELECT queue_id, dead_letter_source_id, sum(length(CAST(content AS BLOB))) FROM messages "
            f"WHERE dead_letter_source_id IS NOT NULL AND {not_leased} "
            "AND (queue_id = ? OR dead_letter_source_id = ?) AND queue_id != dead_letter_source_id "
            "GROUP BY queue_id, dead_letter_source_id",
            (now, queue_id, queue_id),
        ).fetchall()
        moved: dict[int, int] = {}
        for from_id, to_id, size in moves:
            count = connection.execute(
                "UPDATE messages SET queue_id = dead_letter_source_id, dead_letter_source_id = NULL, "
                "attempts = 0, visible_at = 0, lease_token = NULL WHERE queue_id = ? "
                f"AND dead_letter_source_id = ? AND {not_leased}",
                (from_id, to_id, now),
            ).rowcount
            removals.count(connection, from_id, -count, -size)
            removals.count(connection, to_id, count, size)
            moved[to_id] = moved.get(to_id, 0) + count
        return [(self.queues[to_id], count) for to_id, count in moved.items()]

    # -- exchanges -------------------------------------------------------------------------------

    def binds(self, connection, requests: list[tuple[str, list[int]]]) -> list:
        results = []
        for exchange, queue_ids in requests:
            if missing := [queue_id for queue_id in queue_ids if queue_id not in self.queues]:
                results.append(QueueGone(missing[0]))
                continue
            found = connection.execute(
                "DELETE FROM exchange_bindings WHERE exchange = ?", (exchange,)
            ).rowcount
            connection.executemany(
                "INSERT INTO exchange_bindings VALUES (?, ?)",
                [(exchange, queue_id) for queue_id in queue_ids],
            )
            results.append(found == 0)
        return results

    def unbinds(self, connection, requests: list[str]) -> list:
        return [
            connection.execute("DELETE FROM exchange_bindings WHERE exchange = ?", (exchange,)).rowcount > 0
            for exchange in requests
        ]

    # -- importing -------------------------------------------------------------------------------

    def imports(
        self, connection, requests: list[tuple[str, Sequence[ExportedMessage], dict[str, int]]]
    ) -> list:
        return [self._import(connection, *request) for request in requests]

    def _import(
        self, connection, source: str, messages: Sequence[ExportedMessage], queue_ids: dict[str, int]
    ):
        """One import, all or nothing: new ids, the states as exported, and the source's progress
        per queue (the last exported id stored), so that a repeat skips what is here."""
        for message in messages:
            if queue_ids[message.queue] not in self.queues:
                return QueueGone(queue_ids[message.queue])
        self._check_space(sum(len(m.content) for m in messages))
        done = {
            queue_id: last
            for queue_id, last in connection.execute(
                f"SELECT queue_id, last_id FROM imports WHERE source = ? AND queue_id IN "
                f"({', '.join('?' * len(queue_ids))})",
                (source, *queue_ids.values()),
            )
        }
        kept, done = new_in_import(messages, queue_ids, done)
        rows = []
        stored: dict[str, int] = {}
        plans: dict[int, Plan] = {}
        for message in kept:
            queue_id = queue_ids[message.queue]
            plan = plans.setdefault(queue_id, Plan())
            origin = queue_ids.get(message.dead_letter_source) if message.dead_letter_source else None
            visible_at = message.visible_at
            if message.group is not None and plan.group_taken(connection, queue_id, message.group):
                visible_at = held(visible_at)
            rows.append(
                (
                    self.next_id,
                    queue_id,
                    visible_at,
                    message.attempts,
                    message.enqueued_at,
                    origin if origin in self.queues else None,
                    content_checksum(message.content),
                    message.content,
                    message.priority,
                    message.group,
                    message.expires_at,
                )
            )
            plan.size += content_bytes(message.content)
            self.next_id += 1
            stored[message.queue] = stored.get(message.queue, 0) + 1
        connection.executemany(
            "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, dead_letter_source_id, "
            "checksum, content, priority, grp, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for name, count in stored.items():
            removals.count(connection, queue_ids[name], count, plans[queue_ids[name]].size)
            connection.execute(
                "INSERT INTO imports VALUES (?, ?, ?) ON CONFLICT (source, queue_id) DO UPDATE SET last_id = "
                "excluded.last_id",
                (source, queue_ids[name], done[queue_ids[name]]),
            )
        return stored

    # -- settling leases -------------------------------------------------------------------------

    def acks(self, connection, requests: list[tuple]) -> list:
        results = []
        for queue_id, message_id, token, now, _ in requests:
            row = connection.execute(
                "DELETE FROM messages WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ? "
                "RETURNING grp, length(CAST(content AS BLOB))",
                (message_id, queue_id, token, now),
            ).fetchone()
            if row is None:
                found = self._found(queue_id, 0)
                results.append(found if isinstance(found, QueueGone) else Settled(False))
                continue
            group, size = row
            removals.count(connection, queue_id, -1, -size)
            results.append(
                Settled(True, removals.promote(connection, queue_id, [group], now) if group else 0)
            )
        return results

    def releases(self, connection, requests: list[tuple[int, int, str, float, float]]) -> list:
        return [
            self._found(
                queue_id,
                connection.execute(
                    "UPDATE messages SET visible_at = ?, lease_token = NULL "
                    "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
                    (visible_at, message_id, queue_id, token, now),
                ).rowcount,
            )
            for queue_id, message_id, token, now, visible_at in requests
        ]

    def extensions(self, connection, requests: list[tuple[int, int, str, float, float]]) -> list:
        return [
            self._found(
                queue_id,
                connection.execute(
                    "UPDATE messages SET visible_at = ? "
                    "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
                    (expires_at, message_id, queue_id, token, now),
                ).rowcount,
            )
            for queue_id, message_id, token, now, expires_at in requests
        ]

    def _found(self, queue_id: int, rows: int):
        """A settle's answer: whether its lease was current; QueueGone if the queue is."""
        return bool(rows) if rows or queue_id in self.queues else QueueGone(queue_id)
