"""The PostgreSQL store's writes: each kind of operation as statements over all its requests in
a batch (see batching.py), inside the batch's one transaction.

Taking is the pattern of pgmq, Que and graphile-worker: ``SELECT … FOR UPDATE SKIP LOCKED``
takes the oldest ready rows no other transaction holds, so consumers on every node work side by
side without blocking each other and no two get the same message. A send locks its queue's row
(FOR KEY SHARE) and a delete waits for that lock, so no message is ever stored into a queue being
deleted. Depth changes and the notifications to other nodes are gathered per transaction and
written once, at its end (``Changes``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..errors import DataCorrupt, DeadLetterQueueInUse, QueueFull, QueueGone, QueueNotFound
from ..model import (
    Bucket,
    Delivery,
    ExportedMessage,
    NewMessage,
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
from .postgres_migrations import channel

DEPTH_SHARDS = 16  # rows per queue that depth changes add to: nodes rarely share one


class Changes:
    """What one transaction did that others must hear of: depth deltas and notifications."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.depths: dict[int, list[int]] = {}  # queue id: [messages, bytes]
        self.notices: list[str] = []
        self.groups_locked: set[tuple[int, str]] = set()

    def depth(self, queue_id: int, delta: int, size: int = 0) -> None:
        if delta or size:
            counts = self.depths.setdefault(queue_id, [0, 0])
            counts[0] += delta
            counts[1] += size

    async def lock_groups(self, schema: str, queue_id: int, groups) -> None:
        """Hold the groups' locks until the transaction ends: whoever decides whether a message
        waits its turn (a send) and whoever gives the turn on (a removal) take them, so a
        message never waits behind a head another node removed meanwhile."""
        wanted = sorted(
            {g for g in groups if g is not None} - {g for q, g in self.groups_locked if q == queue_id}
        )
        if wanted:
            await self.connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || g, 0)) "
                "FROM unnest($2::text[]) AS g ORDER BY g",
                f"{schema} {queue_id}",
                wanted,
            )
            self.groups_locked.update((queue_id, g) for g in wanted)

    def notify(self, *fields: object) -> None:
        self.notices.append(" ".join(str(field) for field in fields))


class Writes:
    def __init__(self, schema: str, node: str) -> None:
        self.s = schema
        self.node = node  # tells our own notifications from other nodes'
        self.shard = random.randrange(DEPTH_SHARDS)

    async def finish(self, tx: Changes) -> None:
        """Write a transaction's depth deltas and notifications (delivered at its commit)."""
        if not tx.depths and not tx.notices:
            return
        s = self.s
        await tx.connection.execute(
            f"""WITH d AS (INSERT INTO {s}.queue_depths AS x (queue_id, shard, depth, bytes)
                           SELECT q, $1, n, b FROM unnest($2::bigint[], $3::bigint[], $6::bigint[]) AS u(q, n, b)
                           ON CONFLICT (queue_id, shard)
                           DO UPDATE SET depth = x.depth + EXCLUDED.depth, bytes = x.bytes + EXCLUDED.bytes)
                SELECT pg_notify($4, p) FROM unnest($5::text[]) AS p""",
            self.shard,
            list(tx.depths),
            [counts[0] for counts in tx.depths.values()],
            channel(s),
            [f"{notice.split(' ', 1)[0]} {self.node} {notice.split(' ', 1)[1]}" for notice in tx.notices],
            [counts[1] for counts in tx.depths.values()],
        )

    # -- queues ----------------------------------------------------------------------------------

    async def create_queues(self, tx: Changes, requests: list[tuple[str, QueueSettings, float]]) -> list:
        return [await self._create_queue(tx, *request) for request in requests]

    async def _create_queue(self, tx: Changes, name: str, settings: QueueSettings, now: float):
        s = self.s
        row = await tx.connection.fetchrow(
            f"""WITH dlq AS (SELECT id FROM {s}.queues WHERE name = $3),
                     made AS (INSERT INTO {s}.queues (name, created_at, dead_letter_queue_id, {_SETTINGS})
                              SELECT $1, $2, (SELECT id FROM dlq), {_SETTINGS_PARAMETERS}
                              WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM dlq)
                              ON CONFLICT (name) DO NOTHING RETURNING id)
                SELECT (SELECT id FROM made) AS made, (SELECT id FROM dlq) AS dlq""",
            name,
            now,
            settings.dead_letter_queue,
            *settings.stored(),
        )
        if row["made"] is not None:
            return Queue(row["made"], name, now, settings, row["dlq"]), True
        existing = await find_queue(tx.connection, s, name)
        if existing is not None:
            return existing, False
        return QueueNotFound(settings.dead_letter_queue)

    async def updates(self, tx: Changes, requests: list[tuple[int, QueueSettings]]) -> list:
        return [await self._update(tx, queue_id, settings) for queue_id, settings in requests]

    async def _update(self, tx: Changes, queue_id: int, settings: QueueSettings):
        s = self.s
        assignments = ", ".join(
            f"{column.strip()} = ${n}" for n, column in enumerate(_SETTINGS.split(","), start=3)
        )
        row = await tx.connection.fetchrow(
            f"""WITH dlq AS (SELECT id FROM {s}.queues WHERE name = $2)
                UPDATE {s}.queues SET dead_letter_queue_id = (SELECT id FROM dlq), {assignments}
                WHERE id = $1 AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM dlq))
                RETURNING name""",
            queue_id,
            settings.dead_letter_queue,
            *settings.stored(),
        )
        if row is None:
            if await tx.connection.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE id = $1)", queue_id
            ):
                return QueueNotFound(settings.dead_letter_queue)
            return QueueGone(queue_id)
        await tx.connection.execute(f"DELETE FROM {s}.queue_buckets WHERE queue_id = $1", queue_id)
        tx.notify("queue", row["name"])  # other nodes read the settings again
        return (await queues_by_id(tx.connection, s, [queue_id]))[0]

    async def delete_queues(self, tx: Changes, requests: list[int]) -> list:
        return [await self._delete_queue(tx, queue_id) for queue_id in requests]

    async def _delete_queue(self, tx: Changes, queue_id: int):
        s, connection = self.s, tx.connection
        name = await connection.fetchval(f"SELECT name FROM {s}.queues WHERE id = $1 FOR UPDATE", queue_id)
        if name is None:
            return QueueGone(queue_id)
        users = await connection.fetch(
            f"SELECT name FROM {s}.queues WHERE dead_letter_queue_id = $1 ORDER BY name", queue_id
        )
        if users:
            return DeadLetterQueueInUse(name, [user["name"] for user in users])
        await connection.execute(
            f"""WITH gone AS (DELETE FROM {s}.messages WHERE queue_id = $1),
                     keys AS (DELETE FROM {s}.idempotency_keys WHERE queue_id = $1),
                     bindings AS (DELETE FROM {s}.exchange_bindings WHERE queue_id = $1),
                     depths AS (DELETE FROM {s}.queue_depths WHERE queue_id = $1),
                     orphans AS (UPDATE {s}.messages SET dead_letter_source_id = NULL WHERE dead_letter_source_id = $1)
                DELETE FROM {s}.queues WHERE id = $1""",
            queue_id,
        )
        tx.notify("queue", name)
        return None

    async def purges(self, tx: Changes, requests: list[int]) -> list:
        results = []
        for queue_id in requests:
            row = await tx.connection.fetchrow(
                f"""WITH gone AS (DELETE FROM {self.s}.messages WHERE queue_id = $1 RETURNING octet_length(content) AS size)
                    SELECT EXISTS (SELECT 1 FROM {self.s}.queues WHERE id = $1) AS found,
                           (SELECT count(*) FROM gone) AS removed, (SELECT coalesce(sum(size), 0) FROM gone) AS size""",
                queue_id,
            )
            tx.depth(queue_id, -row["removed"], -row["size"])
            results.append(row["removed"] if row["found"] else QueueGone(queue_id))
        return results

    async def redrives(self, tx: Changes, requests: list[tuple[int, float]]) -> list:
        return [await self._redrive(tx, queue_id, now) for queue_id, now in requests]

    async def _redrive(self, tx: Changes, queue_id: int, now: float):
        s, connection = self.s, tx.connection
        if not await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE id = $1)", queue_id):
            return QueueGone(queue_id)
        rows = await connection.fetch(
            f"""WITH moved AS (
                    UPDATE {s}.messages m
                    SET queue_id = m.dead_letter_source_id, dead_letter_source_id = NULL, attempts = 0,
                        visible_at = 0, lease_token = NULL
                    FROM (SELECT id, queue_id AS was FROM {s}.messages
                          WHERE dead_letter_source_id IS NOT NULL AND queue_id <> dead_letter_source_id
                            AND (queue_id = $1 OR dead_letter_source_id = $1)
                            AND (lease_token IS NULL OR visible_at <= $2)
                          FOR UPDATE) AS picked
                    WHERE m.id = picked.id
                    RETURNING m.queue_id AS home, picked.was, octet_length(m.content) AS size)
                SELECT home, was, count(*) AS n, sum(size) AS size FROM moved GROUP BY home, was""",
            queue_id,
            now,
        )
        moved: dict[int, int] = {}
        for row in rows:
            tx.depth(row["was"], -row["n"], -row["size"])
            tx.depth(row["home"], row["n"], row["size"])
            moved[row["home"]] = moved.get(row["home"], 0) + row["n"]
        homes = {q.id: q for q in await queues_by_id(connection, s, list(moved))}
        for home, count in moved.items():
            tx.notify("ready", home, count)
        return [(homes[home], count) for home, count in moved.items() if home in homes]

    # -- exchanges -------------------------------------------------------------------------------

    async def binds(self, tx: Changes, requests: list[tuple[str, list[int]]]) -> list:
        s, results = self.s, []
        for exchange, queue_ids in requests:
            present = await tx.connection.fetch(
                f"SELECT id FROM {s}.queues WHERE id = ANY($1::bigint[]) ORDER BY id FOR KEY SHARE", queue_ids
            )
            if missing := sorted(set(queue_ids) - {row["id"] for row in present}):
                results.append(QueueGone(missing[0]))
                continue
            row = await tx.connection.fetchrow(
                f"""WITH gone AS (DELETE FROM {s}.exchange_bindings WHERE exchange = $1 RETURNING 1),
                         made AS (INSERT INTO {s}.exchange_bindings SELECT $1, q FROM unnest($2::bigint[]) AS q)
                    SELECT count(*) AS found FROM gone""",
                exchange,
                queue_ids,
            )
            results.append(row["found"] == 0)
        return results

    async def unbinds(self, tx: Changes, requests: list[str]) -> list:
        return [
            await tx.connection.fetchval(
                f"WITH gone AS (DELETE FROM {self.s}.exchange_bindings WHERE exchange = $1 RETURNING 1) "
                "SELECT count(*) > 0 FROM gone",
                exchange,
            )
            for exchange in requests
        ]

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

    # -- sending ---------------------------------------------------------------------------------

    async def sends(self, tx: Changes, requests: list[tuple], *, queue_id: int) -> list:
        """Every send to one queue in this batch: (messages, now, dedup window, limit, dead-letter
        queue id) each. Plain messages to an unbounded queue share one INSERT; the others are
        stored one by one (a key is claimed first: a claim by a concurrent sender on any node
        wins, and the loser gets the winner's id)."""
        plain = [r for r in requests if r[3] is None and all(_is_plain(m) for m in r[0])]
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
        if dropped is not None and dropped.count:  # a group's head dropped before its next came
            await self._promote(tx, queue_id, groups, now)
        tx.depth(queue_id, len(stored), sum(content_bytes(m.content) for m, _ in stored))
        ready = sum(1 for _, visible_at in stored if visible_at == 0)
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

    async def remove(self, tx: Changes, queue_id: int, rows: list, dlq_id: int | None, now: float) -> Removed:
        """Remove messages by policy (rows with id, grp and size): to the dead-letter queue
        (where they leave their group and their expiry, and start their attempts afresh), or
        deleted; the next of their groups get their turn."""
        if not rows:
            return Removed()
        ids = [row["id"] for row in rows]
        size = sum(row["size"] for row in rows)
        if dlq_id is None:
            await tx.connection.execute(f"DELETE FROM {self.s}.messages WHERE id = ANY($1::bigint[])", ids)
        else:
            await tx.connection.execute(
                f"""UPDATE {self.s}.messages SET queue_id = $2, dead_letter_source_id = $3, attempts = 0,
                           visible_at = 0, lease_token = NULL, grp = NULL, expires_at = NULL
                    WHERE id = ANY($1::bigint[])""",
                ids,
                dlq_id,
                queue_id,
            )
            tx.depth(dlq_id, len(rows), size)
            tx.notify("ready", dlq_id, len(rows))
        tx.depth(queue_id, -len(rows), -size)
        promoted = await self._promote(tx, queue_id, [row["grp"] for row in rows], now)
        return Removed(len(rows), len(rows) if dlq_id is not None else 0, promoted)

    async def _promote(self, tx: Changes, queue_id: int, groups, now: float) -> int:
        """Give each group's next message its turn: the lowest id left in it, if held, gets its
        own visibility again (ready if that has come by ``now``); how many became ready."""
        groups = sorted({g for g in groups if g is not None})
        if not groups:
            return 0
        await tx.lock_groups(self.s, queue_id, groups)
        rows = await tx.connection.fetch(
            f"""UPDATE {self.s}.messages SET visible_at = CASE WHEN -visible_at - 1 <= $3 THEN 0 ELSE -visible_at - 1 END
                WHERE id IN (SELECT (SELECT id FROM {self.s}.messages WHERE queue_id = $1 AND grp = g
                                     ORDER BY id LIMIT 1) FROM unnest($2::text[]) AS g)
                  AND visible_at < 0
                RETURNING visible_at""",
            queue_id,
            groups,
            now,
        )
        ready = sum(1 for row in rows if row["visible_at"] == 0)
        hidden = [row["visible_at"] for row in rows if row["visible_at"] > 0]
        if ready:
            tx.notify("ready", queue_id, ready)
        if hidden:
            tx.notify("due", queue_id, min(hidden))
        return ready

    async def expiries(self, tx: Changes, requests: list[tuple]) -> list:
        return [await self._expire(tx, *request) for request in requests]

    async def _expire(self, tx: Changes, queue_id: int, now: float, dlq_id: int | None, limit: int):
        s = self.s
        if not await tx.connection.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE id = $1 FOR KEY SHARE)", queue_id
        ):
            return QueueGone(queue_id)
        rows = await tx.connection.fetch(
            f"""SELECT id, grp, octet_length(content) AS size FROM {s}.messages
                WHERE expires_at <= $2 AND queue_id = $1 AND lease_token IS NULL
                ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED""",
            queue_id,
            now,
            limit,
        )
        return await self.remove(tx, queue_id, rows, dlq_id, now)

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

    # -- taking ----------------------------------------------------------------------------------

    async def takes(self, tx: Changes, requests: list[tuple], *, queue_id: int) -> list:
        """Every take from one queue in this batch, (count, now, lease, dead-letter rule, caps)
        each, all removing or all leasing (the kind says which): one look for all of them, the
        next messages (by priority, then age) handed out in request order. Expired messages and
        those that used up their attempts met on the way are removed instead."""
        s, connection = self.s, tx.connection
        now = max(r[1] for r in requests)
        found = await connection.fetchval(
            f"""WITH promoted AS (UPDATE {s}.messages SET visible_at = 0, lease_token = NULL
                                  WHERE queue_id = $1 AND visible_at > 0 AND visible_at <= $2 RETURNING 1)
                SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE id = $1)""",
            queue_id,
            now,
        )
        if not found:
            return [QueueGone(queue_id)] * len(requests)
        leased = requests[0][2] is not None
        caps = requests[-1][4]
        allowed = [r[0] for r in requests]
        bucket = None
        if caps is not None:
            allowed, bucket = await self._allowed(tx, queue_id, now, allowed, leased, caps)
        # Per position in line, the lease it gets: the requests' tokens and expiries, in order.
        tokens = [
            t
            for (_, _, lease, _, _), n in zip(requests, allowed, strict=True)
            for t in (lease.tokens[:n] if lease else [])
        ]
        expiries = [
            lease.expires_at
            for (_, _, lease, _, _), n in zip(requests, allowed, strict=True)
            for _ in range(n)
            if lease
        ]
        wanted = sum(allowed)
        taken: list[Delivery] = []
        dead = expired = 0
        rule = requests[0][3]
        while len(taken) < wanted:
            rows = await connection.fetch(
                self._take_sql(leased),
                queue_id,
                wanted - len(taken),
                rule.max_attempts if rule else None,
                rule.queue_id if rule else None,
                now,
                *((tokens[len(taken) :], expiries[len(taken) :]) if leased else ()),
            )
            got = [row for row in rows if row["kind"] == "taken"]
            removed = [row for row in rows if row["kind"] != "taken"]
            taken += sorted((self._delivery(row, leased) for row in got), key=lambda d: (-d.priority, d.id))
            expired += sum(1 for row in removed if row["kind"] == "expired")
            moved = [row for row in removed if row["kind"] == "dead" or rule is not None]
            dead += len(moved)
            if removed:
                tx.depth(queue_id, -len(removed), -sum(row["size"] for row in removed))
            if moved:
                tx.depth(rule.queue_id, len(moved), sum(row["size"] for row in moved))
                tx.notify("ready", rule.queue_id, len(moved))
            if not leased and got:
                tx.depth(queue_id, -len(got), -sum(row["size"] for row in got))
            groups = [row["grp"] for row in removed] + ([row["grp"] for row in got] if not leased else [])
            promoted = await self._promote(tx, queue_id, groups, now)
            if not removed and not promoted:
                break
        if leased and taken:
            tx.notify("due", queue_id, min(d.lease_expires_at for d in taken))
        if bucket is not None:
            await connection.execute(
                f"""INSERT INTO {s}.queue_buckets AS b VALUES ($1, $2, $3)
                    ON CONFLICT (queue_id) DO UPDATE SET tokens = EXCLUDED.tokens, at = EXCLUDED.at""",
                queue_id,
                bucket.spend(len(taken)).tokens,
                bucket.at,
            )
        results = []
        spent = bucket.spend(len(taken)) if bucket is not None else None
        for (count, *_), share_size in zip(requests, allowed, strict=True):
            share, taken = taken[:share_size], taken[share_size:]
            capped = share_size < count and len(share) == share_size
            capped_until = None
            if capped and spent is not None and caps.max_rate is not None:
                capped_until = (
                    spent.next_token_at(caps.max_rate, count - len(share)) if spent.whole == 0 else None
                )
            results.append(TakeResult(share, dead, expired, capped_until, capped))
            dead = expired = 0
        return results

    async def _allowed(self, tx: Changes, queue_id: int, now: float, counts: list[int], leased: bool, caps):
        """How many each request may take under the queue's caps, and max_rate's bucket now.
        Capped takes of every node go one at a time (the queue's row is locked for them)."""
        s, connection = self.s, tx.connection
        await connection.execute(f"SELECT 1 FROM {s}.queues WHERE id = $1 FOR NO KEY UPDATE", queue_id)
        room = sum(counts)
        if caps.max_in_flight is not None and leased:
            in_flight = await connection.fetchval(
                f"SELECT count(*) FROM {s}.messages WHERE queue_id = $1 AND visible_at > $2 AND lease_token IS NOT NULL",
                queue_id,
                now,
            )
            room = min(room, max(0, caps.max_in_flight - in_flight))
        bucket = None
        if caps.max_rate is not None:
            row = await connection.fetchrow(
                f"SELECT tokens, at FROM {s}.queue_buckets WHERE queue_id = $1", queue_id
            )
            bucket = Bucket(row["tokens"], row["at"]) if row else Bucket.full(caps.max_rate, now)
            bucket = bucket.refilled(caps.max_rate, now)
            room = min(room, bucket.whole)
        allowed = []
        for count in counts:
            allowed.append(min(count, room))
            room -= allowed[-1]
        return allowed, bucket

    def _take_sql(self, leased: bool) -> str:
        s = self.s
        deliver = (
            f"""UPDATE {s}.messages m SET visible_at = ($7::double precision[])[live.n],
                       lease_token = ($6::text[])[live.n], attempts = m.attempts + 1, expires_at = NULL
                FROM live WHERE m.id = live.id
                RETURNING m.id, m.attempts, m.enqueued_at, m.checksum, m.content, m.lease_token,
                          m.visible_at, NULL::bigint AS source, m.priority, m.grp, live.expires_at,
                          octet_length(m.content) AS size"""
            if leased
            else f"""DELETE FROM {s}.messages m USING live WHERE m.id = live.id
                RETURNING m.id, m.attempts + 1 AS attempts, m.enqueued_at, m.checksum, m.content,
                          NULL::text AS lease_token, NULL::double precision AS visible_at,
                          m.dead_letter_source_id AS source, m.priority, m.grp, m.expires_at,
                          octet_length(m.content) AS size"""
        )
        return f"""
            WITH picked AS (SELECT id, attempts, priority, grp, expires_at,
                                   CASE WHEN expires_at <= $5 THEN 'expired'
                                        WHEN attempts >= $3 THEN 'dead' ELSE 'live' END AS fate
                            FROM {s}.messages WHERE queue_id = $1 AND visible_at = 0
                            ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED),
                 dead AS (UPDATE {s}.messages m SET queue_id = $4, dead_letter_source_id = $1, attempts = 0,
                                 visible_at = 0, lease_token = NULL, grp = NULL, expires_at = NULL
                          FROM picked WHERE m.id = picked.id AND picked.fate <> 'live' AND $4::bigint IS NOT NULL
                          RETURNING picked.fate, m.id, picked.grp, octet_length(m.content) AS size),
                 dropped AS (DELETE FROM {s}.messages m USING picked
                             WHERE m.id = picked.id AND picked.fate = 'expired' AND $4::bigint IS NULL
                             RETURNING picked.fate, m.id, picked.grp, octet_length(m.content) AS size),
                 live AS (SELECT id, expires_at, row_number() OVER (ORDER BY priority DESC, id) AS n
                          FROM picked WHERE fate = 'live'),
                 taken AS ({deliver})
            SELECT 'taken' AS kind, * FROM taken
            UNION ALL SELECT fate, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, grp, NULL, size FROM dead
            UNION ALL SELECT fate, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, grp, NULL, size FROM dropped"""

    def _delivery(self, row, leased: bool) -> Delivery:
        if content_checksum(row["content"]) != row["checksum"]:
            raise DataCorrupt(f"Message {row['id']} in PostgreSQL is damaged (checksum mismatch).")
        return Delivery(
            row["id"],
            row["content"],
            row["attempts"],
            row["enqueued_at"],
            row["lease_token"] if leased else None,
            row["visible_at"] if leased else None,
            None if leased else row["source"],
            row["priority"],
            row["grp"],
            row["expires_at"],
        )

    async def restores(self, tx: Changes, requests: list[tuple[int, Sequence[Delivery]]]) -> list[int]:
        results = []
        s = self.s
        for queue_id, deliveries in requests:
            leased = [d for d in deliveries if d.lease_token is not None]
            removed = [d for d in deliveries if d.lease_token is None]
            row = await tx.connection.fetchrow(
                f"""WITH q AS (SELECT id FROM {s}.queues WHERE id = $1 FOR KEY SHARE),
                         released AS (
                            UPDATE {s}.messages m SET visible_at = 0, lease_token = NULL, attempts = m.attempts - 1,
                                                      expires_at = r.expires_at
                            FROM unnest($2::bigint[], $3::text[], $10::double precision[]) AS r(id, token, expires_at)
                            WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = $1
                            RETURNING 1),
                         stored AS (
                            INSERT INTO {s}.messages (id, queue_id, visible_at, attempts, enqueued_at,
                                                      dead_letter_source_id, checksum, content, priority, grp, expires_at)
                            SELECT u.id, $1, 0, u.attempts, u.enqueued_at,
                                   (SELECT x.id FROM {s}.queues x WHERE x.id = u.source), u.checksum, u.content,
                                   u.priority, u.grp, u.expires_at
                            FROM unnest($4::bigint[], $5::integer[], $6::double precision[], $7::bigint[],
                                        $8::bigint[], $9::text[], $11::smallint[], $12::text[], $13::double precision[])
                                 AS u(id, attempts, enqueued_at, source, checksum, content, priority, grp, expires_at)
                            WHERE EXISTS (SELECT 1 FROM q)
                            ON CONFLICT (id) DO NOTHING RETURNING id, grp, octet_length(content) AS size),
                         demoted AS (
                            UPDATE {s}.messages m SET visible_at = -m.visible_at - 1 FROM stored
                            WHERE stored.grp IS NOT NULL AND m.queue_id = $1 AND m.grp = stored.grp
                              AND m.id > stored.id AND m.visible_at >= 0 AND m.lease_token IS NULL)
                    SELECT (SELECT count(*) FROM released) AS released, (SELECT count(*) FROM stored) AS stored,
                           (SELECT coalesce(sum(size), 0) FROM stored) AS size""",
                queue_id,
                [d.id for d in leased],
                [d.lease_token for d in leased],
                [d.id for d in removed],
                [d.attempts - 1 for d in removed],
                [d.enqueued_at for d in removed],
                [d.dead_letter_source_id for d in removed],
                [content_checksum(d.content) for d in removed],
                [d.content for d in removed],
                [d.expires_at for d in leased],
                [d.priority for d in removed],
                [d.group for d in removed],
                [d.expires_at for d in removed],
            )
            tx.depth(queue_id, row["stored"], row["size"])
            restored = row["released"] + row["stored"]
            if restored:
                tx.notify("ready", queue_id, restored)
            results.append(restored)
        return results

    # -- importing -------------------------------------------------------------------------------

    async def imports(self, tx: Changes, requests: list[tuple[str, Sequence[ExportedMessage], dict]]) -> list:
        return [await self._import(tx, *request) for request in requests]

    async def _import(self, tx: Changes, source: str, messages: Sequence[ExportedMessage], queue_ids: dict):
        """One import, all or nothing: new ids, the states as exported, and the source's progress
        per queue, locked (FOR UPDATE) so that two nodes importing one source never both store."""
        s, connection = self.s, tx.connection
        named = sorted({queue_ids[m.queue] for m in messages})
        origins_named = sorted(
            {queue_ids[m.dead_letter_source] for m in messages if m.dead_letter_source in queue_ids}
        )
        present = {
            row["id"]
            for row in await connection.fetch(
                f"SELECT id FROM {s}.queues WHERE id = ANY($1::bigint[]) ORDER BY id FOR KEY SHARE",
                sorted({*named, *origins_named}),  # no queue named here is deleted meanwhile
            )
        }
        if missing := [queue_id for queue_id in named if queue_id not in present]:
            return QueueGone(missing[0])
        await connection.execute(
            f"""INSERT INTO {s}.imports SELECT $1, q, 0 FROM unnest($2::bigint[]) AS q
                ON CONFLICT (source, queue_id) DO NOTHING""",
            source,
            named,
        )
        done = {
            row["queue_id"]: row["last_id"]
            for row in await connection.fetch(
                f"SELECT queue_id, last_id FROM {s}.imports WHERE source = $1 AND queue_id = ANY($2::bigint[]) "
                "ORDER BY queue_id FOR UPDATE",
                source,
                named,
            )
        }
        kept, done = new_in_import(messages, queue_ids, done)
        if not kept:
            return {}
        origins = [queue_ids.get(m.dead_letter_source) if m.dead_letter_source else None for m in kept]
        visible = [m.visible_at for m in kept]
        for queue_id in named:
            groups = sorted({m.group for m in kept if m.group is not None and queue_ids[m.queue] == queue_id})
            await tx.lock_groups(s, queue_id, groups)
            taken = await self._groups_present(tx, queue_id, groups)
            for index, message in enumerate(kept):
                if message.group is not None and queue_ids[message.queue] == queue_id:
                    if message.group in taken:
                        visible[index] = held(message.visible_at)
                    taken.add(message.group)
        await connection.execute(
            f"""INSERT INTO {s}.messages (queue_id, visible_at, attempts, enqueued_at, dead_letter_source_id, checksum,
                                          content, priority, grp, expires_at)
                SELECT u.q, u.v, u.a, u.e, (SELECT x.id FROM {s}.queues x WHERE x.id = u.o), u.c, u.t, u.p, u.g, u.x
                FROM unnest($1::bigint[], $2::double precision[], $3::integer[], $4::double precision[],
                            $5::bigint[], $6::bigint[], $7::text[], $8::smallint[], $9::text[], $10::double precision[])
                     WITH ORDINALITY AS u(q, v, a, e, o, c, t, p, g, x, n)
                ORDER BY u.n""",
            [queue_ids[m.queue] for m in kept],
            visible,
            [m.attempts for m in kept],
            [m.enqueued_at for m in kept],
            origins,
            [content_checksum(m.content) for m in kept],
            [m.content for m in kept],
            [m.priority for m in kept],
            [m.group for m in kept],
            [m.expires_at for m in kept],
        )
        stored: dict[str, int] = {}
        for message in kept:
            stored[message.queue] = stored.get(message.queue, 0) + 1
        last = {queue_ids[name]: done[queue_ids[name]] for name in stored}
        await connection.execute(
            f"""UPDATE {s}.imports i SET last_id = u.l FROM unnest($2::bigint[], $3::bigint[]) AS u(q, l)
                WHERE i.source = $1 AND i.queue_id = u.q""",
            source,
            list(last),
            list(last.values()),
        )
        for name, count in stored.items():
            tx.depth(queue_ids[name], count, sum(content_bytes(m.content) for m in kept if m.queue == name))
            ready = sum(1 for m in kept if m.queue == name and m.visible_at == 0)
            hidden = [m.visible_at for m in kept if m.queue == name and m.visible_at > 0]
            if ready:
                tx.notify("ready", queue_ids[name], ready)
            if hidden:
                tx.notify("due", queue_ids[name], min(hidden))
        return stored

    # -- settling leases -------------------------------------------------------------------------

    async def acks(self, tx: Changes, requests: list[tuple]) -> list:
        rows = await tx.connection.fetch(
            f"""DELETE FROM {self.s}.messages m
                USING unnest($1::bigint[], $2::bigint[], $3::text[], $4::double precision[]) AS u(q, id, token, now)
                WHERE m.id = u.id AND m.queue_id = u.q AND m.lease_token = u.token AND m.visible_at > u.now
                RETURNING m.id, m.queue_id, m.grp, octet_length(m.content) AS size""",
            *_columns(requests, 4),
        )
        promoted: dict[int, int] = {}
        for row in rows:
            tx.depth(row["queue_id"], -1, -row["size"])
            if row["grp"] is not None:
                now = next(r[3] for r in requests if r[1] == row["id"])
                promoted[row["id"]] = await self._promote(tx, row["queue_id"], [row["grp"]], now)
        announced = {r[0] for r in requests if r[4]} & {row["queue_id"] for row in rows}
        for queue_id in announced:
            tx.notify("ready", queue_id, 1)  # a place under max_in_flight for another node's receiver
        found = await self._found(tx, requests, {row["id"] for row in rows})
        return [
            Settled(True, promoted.get(r[1], 0)) if f is True else (Settled(False) if f is False else f)
            for r, f in zip(requests, found, strict=True)
        ]

    async def releases(self, tx: Changes, requests: list[tuple[int, int, str, float, float]]) -> list:
        rows = await tx.connection.fetch(
            f"""UPDATE {self.s}.messages m SET visible_at = u.visible_at, lease_token = NULL
                FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::double precision[], $5::double precision[])
                     AS u(q, id, token, now, visible_at)
                WHERE m.id = u.id AND m.queue_id = u.q AND m.lease_token = u.token AND m.visible_at > u.now
                RETURNING m.id, m.queue_id, m.visible_at""",
            *_columns(requests, 5),
        )
        for row in rows:
            if row["visible_at"] == 0:
                tx.notify("ready", row["queue_id"], 1)
            else:
                tx.notify("due", row["queue_id"], row["visible_at"])
        return await self._found(tx, requests, {row["id"] for row in rows})

    async def extensions(self, tx: Changes, requests: list[tuple[int, int, str, float, float]]) -> list:
        rows = await tx.connection.fetch(
            f"""UPDATE {self.s}.messages m SET visible_at = u.expires_at
                FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::double precision[], $5::double precision[])
                     AS u(q, id, token, now, expires_at)
                WHERE m.id = u.id AND m.queue_id = u.q AND m.lease_token = u.token AND m.visible_at > u.now
                RETURNING m.id""",
            *_columns(requests, 5),
        )
        return await self._found(tx, requests, {row["id"] for row in rows})

    async def _found(self, tx: Changes, requests: list, settled: set[int]) -> list:
        """Each settle's answer: whether its lease was current; QueueGone if its queue is."""
        missing = {r[0] for r in requests if r[1] not in settled}
        live = set()
        if missing:
            rows = await tx.connection.fetch(
                f"SELECT id FROM {self.s}.queues WHERE id = ANY($1::bigint[])", list(missing)
            )
            live = {row["id"] for row in rows}
        return [True if r[1] in settled else (False if r[0] in live else QueueGone(r[0])) for r in requests]


def _columns(requests: list[tuple], width: int) -> list[list]:
    return [[request[i] for request in requests] for i in range(width)]


_SETTINGS = (
    "max_attempts, dedup_window, message_ttl, max_messages, max_bytes, overflow, max_in_flight, max_rate"
)
_SETTINGS_PARAMETERS = "$4, $5, $6, $7, $8, $9, $10, $11"  # after name, created_at and the DLQ's name
QUEUE_COLUMNS = "q.id, q.name, q.created_at, q.dead_letter_queue_id, d.name AS dlq, " + ", ".join(
    f"q.{column.strip()}" for column in _SETTINGS.split(",")
)


def _is_plain(message: NewMessage) -> bool:
    return (
        message.delay <= 0
        and message.key is None
        and message.group is None
        and message.ttl is None
        and not message.priority
    )


def queue_of(row) -> Queue:
    settings = QueueSettings(
        row["max_attempts"],
        row["dlq"],
        row["dedup_window"],
        row["message_ttl"],
        row["max_messages"],
        row["max_bytes"],
        row["overflow"],
        row["max_in_flight"],
        row["max_rate"],
    )
    return Queue(row["id"], row["name"], row["created_at"], settings, row["dead_letter_queue_id"])


async def find_queue(connection, schema: str, name: str) -> Queue | None:
    row = await connection.fetchrow(
        f"SELECT {QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.name = $1",
        name,
    )
    return None if row is None else queue_of(row)


async def queues_by_id(connection, schema: str, ids: list[int]) -> list[Queue]:
    rows = await connection.fetch(
        f"SELECT {QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.id = ANY($1::bigint[])",
        ids,
    )
    return [queue_of(row) for row in rows]
