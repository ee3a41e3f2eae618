"""The SQLite store's message operations: send, receive, lease, ack, release, extend, peek.

A mixin of SQLiteStore (sqlite.py): these methods run in its group-commit worker thread, inside
the transaction of their batch. Sends and receives of one queue that meet in a batch share their
SQL (see group_commit.SharedOperation). A message is ready when ``visible_at`` is 0; leases and
delays that have run out are made ready again (in their original place) before anyone looks.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Sequence

from ..errors import DataCorrupt, ReceiptNotFound, StorageFull
from ..logs import counted
from .base import Delivery, NewMessage, ReceiveResult, SendResult, content_checksum
from .sqlite_queues import QueueRow

log = logging.getLogger("mqd.store")

KEY_SWEEP_INTERVAL_SECONDS = 60.0
WRITE_AMPLIFICATION = 4  # disk bytes per content byte, generously: log frames, index, checkpoint


class MessageOperations:
    """Operations on messages (a mixin of SQLiteStore)."""

    def _send_all(self, connection, sends: list[Sequence[NewMessage]], *, name: str) -> list[SendResult]:
        """Every send to one queue in this batch, inserted together (see ``_insert_messages``)."""
        row = self._row(name)
        self._check_space(sum(len(m.content) for messages in sends for m in messages))
        now = self._clock()
        if any(m.key is not None for messages in sends for m in messages):
            self._sweep_keys(connection, now)
        inserts: list[tuple] = []
        keys: list[tuple] = []
        seen_keys: dict[str, int] = {}
        results = [
            self._plan_send(connection, row, now, messages, inserts, keys, seen_keys) for messages in sends
        ]
        if inserts:
            _insert_messages(connection, inserts)
            connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (len(inserts), row.id))
        if keys:
            connection.executemany("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", keys)
        return results

    def _plan_send(
        self, connection, row: QueueRow, now: float, messages, inserts, keys, seen_keys
    ) -> SendResult:
        """Assign ids to one send's messages and add their rows to ``inserts`` (and ``keys``);
        a repeated idempotency key (in the store or earlier in this batch) gets the first id."""
        if all(m.key is None and m.delay <= 0 for m in messages):  # the common case, in one sweep
            first = self._next_id
            self._next_id += len(messages)
            inserts += [
                (first + i, row.id, 0.0, now, content_checksum(m.content), m.content)
                for i, m in enumerate(messages)
            ]
            return SendResult(list(range(first, self._next_id)), [False] * len(messages), len(messages))
        window = row.queue.settings.dedup_window
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
                        (row.id, message.key, now),
                    ).fetchone()
                    earlier = hit[0] if hit else None
                if earlier is not None:
                    ids.append(earlier)
                    duplicates.append(True)
                    continue
            message_id = self._next_id
            self._next_id += 1
            visible_at = now + message.delay if message.delay > 0 else 0.0
            ready += visible_at == 0.0
            inserts.append(
                (message_id, row.id, visible_at, now, content_checksum(message.content), message.content)
            )
            if message.key is not None:
                seen_keys[message.key] = message_id
                keys.append((row.id, message.key, message_id, now + window))
            ids.append(message_id)
            duplicates.append(False)
        return SendResult(ids, duplicates, ready)

    def _forget_space(self) -> None:
        self._space_fresh = False

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

    def _promote_expired(self, connection, row: QueueRow, now: float) -> None:
        """Make messages whose lease or delay has ended ready again, in their original place."""
        connection.execute(
            "UPDATE messages SET visible_at = 0, lease_token = NULL "
            "WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
            (row.id, now),
        )

    def _ready_rows(self, connection, row: QueueRow, count: int, after_id: int = 0) -> list:
        rows = connection.execute(
            "SELECT id, attempts, enqueued_at, checksum, content, dead_letter_source_id FROM messages "
            "WHERE queue_id = ? AND visible_at = 0 AND id > ? ORDER BY id LIMIT ?",
            (row.id, after_id, count),
        ).fetchall()
        for message_id, _, _, checksum, content, _ in rows:
            if content_checksum(content) != checksum:
                raise DataCorrupt(
                    f"Message {message_id} in {self.path} is damaged (checksum mismatch); "
                    "stop mqd and run its verification."
                )
        return rows

    def _receive_all(
        self, connection, requests: list[tuple[int, float | None]], *, name: str
    ) -> list[ReceiveResult]:
        """Every receive from one queue in this batch (all removing, or all leasing): one SELECT
        for all of them, then the oldest messages handed out in the order the requests came."""
        row = self._row(name)
        now = self._clock()
        self._promote_expired(connection, row, now)
        taken, dead_lettered = self._take_ready(connection, row, sum(count for count, _ in requests))
        results = []
        for count, lease in requests:
            share, taken = taken[:count], taken[count:]
            results.append(ReceiveResult(self._deliver(connection, share, now, lease), dead_lettered))
            dead_lettered = {}  # reported once, with the first result
        if requests[0][1] is None:
            removed = sum(len(result.deliveries) for result in results)
            if removed:
                connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (removed, row.id))
        return results

    def _take_ready(self, connection, row: QueueRow, count: int) -> tuple[list, dict[str, int]]:
        """Up to ``count`` ready messages, oldest first; those that used up their attempts go to
        the dead-letter queue instead."""
        max_attempts = row.queue.settings.max_attempts
        taken: list = []
        exhausted: list[int] = []
        after_id = 0
        while len(taken) < count:
            rows = self._ready_rows(connection, row, count - len(taken), after_id)
            if not rows:
                break
            after_id = rows[-1][0]
            for message in rows:
                if max_attempts is not None and message[1] >= max_attempts:
                    exhausted.append(message[0])
                else:
                    taken.append(message)
        return taken, self._dead_letter(connection, row, exhausted)

    def _deliver(self, connection, rows: list, now: float, lease: float | None) -> list[Delivery]:
        """Remove ``rows`` (no lease) or lease them, each with a fresh receipt."""
        if not rows:
            return []
        if lease is None:
            connection.executemany("DELETE FROM messages WHERE id = ?", [(m[0],) for m in rows])
            names = (
                {row.id: row.queue.name for row in self._queues.values()} if any(m[5] for m in rows) else {}
            )
            return [Delivery(m[0], m[4], m[1] + 1, m[2], dead_letter_source=names.get(m[5])) for m in rows]
        expires_at = now + lease
        tokens = [secrets.token_hex(8) for _ in rows]
        connection.executemany(
            "UPDATE messages SET visible_at = ?, lease_token = ?, attempts = attempts + 1 WHERE id = ?",
            [(expires_at, token, m[0]) for m, token in zip(rows, tokens, strict=True)],
        )
        return [
            Delivery(m[0], m[4], m[1] + 1, m[2], receipt=f"{m[0]}.{token}", lease_expires_at=expires_at)
            for m, token in zip(rows, tokens, strict=True)
        ]

    def _dead_letter(self, connection, row: QueueRow, message_ids: list[int]) -> dict[str, int]:
        if not message_ids:
            return {}
        dlq_id = row.dead_letter_queue_id
        dlq_name = row.queue.settings.dead_letter_queue
        connection.executemany(
            "UPDATE messages SET queue_id = ?, dead_letter_source_id = ?, attempts = 0, "
            "visible_at = 0, lease_token = NULL WHERE id = ?",
            [(dlq_id, row.id, message_id) for message_id in message_ids],
        )
        self._move_depth(connection, row.id, dlq_id, len(message_ids))
        log.info(
            "moved %s from '%s' to dead-letter queue '%s'",
            counted(len(message_ids), "message"),
            row.queue.name,
            dlq_name,
        )
        return {dlq_name: len(message_ids)}

    def _restore(self, connection, name: str, deliveries: Sequence[Delivery]) -> int:
        row = self._queues.get(name)
        if row is None:
            return 0
        restored = 0
        for delivery in deliveries:
            if delivery.receipt is not None:
                message_id, token = _parse_receipt(delivery.receipt)
                restored += connection.execute(
                    "UPDATE messages SET visible_at = 0, lease_token = NULL, attempts = attempts - 1 "
                    "WHERE id = ? AND queue_id = ? AND lease_token = ?",
                    (message_id, row.id, token),
                ).rowcount
            else:
                source = self._queues.get(delivery.dead_letter_source or "")
                inserted = connection.execute(
                    "INSERT OR IGNORE INTO messages (id, queue_id, visible_at, attempts, enqueued_at, "
                    "dead_letter_source_id, checksum, content) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                    (
                        delivery.id,
                        row.id,
                        delivery.attempts - 1,
                        delivery.enqueued_at,
                        source.id if source is not None else None,
                        content_checksum(delivery.content),
                        delivery.content,
                    ),
                ).rowcount
                connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (inserted, row.id))
                restored += inserted
        return restored

    def _peek(self, connection, name: str, count: int) -> list[Delivery]:
        row = self._row(name)
        self._promote_expired(connection, row, self._clock())
        return [Delivery(m[0], m[4], m[1], m[2]) for m in self._ready_rows(connection, row, count)]

    def _ack(self, connection, name: str, receipt: str) -> None:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        cursor = connection.execute(
            "DELETE FROM messages WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (message_id, row.id, token, self._clock()),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        connection.execute("UPDATE queues SET depth = depth - 1 WHERE id = ?", (row.id,))

    def _release(self, connection, name: str, receipt: str, delay: float) -> float:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        now = self._clock()
        visible_at = now + delay if delay > 0 else 0.0
        cursor = connection.execute(
            "UPDATE messages SET visible_at = ?, lease_token = NULL "
            "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (visible_at, message_id, row.id, token, now),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        return visible_at

    def _extend(self, connection, name: str, receipt: str, lease: float) -> float:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        now = self._clock()
        cursor = connection.execute(
            "UPDATE messages SET visible_at = ? "
            "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (now + lease, message_id, row.id, token, now),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        return now + lease

    def _next_visible_at(self, connection, name: str) -> float | None:
        row = self._row(name)
        return connection.execute(
            "SELECT min(visible_at) FROM messages WHERE queue_id = ? AND visible_at > 0", (row.id,)
        ).fetchone()[0]


_INSERT_SHAPES = (128, 32, 8, 2, 1)  # rows per INSERT statement: a few shapes, each prepared once
_INSERT_SQL = {
    rows: "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content) "
    "VALUES " + ", ".join(["(?, ?, ?, 0, ?, ?, ?)"] * rows)
    for rows in _INSERT_SHAPES
}


def _insert_messages(connection: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert many rows with few statements. One row per statement (``executemany``) costs
    2.5 times as much per row, measured: every statement runs the VM's set-up again and, on an
    AUTOINCREMENT table, rewrites ``sqlite_sequence``."""
    start = 0
    for shape in _INSERT_SHAPES:
        sql = _INSERT_SQL[shape]
        while len(rows) - start >= shape:
            connection.execute(sql, [value for row in rows[start : start + shape] for value in row])
            start += shape


def _parse_receipt(receipt: str) -> tuple[int, str]:
    """A receipt is "<message id>.<lease token>": the id finds the row, the token proves the lease."""
    message_id, _, token = receipt.partition(".")
    if not message_id.isdigit() or not token:
        raise ReceiptNotFound(receipt)
    return int(message_id), token
