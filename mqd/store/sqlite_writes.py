"""The SQLite store's writes: each kind of operation as one function over all its requests in a
batch (see batching.py), run by the writer thread inside the batch's transaction.

``Writes`` holds what only the writer thread touches: the catalogue of queues as the database
has it, the next message id, and the free-space verdict. A message is ready when ``visible_at``
is 0; before anyone takes, leases and delays that ran out by ``now`` are made ready again, in
their original place. Per-queue depth is a counter kept in the same transaction as the change.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeadLetterQueueInUse, QueueGone, QueueNotFound, StorageFull
from ..logs import counted
from ..model import (
    DeadLetterRule,
    Delivery,
    ExportedMessage,
    Lease,
    NewMessage,
    Queue,
    QueueSettings,
    SendResult,
    TakeResult,
    content_checksum,
    new_in_import,
)
from . import sqlite_reads
from .sqlite_verify import highest_id

log = logging.getLogger("mqd.store")

KEY_SWEEP_INTERVAL_SECONDS = 60.0
WRITE_AMPLIFICATION = 4  # disk bytes per content byte, generously: log frames, index, checkpoint
_INSERT_SHAPES = (128, 32, 8, 2, 1)  # rows per INSERT statement: a few shapes, each prepared once
_INSERT_SQL = {
    rows: "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content) "
    "VALUES " + ", ".join(["(?, ?, ?, 0, ?, ?, ?)"] * rows)
    for rows in _INSERT_SHAPES
}


class Writes:
    def __init__(self, data_dir: Path, min_free_bytes: int) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.queues: dict[int, Queue] = {}
        self.next_id = 1
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
        dlq_id = None
        if settings.dead_letter_queue is not None:
            dlq = next((q for q in self.queues.values() if q.name == settings.dead_letter_queue), None)
            if dlq is None:
                return QueueNotFound(settings.dead_letter_queue)
            dlq_id = dlq.id
        cursor = connection.execute(
            "INSERT INTO queues (name, created_at, max_attempts, dead_letter_queue_id, dedup_window) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, now, settings.max_attempts, dlq_id, settings.dedup_window),
        )
        queue = Queue(cursor.lastrowid, name, now, settings, dlq_id)
        self.queues[queue.id] = queue
        return queue, True

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
            connection.execute("UPDATE queues SET depth = 0 WHERE id = ?", (queue_id,))
        return results

    def redrives(self, connection, requests: list[tuple[int, float]]) -> list:
        return [self._redrive(connection, queue_id, now) for queue_id, now in requests]

    def _redrive(self, connection, queue_id: int, now: float):
        if queue_id not in self.queues:
            return QueueGone(queue_id)
        not_leased = "(lease_token IS NULL OR visible_at <= ?)"
        moves = connection.execute(
            "SELECT queue_id, dead_letter_source_id FROM messages "
            f"WHERE dead_letter_source_id IS NOT NULL AND {not_leased} "
            "AND (queue_id = ? OR dead_letter_source_id = ?) AND queue_id != dead_letter_source_id "
            "GROUP BY queue_id, dead_letter_source_id",
            (now, queue_id, queue_id),
        ).fetchall()
        moved: dict[int, int] = {}
        for from_id, to_id in moves:
            count = connection.execute(
                "UPDATE messages SET queue_id = dead_letter_source_id, dead_letter_source_id = NULL, "
                "attempts = 0, visible_at = 0, lease_token = NULL WHERE queue_id = ? "
                f"AND dead_letter_source_id = ? AND {not_leased}",
                (from_id, to_id, now),
            ).rowcount
            _move_depth(connection, from_id, to_id, count)
            moved[to_id] = moved.get(to_id, 0) + count
        return [(self.queues[to_id], count) for to_id, count in moved.items()]

    # -- sending ---------------------------------------------------------------------------------

    def sends(
        self, connection, requests: list[tuple[Sequence[NewMessage], float, float]], *, queue_id: int
    ) -> list:
        """Every send to one queue in this batch, inserted together (see ``_insert``)."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        self._check_space(sum(len(m.content) for messages, _, _ in requests for m in messages))
        inserts: list[tuple] = []
        keys: list[tuple] = []
        seen_keys: dict[str, int] = {}
        results = []
        for messages, now, window in requests:
            if any(m.key is not None for m in messages):
                self._sweep_keys(connection, now)
            results.append(
                self._plan_send(connection, queue_id, now, window, messages, inserts, keys, seen_keys)
            )
        if inserts:
            _insert(connection, inserts)
            connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (len(inserts), queue_id))
        if keys:
            connection.executemany("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", keys)
        return results

    def _plan_send(self, connection, queue_id, now, window, messages, inserts, keys, seen_keys) -> SendResult:
        """Assign ids to one send's messages and add their rows to ``inserts`` (and ``keys``);
        a repeated idempotency key (in the store or earlier in this batch) gets the first id."""
        if all(m.key is None and m.delay <= 0 for m in messages):  # the common case, in one sweep
            first = self.next_id
            self.next_id += len(messages)
            inserts += [
                (first + i, queue_id, 0.0, now, content_checksum(m.content), m.content)
                for i, m in enumerate(messages)
            ]
            return SendResult(list(range(first, self.next_id)), [False] * len(messages), len(messages))
        ids: list[int] = []
        duplicates: list[bool] = []
        ready = 0
        for message in messages:
            if message.key is not None:
                earlier = seen_keys.get(message.key)
                if earlier is None:
                    hit = connection.execute(
                        "SELECT message_id FROM idempotency_keys "
                        "WHERE queue_id = ? AND key = ? AND expires_at > ?",
                        (queue_id, message.key, now),
                    ).fetchone()
                    earlier = hit[0] if hit else None
                if earlier is not None:
                    ids.append(earlier)
                    duplicates.append(True)
                    continue
            message_id = self.next_id
            self.next_id += 1
            visible_at = now + message.delay if message.delay > 0 else 0.0
            ready += visible_at == 0.0
            inserts.append(
                (message_id, queue_id, visible_at, now, content_checksum(message.content), message.content)
            )
            if message.key is not None:
                seen_keys[message.key] = message_id
                keys.append((queue_id, message.key, message_id, now + window))
            ids.append(message_id)
            duplicates.append(False)
        return SendResult(ids, duplicates, ready)

    def _check_space(self, incoming_bytes: int) -> None:
        """Refuse new messages while the disk is nearly full: SQLite needs room even to delete,
        so receives and acks must keep a reserve to work with. The free space is looked up once
        per batch (a statvfs costs ~2 µs), and again within a batch whose sends could have eaten
        the headroom."""
        self._written_since_look += incoming_bytes * WRITE_AMPLIFICATION
        if not self._space_fresh or self._written_since_look >= self._headroom // 2:
            usage = os.statvfs(self.data_dir)
            free = usage.f_bavail * usage.f_frsize
            self._space_low = free < self.min_free_bytes
            self._headroom = free - self.min_free_bytes
            self._written_since_look = 0
            self._space_fresh = True
        if self._space_low:
            raise StorageFull(
                f"The disk of {self.data_dir} has less than {self.min_free_bytes // (1024 * 1024)} MiB free; "
                "no new messages are taken until there is room (receives and acks still work)."
            )

    def _sweep_keys(self, connection, now: float) -> None:
        if now >= self._next_key_sweep:
            connection.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
            self._next_key_sweep = now + KEY_SWEEP_INTERVAL_SECONDS

    # -- taking ----------------------------------------------------------------------------------

    def takes(
        self,
        connection,
        requests: list[tuple[int, float, Lease | None, DeadLetterRule | None]],
        *,
        queue_id: int,
    ) -> list:
        """Every take from one queue in this batch: one look for all of them, then the oldest
        messages handed out in the order the requests came (removed, or leased, as each asks)."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        now = max(request[1] for request in requests)
        connection.execute(
            "UPDATE messages SET visible_at = 0, lease_token = NULL "
            "WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
            (queue_id, now),
        )
        taken, dead_lettered = self._take_ready(
            connection, queue_id, sum(r[0] for r in requests), requests[0][3]
        )
        results = []
        removed = 0
        for count, _, lease, _ in requests:
            share, taken = taken[:count], taken[count:]
            results.append(TakeResult(self._deliver(connection, share, lease), dead_lettered))
            removed += len(share) if lease is None else 0
            dead_lettered = 0  # reported once, with the first result
        if removed:
            connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (removed, queue_id))
        return results

    def _take_ready(self, connection, queue_id: int, count: int, dead_letter: DeadLetterRule | None):
        """Up to ``count`` ready rows, oldest first; those that used up their attempts go to the
        dead-letter queue instead (how many did is the second value)."""
        taken: list = []
        exhausted: list[int] = []
        after_id = 0
        while len(taken) < count:
            rows = sqlite_reads.ready_rows(connection, queue_id, count - len(taken), after_id)
            if not rows:
                break
            after_id = rows[-1][0]
            for row in rows:
                if dead_letter is not None and row[1] >= dead_letter.max_attempts:
                    exhausted.append(row[0])
                else:
                    taken.append(row)
        if exhausted:
            connection.executemany(
                "UPDATE messages SET queue_id = ?, dead_letter_source_id = ?, attempts = 0, "
                "visible_at = 0, lease_token = NULL WHERE id = ?",
                [(dead_letter.queue_id, queue_id, message_id) for message_id in exhausted],
            )
            _move_depth(connection, queue_id, dead_letter.queue_id, len(exhausted))
            log.info(
                "moved %s from '%s' to its dead-letter queue",
                counted(len(exhausted), "message"),
                self.queues[queue_id].name,
            )
        return taken, len(exhausted)

    def _deliver(self, connection, rows: list, lease: Lease | None) -> list[Delivery]:
        """Remove ``rows`` (no lease) or lease them, each with its token."""
        if not rows:
            return []
        if lease is None:
            connection.executemany("DELETE FROM messages WHERE id = ?", [(row[0],) for row in rows])
            return [
                Delivery(row[0], row[4], row[1] + 1, row[2], dead_letter_source_id=row[5]) for row in rows
            ]
        connection.executemany(
            "UPDATE messages SET visible_at = ?, lease_token = ?, attempts = attempts + 1 WHERE id = ?",
            [(lease.expires_at, token, row[0]) for row, token in zip(rows, lease.tokens, strict=False)],
        )
        return [
            Delivery(row[0], row[4], row[1] + 1, row[2], token, lease.expires_at)
            for row, token in zip(rows, lease.tokens, strict=False)
        ]

    def restores(self, connection, requests: list[tuple[int, Sequence[Delivery]]]) -> list[int]:
        return [self._restore(connection, queue_id, deliveries) for queue_id, deliveries in requests]

    def _restore(self, connection, queue_id: int, deliveries: Sequence[Delivery]) -> int:
        if queue_id not in self.queues:
            return 0
        restored = 0
        for delivery in deliveries:
            if delivery.lease_token is not None:
                restored += connection.execute(
                    "UPDATE messages SET visible_at = 0, lease_token = NULL, attempts = attempts - 1 "
                    "WHERE id = ? AND queue_id = ? AND lease_token = ?",
                    (delivery.id, queue_id, delivery.lease_token),
                ).rowcount
                continue
            source = delivery.dead_letter_source_id if delivery.dead_letter_source_id in self.queues else None
            inserted = connection.execute(
                "INSERT OR IGNORE INTO messages (id, queue_id, visible_at, attempts, enqueued_at, "
                "dead_letter_source_id, checksum, content) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    queue_id,
                    delivery.attempts - 1,
                    delivery.enqueued_at,
                    source,
                    content_checksum(delivery.content),
                    delivery.content,
                ),
            ).rowcount
            connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (inserted, queue_id))
            restored += inserted
        return restored

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
        for message in kept:
            queue_id = queue_ids[message.queue]
            origin = queue_ids.get(message.dead_letter_source) if message.dead_letter_source else None
            rows.append(
                (
                    self.next_id,
                    queue_id,
                    message.visible_at,
                    message.attempts,
                    message.enqueued_at,
                    origin if origin in self.queues else None,
                    content_checksum(message.content),
                    message.content,
                )
            )
            self.next_id += 1
            stored[message.queue] = stored.get(message.queue, 0) + 1
        connection.executemany(
            "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, dead_letter_source_id, "
            "checksum, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for name, count in stored.items():
            connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (count, queue_ids[name]))
            connection.execute(
                "INSERT INTO imports VALUES (?, ?, ?) ON CONFLICT (source, queue_id) DO UPDATE SET last_id = "
                "excluded.last_id",
                (source, queue_ids[name], done[queue_ids[name]]),
            )
        return stored

    # -- settling leases -------------------------------------------------------------------------

    def acks(self, connection, requests: list[tuple[int, int, str, float]]) -> list:
        results = []
        for queue_id, message_id, token, now in requests:
            found = connection.execute(
                "DELETE FROM messages WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
                (message_id, queue_id, token, now),
            ).rowcount
            if found:
                connection.execute("UPDATE queues SET depth = depth - 1 WHERE id = ?", (queue_id,))
            results.append(self._found(queue_id, found))
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


def _move_depth(connection, from_id: int, to_id: int, count: int) -> None:
    connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (count, from_id))
    connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (count, to_id))


def _insert(connection: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert many rows with few statements. One row per statement (``executemany``) costs 2.5
    times as much per row, measured: every statement runs the VM's set-up again and, on an
    AUTOINCREMENT table, rewrites ``sqlite_sequence``."""
    start = 0
    for shape in _INSERT_SHAPES:
        sql = _INSERT_SQL[shape]
        while len(rows) - start >= shape:
            connection.execute(sql, [value for row in rows[start : start + shape] for value in row])
            start += shape
