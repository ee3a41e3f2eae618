"""The SQLite store's sends: every send to one queue in a batch planned together (ids, keys,
groups, expiry), checked against the queue's limit, and inserted with as few statements as
possible. A mixin of ``sqlite_writes.Writes``, whose state (the catalogue, the next id, the
free-space verdict) it uses.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Sequence

from ..errors import QueueFull, QueueGone, StorageFull
from ..model import Limit, Removed, SendResult, content_bytes, content_checksum, held
from . import sqlite_reads
from . import sqlite_removals as removals

KEY_SWEEP_INTERVAL_SECONDS = 60.0
WRITE_AMPLIFICATION = 4  # disk bytes per content byte, generously: log frames, index, checkpoint
_INSERT_SHAPES = (128, 32, 8, 2, 1)  # rows per INSERT statement: a few shapes, each prepared once
_INSERT_SQL = {
    rows: "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content) "
    "VALUES " + ", ".join(["(?, ?, ?, 0, ?, ?, ?)"] * rows)
    for rows in _INSERT_SHAPES
}


_FULL_INSERT = (
    "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content, priority, "
    "grp, expires_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"
)


class Plan:
    """The rows sends in a batch will insert, and what a later send in the batch must see of
    the earlier ones: their idempotency keys, and the groups that have a head already."""

    def __init__(self, seen_keys: dict[str, int] | None = None, groups: set[str] | None = None) -> None:
        self.rows: list[tuple] = []  # plain messages, in _INSERT_SQL's shape
        self.full_rows: list[tuple] = []  # the others, in _FULL_INSERT's
        self.keys: list[tuple] = []
        self.size = 0  # bytes of content
        self.now = 0.0
        self.seen_keys = dict(seen_keys or {})
        self.groups = set(groups or ())

    def group_taken(self, connection, queue_id: int, group: str) -> bool:
        """Whether the group has a message already (then the next one waits its turn)."""
        if group in self.groups:
            return True
        self.groups.add(group)
        found = connection.execute(
            "SELECT 1 FROM messages WHERE queue_id = ? AND grp = ? LIMIT 1", (queue_id, group)
        ).fetchone()
        return found is not None

    def write(self, connection, queue_id: int) -> None:
        if self.rows:
            _insert(connection, self.rows)
        if self.full_rows:
            connection.executemany(_FULL_INSERT, self.full_rows)
        removals.count(connection, queue_id, len(self.rows) + len(self.full_rows), self.size)
        if self.keys:
            connection.executemany("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", self.keys)
        self.rows, self.full_rows, self.keys, self.size = [], [], [], 0


class Sending:
    """Sends, and fan-outs (several sends, all or nothing)."""

    def fan_outs(self, connection, requests: list[Sequence[tuple]]) -> list:
        """Each request: sends to several queues, all or nothing (a refusal raises: the group,
        alone in its savepoint, is undone)."""
        results = []
        for sends in requests:
            outcome = []
            for queue_id, *send in sends:
                (result,) = self.sends(connection, [tuple(send)], queue_id=queue_id)
                if isinstance(result, Exception):
                    raise result
                outcome.append(result)
            results.append(outcome)
        return results

    def sends(self, connection, requests: list[tuple], *, queue_id: int) -> list:
        """Every send to one queue in this batch: (messages, now, dedup window, limit, dead-letter
        queue id) each. Plain messages to an unbounded queue are inserted together (see
        ``_insert``); a bounded queue takes each send on its own, all or nothing."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        self._check_space(sum(len(m.content) for request in requests for m in request[0]))
        plan = Plan()
        results = []
        for messages, now, window, limit, dlq_id in requests:
            dlq_id = dlq_id if dlq_id in self.queues else None  # deleted after a change of settings
            if any(m.key is not None for m in messages):
                self._sweep_keys(connection, now)
            if limit is None:
                results.append(self._plan_send(connection, queue_id, now, window, messages, plan))
                continue
            alone = Plan(plan.seen_keys, plan.groups)
            alone.now = now
            result = self._plan_send(connection, queue_id, now, window, messages, alone)
            room = self._make_room(connection, queue_id, limit, alone, dlq_id)
            if isinstance(room, QueueFull):
                self.next_id -= len(alone.rows) + len(alone.full_rows)  # nothing of it is kept
                results.append(room)
                continue
            groups = {row[7] for row in alone.full_rows if row[7] is not None}
            alone.write(connection, queue_id)
            promoted = 0
            if room.count:  # a group's head dropped before its next was stored: its turn now
                promoted = removals.promote(connection, queue_id, groups, now)
            plan.seen_keys, plan.groups = alone.seen_keys, alone.groups
            results.append(dataclasses.replace(result, dropped=room, ready=result.ready + promoted))
        plan.write(connection, queue_id)
        return results

    def _make_room(self, connection, queue_id: int, limit: Limit, plan: Plan, dlq_id: int | None):
        """Whether ``plan``'s messages fit the queue's limit, dropping its head to make room if
        the limit says so: the messages dropped, or QueueFull (nothing changed)."""
        name = self.queues[queue_id].name
        depth, size = connection.execute(
            "SELECT depth, bytes FROM queues WHERE id = ?", (queue_id,)
        ).fetchone()
        incoming = len(plan.rows) + len(plan.full_rows)
        if not incoming:  # repeats of earlier sends only: nothing to store, nothing to refuse
            return Removed()
        over_messages, over_bytes = limit.excess(depth + incoming, size + plan.size)
        if not (over_messages or over_bytes):
            return Removed()
        if not limit.admits(incoming, plan.size):
            return QueueFull(name, limit.describe(), never=True)
        if not limit.drop_oldest:
            return QueueFull(name, limit.describe())
        removals.make_due_ready(connection, queue_id, plan.now)
        victims: list = []
        while over_messages > 0 or over_bytes > 0:
            more = sqlite_reads.ready_rows(connection, queue_id, len(victims) + max(1, over_messages) + 63)
            if len(more) == len(victims):  # the rest is leased or delayed: nothing to drop
                return QueueFull(name, limit.describe())
            for row in more[len(victims) :]:
                if over_messages <= 0 and over_bytes <= 0:
                    break
                victims.append(row)
                over_messages -= 1
                over_bytes -= content_bytes(row[removals.CONTENT])
        return removals.remove(connection, queue_id, victims, dlq_id, plan.now)

    def _plan_send(self, connection, queue_id, now, window, messages, plan: Plan) -> SendResult:
        """Assign ids to one send's messages and add their rows to ``plan``; a repeated
        idempotency key (in the store or earlier in this batch) gets the first id."""
        if all(m.plain for m in messages):
            first = self.next_id  # the common case, in one sweep
            self.next_id += len(messages)
            plan.rows += [
                (first + i, queue_id, 0.0, now, content_checksum(m.content), m.content)
                for i, m in enumerate(messages)
            ]
            plan.size += sum(content_bytes(m.content) for m in messages)
            return SendResult(list(range(first, self.next_id)), [False] * len(messages), len(messages))
        ids: list[int] = []
        duplicates: list[bool] = []
        ready = 0
        for message in messages:
            if message.key is not None:
                earlier = plan.seen_keys.get(message.key)
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
            visible_at, expires_at = message.times(now)
            if message.group is not None and plan.group_taken(connection, queue_id, message.group):
                visible_at = held(visible_at)
            ready += visible_at == 0.0
            plan.full_rows.append(
                (
                    message_id,
                    queue_id,
                    visible_at,
                    now,
                    content_checksum(message.content),
                    message.content,
                    message.priority,
                    message.group,
                    expires_at,
                )
            )
            plan.size += content_bytes(message.content)
            if message.key is not None:
                plan.seen_keys[message.key] = message_id
                plan.keys.append((queue_id, message.key, message_id, now + window))
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
