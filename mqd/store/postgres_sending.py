"""The PostgreSQL store's sends: plain messages to an unbounded queue in one INSERT for a whole
batch; the others one by one, with their keys claimed, their groups' turns decided under the
groups' locks, and a bounded queue's limit checked under its row's lock. A mixin of
``postgres_writes.Writes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import QueueFull, QueueGone
from ..model import (
    Removed,
    SendResult,
    content_bytes,
    content_checksum,
    held,
)

if TYPE_CHECKING:
    from .postgres_writes import Changes


class Sending:
    """Sends, and fan-outs (several sends, all or nothing)."""

    async def fan_outs(self, tx: Changes, requests: list) -> list:
        """Each request: sends to several queues, all or nothing (a refusal raises: the
        transaction is committed again without it)."""
        results = []
        for sends in requests:
            outcome = []
            for queue_id, *send in sends:
                (result,) = await self.sends(tx, [tuple(send)], queue_id=queue_id)
                if isinstance(result, Exception):
                    raise result
                outcome.append(result)
            results.append(outcome)
        return results

    async def sends(self, tx: Changes, requests: list[tuple], *, queue_id: int) -> list:
        """Every send to one queue in this batch: (messages, now, dedup window, limit, dead-letter
        queue id) each. Plain messages to an unbounded queue share one INSERT; the others are
        stored one by one (a key is claimed first: a claim by a concurrent sender on any node
        wins, and the loser gets the winner's id)."""
        plain = [r for r in requests if r[3] is None and all(m.plain for m in r[0])]
        keys = sorted({m.key for r in requests for m in r[0] if m.key is not None})
        if keys:  # claimed in one order by every node's transactions: none waits in a cycle
            await tx.connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || k, 1)) FROM unnest($2::text[]) AS k "
                "ORDER BY k",
                f"{self.s} {queue_id}",
                keys,
            )
        results: dict[int, SendResult | QueueGone] = {}
        if plain:
            for request, result in zip(plain, await self._send_plain(tx, queue_id, plain), strict=True):
                results[id(request)] = result
        for request in requests:
            if id(request) not in results:
                results[id(request)] = await self._send_each(tx, queue_id, *request)
        return [results[id(request)] for request in requests]

    async def _send_plain(self, tx: Changes, queue_id: int, requests: list) -> list:
        now = requests[0][1]
        messages = [m for r in requests for m in r[0]]
        s = self.s
        ids = await tx.connection.fetch(
            f"""WITH q AS (SELECT id FROM {s}.queues WHERE id = $1 FOR KEY SHARE)
                INSERT INTO {s}.messages AS m (queue_id, visible_at, attempts, enqueued_at, checksum, content)
                SELECT $1, 0, 0, $2, u.c, u.t
                FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS u(t, c, n)
                WHERE EXISTS (SELECT 1 FROM q)
                ORDER BY u.n
                RETURNING m.id""",
            queue_id,
            now,
            [m.content for m in messages],
            [content_checksum(m.content) for m in messages],
        )
        if not ids:
            return [QueueGone(queue_id)] * len(requests)
        all_ids = [row["id"] for row in ids]
        tx.depth(queue_id, len(messages), sum(content_bytes(m.content) for m in messages))
        tx.notify("ready", queue_id, len(messages))
        results = []
        start = 0
        for request in requests:
            size = len(request[0])
            results.append(SendResult(all_ids[start : start + size], [False] * size, size))
            start += size
        return results

    async def _send_each(
        self, tx: Changes, queue_id: int, messages, now: float, window: float, limit, dlq_id
    ):
        """One send, all or nothing, message by message: keys, groups, expiry, the limit."""
        s, connection = self.s, tx.connection
        lock = "FOR NO KEY UPDATE" if limit is not None else "FOR KEY SHARE"  # bounded: one send at a time
        name = await connection.fetchval(f"SELECT name FROM {s}.queues WHERE id = $1 {lock}", queue_id)
        if name is None:
            return QueueGone(queue_id)
        groups = sorted({m.group for m in messages if m.group is not None})
        await tx.lock_groups(s, queue_id, groups)
        taken_groups = await self._groups_present(tx, queue_id, groups)
        dropped = None
        if limit is not None:
            dlq_id = await self.live_queue(tx, dlq_id)
            fresh = await self._fresh(tx, queue_id, messages, now)
            dropped = await self._make_room(tx, queue_id, name, limit, fresh, dlq_id, now)
            if isinstance(dropped, QueueFull):
                return dropped
        ids, duplicates, stored = [], [], []
        for message in messages:
            earlier = None
            if message.key is not None:
                earlier = await connection.fetchval(
                    f"SELECT message_id FROM {s}.idempotency_keys WHERE queue_id = $1 AND key = $2 AND expires_at > $3",
                    queue_id,
                    message.key,
                    now,
                )
            if earlier is None:
                visible_at, expires_at = message.times(now)
                if message.group is not None:
                    if message.group in taken_groups:
                        visible_at = held(visible_at)
                    taken_groups.add(message.group)
                new_id = await connection.fetchval(
                    f"""INSERT INTO {s}.messages (queue_id, visible_at, attempts, enqueued_at, checksum, content,
                                                  priority, grp, expires_at)
                        VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8) RETURNING id""",
                    queue_id,
                    visible_at,
                    now,
                    content_checksum(message.content),
                    message.content,
                    message.priority,
                    message.group,
                    expires_at,
                )
                earlier = (
                    new_id
                    if message.key is None
                    else await self._claim(tx, queue_id, message.key, new_id, now + window, now)
                )
                if earlier == new_id:
                    ids.append(new_id)
                    duplicates.append(False)
                    stored.append((message, visible_at))
                    continue
            ids.append(earlier)
            duplicates.append(True)
        promoted = 0
        if dropped is not None and dropped.count:  # a group's head dropped before its next came
            promoted = await self._promote(tx, queue_id, groups, now)
        tx.depth(queue_id, len(stored), sum(content_bytes(m.content) for m, _ in stored))
        ready = sum(1 for _, visible_at in stored if visible_at == 0) + promoted
        hidden = [visible_at for _, visible_at in stored if visible_at > 0]
        if ready:
            tx.notify("ready", queue_id, ready)
        if hidden:
            tx.notify("due", queue_id, min(hidden))
        return SendResult(ids, duplicates, ready, dropped)

    async def _groups_present(self, tx: Changes, queue_id: int, groups: list[str]) -> set[str]:
        """Those of ``groups`` that have a message in the queue: one seek each."""
        if not groups:
            return set()
        rows = await tx.connection.fetch(
            f"""SELECT g FROM unnest($2::text[]) AS g
                WHERE EXISTS (SELECT 1 FROM {self.s}.messages WHERE queue_id = $1 AND grp = g)""",
            queue_id,
            groups,
        )
        return {row["g"] for row in rows}

    async def _fresh(self, tx: Changes, queue_id: int, messages, now: float) -> list:
        """The messages of a send that are not repeats of a live key (what a limit must fit)."""
        keys = [m.key for m in messages if m.key is not None]
        live = set()
        if keys:
            rows = await tx.connection.fetch(
                f"SELECT key FROM {self.s}.idempotency_keys WHERE queue_id = $1 AND key = ANY($2::text[]) "
                "AND expires_at > $3",
                queue_id,
                keys,
                now,
            )
            live = {row["key"] for row in rows}
        fresh, seen = [], set()
        for message in messages:
            if message.key is None or (message.key not in live and message.key not in seen):
                fresh.append(message)
            if message.key is not None:
                seen.add(message.key)
        return fresh

    async def _make_room(self, tx: Changes, queue_id: int, name: str, limit, fresh: list, dlq_id, now: float):
        """Whether ``fresh`` fits the queue's limit, dropping its head to make room if the limit
        says so: the messages dropped, or QueueFull (nothing changed)."""
        if not fresh:  # repeats of earlier sends only: nothing to store, nothing to refuse
            return Removed()
        row = await tx.connection.fetchrow(
            f"SELECT coalesce(sum(depth), 0) AS depth, coalesce(sum(bytes), 0) AS size "
            f"FROM {self.s}.queue_depths WHERE queue_id = $1",
            queue_id,
        )
        pending = tx.depths.get(queue_id, [0, 0])
        incoming = sum(content_bytes(m.content) for m in fresh)
        over_messages, over_bytes = limit.excess(
            row["depth"] + pending[0] + len(fresh), row["size"] + pending[1] + incoming
        )
        if not (over_messages or over_bytes):
            return Removed()
        if not limit.admits(len(fresh), incoming):
            return QueueFull(name, limit.describe(), never=True)
        if not limit.drop_oldest:
            return QueueFull(name, limit.describe())
        await tx.connection.execute(
            f"""UPDATE {self.s}.messages SET visible_at = 0, lease_token = NULL
                WHERE queue_id = $1 AND visible_at > 0 AND visible_at <= $2""",
            queue_id,
            now,
        )
        victims: list = []
        while over_messages > 0 or over_bytes > 0:
            rows = await tx.connection.fetch(
                f"""SELECT id, grp, octet_length(content) AS size FROM {self.s}.messages
                    WHERE queue_id = $1 AND visible_at = 0 AND id <> ALL($3::bigint[])
                    ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED""",
                queue_id,
                max(1, over_messages) + 63,
                [victim["id"] for victim in victims],
            )
            if not rows:  # the rest is leased or delayed (or another node's): nothing to drop
                return QueueFull(name, limit.describe())
            for victim in rows:
                if over_messages <= 0 and over_bytes <= 0:
                    break
                victims.append(victim)
                over_messages -= 1
                over_bytes -= victim["size"]
        return await self.remove(tx, queue_id, victims, dlq_id, now)

    async def _claim(
        self, tx: Changes, queue_id: int, key: str, message_id: int, expires_at: float, now: float
    ) -> int:
        """The id the key stands for: ours if we claimed it, else the live claim's (ours undone)."""
        s, connection = self.s, tx.connection
        claimed = await connection.fetchval(
            f"""INSERT INTO {s}.idempotency_keys AS k VALUES ($1, $2, $3, $4)
                ON CONFLICT (queue_id, key) DO UPDATE SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at
                WHERE k.expires_at <= $5 RETURNING message_id""",
            queue_id,
            key,
            message_id,
            expires_at,
            now,
        )
        if claimed is not None:
            return claimed
        await connection.execute(f"DELETE FROM {s}.messages WHERE id = $1", message_id)
        return await connection.fetchval(
            f"SELECT message_id FROM {s}.idempotency_keys WHERE queue_id = $1 AND key = $2", queue_id, key
        )

    async def sweep_keys(self, connection, now: float) -> None:
        await connection.execute(f"DELETE FROM {self.s}.idempotency_keys WHERE expires_at <= $1", now)
