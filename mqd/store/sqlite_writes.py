"""The SQLite store's writes: each kind of operation as one function over all its requests in a
batch (see batching.py), run by the writer thread inside the batch's transaction.

``Writes`` holds what only the writer thread touches: the catalogue of queues as the database
has it, the next message id, and the free-space verdict. A message is ready when ``visible_at``
is 0; before anyone takes, leases and delays that ran out by ``now`` are made ready again, in
their original place. Per-queue depth is a counter kept in the same transaction as the change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeadLetterQueueInUse, QueueFull, QueueGone, QueueNotFound, StorageFull
from ..logs import counted
from ..model import (
    STORED_SETTINGS,
    Bucket,
    Caps,
    DeadLetterRule,
    Delivery,
    ExportedMessage,
    Lease,
    Limit,
    Queue,
    QueueSettings,
    Removed,
    SendResult,
    Settled,
    TakeResult,
    content_bytes,
    content_checksum,
    held,
    new_in_import,
)
from . import sqlite_reads
from . import sqlite_removals as removals
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


_SETTINGS = ", ".join(STORED_SETTINGS)
_FULL_INSERT = (
    "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content, priority, "
    "grp, expires_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"
)


class _Plan:
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


class _Taking:
    """The ready messages of one queue handed out in one batch: read in pages, each page's
    messages delivered (or removed) before the next page is read, so none is read twice."""

    def __init__(self, connection, queue_id: int, now: float, wanted: int) -> None:
        self.connection = connection
        self.queue_id = queue_id
        self.now = now
        self.wanted = wanted  # by the batch's requests still to be served
        self.page: deque = deque()
        self.dead_lettered = 0
        self.expired = 0
        self.removed = self.removed_bytes = 0  # delivered without a lease, not yet counted

    def finish(self) -> None:
        """Count what was removed, once for the batch."""
        removals.count(self.connection, self.queue_id, -self.removed, -self.removed_bytes)

    def take(self, count: int, lease: Lease | None, rule: DeadLetterRule | None) -> list[Delivery]:
        """Up to ``count`` messages, a page at a time: the next ready ones, each page's expired
        and exhausted messages removed and the others delivered; a group's next message whose
        turn came meanwhile is in line for the next page (as PostgreSQL's one statement per
        page does it)."""
        deliveries: list[Delivery] = []
        while len(deliveries) < count:
            need = count - len(deliveries)
            if not self.page:
                self.page.extend(
                    sqlite_reads.ready_rows(self.connection, self.queue_id, max(need, self.wanted))
                )
            page = self.page
            chunk = (
                [page.popleft()]
                if need == 1 and page
                else [page.popleft() for _ in range(min(need, len(page)))]
            )
            if not chunk:
                break
            if rule is None and all(row[removals.EXPIRES_AT] is None for row in chunk):
                usable = chunk  # the common case: nothing to remove
            else:
                usable = self._remove_spent(chunk, rule)
            if usable:
                deliveries += self._deliver(usable, lease, len(deliveries))
        self.wanted -= count
        return deliveries

    def _remove_spent(self, chunk: list, rule: DeadLetterRule | None) -> list:
        """Remove the expired and exhausted rows of ``chunk``; the others."""
        usable, expired, exhausted = [], [], []
        for row in chunk:
            if row[removals.EXPIRES_AT] is not None and row[removals.EXPIRES_AT] <= self.now:
                expired.append(row)
            elif rule is not None and row[removals.ATTEMPTS] >= rule.max_attempts:
                exhausted.append(row)
            else:
                usable.append(row)
        if expired or exhausted:
            self._remove(expired, exhausted, rule)
        return usable

    def _remove(self, expired: list, exhausted: list, rule: DeadLetterRule | None) -> None:
        dead_letter_queue_id = rule.queue_id if rule is not None else None
        self.expired += len(expired)
        for removed in (expired, exhausted):
            if removed:
                outcome = removals.remove(
                    self.connection, self.queue_id, removed, dead_letter_queue_id, self.now
                )
                self.dead_lettered += outcome.dead_lettered
                if outcome.promoted:
                    self.page.clear()  # a group's next message is in line now: read it in its place
        if exhausted:
            log.info(
                "moved %s from queue %d to its dead-letter queue",
                counted(len(exhausted), "message"),
                self.queue_id,
            )

    def _deliver(self, rows: list, lease: Lease | None, offset: int) -> list[Delivery]:
        """Remove ``rows`` (no lease: the next of their groups get their turn) or lease them."""
        R = removals
        if lease is None:
            self.connection.executemany("DELETE FROM messages WHERE id = ?", [(row[0],) for row in rows])
            self.removed += len(rows)
            for row in rows:
                content = row[4]
                self.removed_bytes += len(content) if content.isascii() else content_bytes(content)
            groups = [row[R.GROUP] for row in rows if row[R.GROUP] is not None]
            if groups:
                R.count(self.connection, self.queue_id, -self.removed, -self.removed_bytes)
                self.removed = self.removed_bytes = 0
                if R.promote(self.connection, self.queue_id, groups, self.now):
                    self.page.clear()
            # Positional, in READY_COLUMNS' order: a thousand of these per large receive.
            return [
                Delivery(
                    id_, content, attempts + 1, enqueued_at, None, None, source, priority, group, expires_at
                )
                for id_, attempts, enqueued_at, _, content, source, group, expires_at, priority in rows
            ]
        tokens = lease.tokens[offset : offset + len(rows)]
        self.connection.executemany(
            "UPDATE messages SET visible_at = ?, lease_token = ?, attempts = attempts + 1, expires_at = NULL "
            "WHERE id = ?",
            [(lease.expires_at, token, row[R.ID]) for row, token in zip(rows, tokens, strict=True)],
        )
        return [
            Delivery(
                row[R.ID],
                row[R.CONTENT],
                row[R.ATTEMPTS] + 1,
                row[R.ENQUEUED_AT],
                token,
                lease.expires_at,
                priority=row[R.PRIORITY],
                group=row[R.GROUP],
                expires_at=row[R.EXPIRES_AT],
            )
            for row, token in zip(rows, tokens, strict=True)
        ]


class Writes:
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

    def updates(self, connection, requests: list[tuple[int, QueueSettings]]) -> list:
        return [self._update(connection, queue_id, settings) for queue_id, settings in requests]

    def _update(self, connection, queue_id: int, settings: QueueSettings):
        queue = self.queues.get(queue_id)
        if queue is None:
            return QueueGone(queue_id)
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

    # -- sending ---------------------------------------------------------------------------------

    def sends(self, connection, requests: list[tuple], *, queue_id: int) -> list:
        """Every send to one queue in this batch: (messages, now, dedup window, limit, dead-letter
        queue id) each. Plain messages to an unbounded queue are inserted together (see
        ``_insert``); a bounded queue takes each send on its own, all or nothing."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        self._check_space(sum(len(m.content) for request in requests for m in request[0]))
        plan = _Plan()
        results = []
        for messages, now, window, limit, dlq_id in requests:
            if any(m.key is not None for m in messages):
                self._sweep_keys(connection, now)
            if limit is None:
                results.append(self._plan_send(connection, queue_id, now, window, messages, plan))
                continue
            alone = _Plan(plan.seen_keys, plan.groups)
            alone.now = now
            result = self._plan_send(connection, queue_id, now, window, messages, alone)
            room = self._make_room(connection, queue_id, limit, alone, dlq_id)
            if isinstance(room, QueueFull):
                self.next_id -= len(alone.rows) + len(alone.full_rows)  # nothing of it is kept
                results.append(room)
                continue
            groups = {row[7] for row in alone.full_rows if row[7] is not None}
            alone.write(connection, queue_id)
            if room.count:  # a group's head dropped before its next was stored: its turn now
                removals.promote(connection, queue_id, groups, now)
            plan.seen_keys, plan.groups = alone.seen_keys, alone.groups
            results.append(dataclasses.replace(result, dropped=room))
        plan.write(connection, queue_id)
        return results

    def _make_room(self, connection, queue_id: int, limit: Limit, plan: _Plan, dlq_id: int | None):
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
        _make_due_ready(connection, queue_id, plan.now)
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

    def _plan_send(self, connection, queue_id, now, window, messages, plan: _Plan) -> SendResult:
        """Assign ids to one send's messages and add their rows to ``plan``; a repeated
        idempotency key (in the store or earlier in this batch) gets the first id."""
        if all(
            m.delay <= 0 and m.key is None and m.group is None and m.ttl is None and not m.priority
            for m in messages
        ):
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

    # -- taking ----------------------------------------------------------------------------------

    def takes(self, connection, requests: list[tuple], *, queue_id: int) -> list:
        """Every take from one queue in this batch, (count, now, lease, dead-letter rule, caps)
        each: the next messages (by priority, then age) handed out in the order the requests
        came, removed or leased as each asks, within the queue's caps. Expired messages and those
        that used up their attempts found on the way are removed instead (see removals.py)."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        now = max(request[1] for request in requests)
        _make_due_ready(connection, queue_id, now)
        capped = any(request[4] is not None for request in requests)
        wanted = 0 if capped else sum(request[0] for request in requests)  # one page for all
        taking = _Taking(connection, queue_id, now, wanted)
        results = []
        for count, _, lease, rule, caps in requests:
            if caps is None:
                deliveries = taking.take(count, lease, rule)
                results.append(TakeResult(deliveries, taking.dead_lettered, taking.expired))
                taking.dead_lettered = taking.expired = 0  # reported once, with the first result
                continue
            allowed = self._allowed(connection, queue_id, now, count, lease, caps)
            deliveries = taking.take(allowed, lease, rule)
            if caps is not None and caps.max_rate is not None:
                self.buckets[queue_id] = self._bucket(queue_id, caps.max_rate, now).spend(len(deliveries))
            capped_until = None
            if (
                allowed < count
                and caps is not None
                and caps.max_rate is not None
                and len(deliveries) == allowed
            ):
                capped_until = self.buckets[queue_id].next_token_at(caps.max_rate, count - len(deliveries))
            results.append(
                TakeResult(
                    deliveries,
                    taking.dead_lettered,
                    taking.expired,
                    capped_until,
                    allowed < count and len(deliveries) == allowed,
                )
            )
            taking.dead_lettered = taking.expired = 0  # reported once, with the first result
        taking.finish()
        return results

    def _bucket(self, queue_id: int, rate: float, now: float) -> Bucket:
        bucket = self.buckets.get(queue_id)
        return (Bucket.full(rate, now) if bucket is None else bucket).refilled(rate, now)

    def _allowed(self, connection, queue_id: int, now: float, count: int, lease, caps: Caps | None) -> int:
        """How many of ``count`` the caps let go now."""
        if caps is None:
            return count
        if caps.max_in_flight is not None and lease is not None:
            leased = connection.execute(
                "SELECT count(*) FROM messages "
                "WHERE queue_id = ? AND visible_at > ? AND lease_token IS NOT NULL",
                (queue_id, now),
            ).fetchone()[0]
            count = min(count, max(0, caps.max_in_flight - leased))
        if caps.max_rate is not None:
            count = min(count, self._bucket(queue_id, caps.max_rate, now).whole)
        return count

    def restores(self, connection, requests: list[tuple[int, Sequence[Delivery]]]) -> list[int]:
        return [self._restore(connection, queue_id, deliveries) for queue_id, deliveries in requests]

    def _restore(self, connection, queue_id: int, deliveries: Sequence[Delivery]) -> int:
        if queue_id not in self.queues:
            return 0
        restored = 0
        for delivery in deliveries:
            if delivery.lease_token is not None:
                restored += connection.execute(
                    "UPDATE messages SET visible_at = 0, lease_token = NULL, attempts = attempts - 1, "
                    "expires_at = ? WHERE id = ? AND queue_id = ? AND lease_token = ?",
                    (delivery.expires_at, delivery.id, queue_id, delivery.lease_token),
                ).rowcount
                continue
            source = delivery.dead_letter_source_id if delivery.dead_letter_source_id in self.queues else None
            inserted = connection.execute(
                "INSERT OR IGNORE INTO messages (id, queue_id, visible_at, attempts, enqueued_at, "
                "dead_letter_source_id, checksum, content, priority, grp, expires_at) "
                "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    queue_id,
                    delivery.attempts - 1,
                    delivery.enqueued_at,
                    source,
                    content_checksum(delivery.content),
                    delivery.content,
                    delivery.priority,
                    delivery.group,
                    delivery.expires_at,
                ),
            ).rowcount
            if inserted and delivery.group is not None:  # back at the head: the next waits again
                connection.execute(
                    "UPDATE messages SET visible_at = -visible_at - 1 WHERE queue_id = ? AND grp = ? "
                    "AND id > ? AND visible_at >= 0 AND lease_token IS NULL",
                    (queue_id, delivery.group, delivery.id),
                )
            removals.count(connection, queue_id, inserted, inserted and content_bytes(delivery.content))
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
        plans: dict[int, _Plan] = {}
        for message in kept:
            queue_id = queue_ids[message.queue]
            plan = plans.setdefault(queue_id, _Plan())
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

    def expiries(self, connection, requests: list[tuple[int, float, int | None, int]]) -> list:
        return [
            removals.expire(connection, queue_id, now, dlq_id, limit)
            if queue_id in self.queues
            else QueueGone(queue_id)
            for queue_id, now, dlq_id, limit in requests
        ]

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


def _make_due_ready(connection: sqlite3.Connection, queue_id: int, now: float) -> None:
    """Leases and delays that ran out by ``now``: ready, in their original place."""
    connection.execute(
        "UPDATE messages SET visible_at = 0, lease_token = NULL "
        "WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
        (queue_id, now),
    )


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
