"""The SQLite store's takes: every take from one queue in a batch, a page of ready messages at a
time, within the queue's caps; and what undoes a take (restores) or removes by expiry. A mixin
of ``sqlite_writes.Writes``, whose state (the catalogue, max_rate's buckets) it uses.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from ..errors import QueueGone
from ..logs import counted
from ..model import Bucket, Caps, DeadLetterRule, Delivery, Lease, TakeResult, content_bytes, content_checksum
from . import sqlite_reads
from . import sqlite_removals as removals

log = logging.getLogger("mqd.store")


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


class Taking:
    """Takes within caps, restores, expiries."""

    def takes(self, connection, requests: list[tuple], *, queue_id: int) -> list:
        """Every take from one queue in this batch, (count, now, lease, dead-letter rule, caps)
        each: the next messages (by priority, then age) handed out in the order the requests
        came, removed or leased as each asks, within the queue's caps. Expired messages and those
        that used up their attempts found on the way are removed instead (see removals.py)."""
        if queue_id not in self.queues:
            return [QueueGone(queue_id)] * len(requests)
        now = max(request[1] for request in requests)
        removals.make_due_ready(connection, queue_id, now)
        capped = any(request[4] is not None for request in requests)
        wanted = 0 if capped else sum(request[0] for request in requests)  # one page for all
        taking = _Taking(connection, queue_id, now, wanted)
        results = []
        for count, _, lease, rule, caps in requests:
            if rule is not None and rule.queue_id not in self.queues:
                rule = None  # its dead-letter queue was deleted after a change of settings
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
            rate_bound = caps.max_rate is not None and self.buckets[queue_id].whole == 0
            if allowed < count and len(deliveries) == allowed and rate_bound:  # held back by max_rate
                capped_until = self.buckets[queue_id].next_token_at(caps.max_rate, count - len(deliveries))
            results.append(
                TakeResult(
                    deliveries,
                    taking.dead_lettered,
                    taking.expired,
                    capped_until,
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
            removals.count(connection, queue_id, inserted, inserted and content_bytes(delivery.content))
            restored += inserted
        for group in {d.group for d in deliveries if d.group is not None and d.lease_token is None}:
            removals.regroup(connection, queue_id, group)  # back in line: whose turn is it now?
        return restored

    def expiries(self, connection, requests: list[tuple[int, float, int | None, int]]) -> list:
        return [
            removals.expire(connection, queue_id, now, dlq_id if dlq_id in self.queues else None, limit)
            if queue_id in self.queues
            else QueueGone(queue_id)
            for queue_id, now, dlq_id, limit in requests
        ]
