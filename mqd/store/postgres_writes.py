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

from ..errors import DataCorrupt, DeadLetterQueueInUse, QueueGone, QueueNotFound
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
from .postgres_migrations import channel

DEPTH_SHARDS = 16  # rows per queue that depth changes add to: nodes rarely share one


class Changes:
    """What one transaction did that others must hear of: depth deltas and notifications."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.depths: dict[int, int] = {}
        self.notices: list[str] = []

    def depth(self, queue_id: int, delta: int) -> None:
        if delta:
            self.depths[queue_id] = self.depths.get(queue_id, 0) + delta

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
            f"""WITH d AS (INSERT INTO {s}.queue_depths AS x (queue_id, shard, depth)
                           SELECT q, $1, n FROM unnest($2::bigint[], $3::bigint[]) AS u(q, n)
                           ON CONFLICT (queue_id, shard) DO UPDATE SET depth = x.depth + EXCLUDED.depth)
                SELECT pg_notify($4, p) FROM unnest($5::text[]) AS p""",
            self.shard,
            list(tx.depths),
            list(tx.depths.values()),
            channel(s),
            [f"{notice.split(' ', 1)[0]} {self.node} {notice.split(' ', 1)[1]}" for notice in tx.notices],
        )

    # -- queues ----------------------------------------------------------------------------------

    async def create_queues(self, tx: Changes, requests: list[tuple[str, QueueSettings, float]]) -> list:
        return [await self._create_queue(tx, *request) for request in requests]

    async def _create_queue(self, tx: Changes, name: str, settings: QueueSettings, now: float):
        s = self.s
        row = await tx.connection.fetchrow(
            f"""WITH dlq AS (SELECT id FROM {s}.queues WHERE name = $3),
                     made AS (INSERT INTO {s}.queues (name, created_at, max_attempts, dead_letter_queue_id, dedup_window)
                              SELECT $1, $5, $2, (SELECT id FROM dlq), $4
                              WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM dlq)
                              ON CONFLICT (name) DO NOTHING RETURNING id)
                SELECT (SELECT id FROM made) AS made, (SELECT id FROM dlq) AS dlq""",
            name,
            settings.max_attempts,
            settings.dead_letter_queue,
            settings.dedup_window,
            now,
        )
        if row["made"] is not None:
            return Queue(row["made"], name, now, settings, row["dlq"]), True
        existing = await find_queue(tx.connection, s, name)
        if existing is not None:
            return existing, False
        return QueueNotFound(settings.dead_letter_queue)

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
                f"""WITH gone AS (DELETE FROM {self.s}.messages WHERE queue_id = $1 RETURNING 1)
                    SELECT EXISTS (SELECT 1 FROM {self.s}.queues WHERE id = $1) AS found,
                           (SELECT count(*) FROM gone) AS removed""",
                queue_id,
            )
            tx.depth(queue_id, -row["removed"])
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
                    RETURNING m.queue_id AS home, picked.was)
                SELECT home, was, count(*) AS n FROM moved GROUP BY home, was""",
            queue_id,
            now,
        )
        moved: dict[int, int] = {}
        for row in rows:
            tx.depth(row["was"], -row["n"])
            tx.depth(row["home"], row["n"])
            moved[row["home"]] = moved.get(row["home"], 0) + row["n"]
        homes = {q.id: q for q in await queues_by_id(connection, s, list(moved))}
        for home, count in moved.items():
            tx.notify("ready", home, count)
        return [(homes[home], count) for home, count in moved.items() if home in homes]

    # -- sending ---------------------------------------------------------------------------------

    async def sends(
        self, tx: Changes, requests: list[tuple[Sequence[NewMessage], float, float]], *, queue_id: int
    ) -> list:
        """Every send to one queue in this batch. Those without idempotency keys share one
        INSERT; those with keys claim each key first (a claim by a concurrent sender on any node
        wins, and the loser gets the winner's id)."""
        plain = [r for r in requests if all(m.key is None for m in r[0])]
        results: dict[int, SendResult | QueueGone] = {}
        if plain:
            for request, result in zip(plain, await self._send_plain(tx, queue_id, plain), strict=True):
                results[id(request)] = result
        for request in requests:
            if id(request) not in results:
                results[id(request)] = await self._send_keyed(tx, queue_id, *request)
        return [results[id(request)] for request in requests]

    async def _send_plain(self, tx: Changes, queue_id: int, requests: list) -> list:
        now = requests[0][1]
        messages = [m for r in requests for m in r[0]]
        s = self.s
        ids = await tx.connection.fetch(
            f"""WITH q AS (SELECT id FROM {s}.queues WHERE id = $1 FOR KEY SHARE)
                INSERT INTO {s}.messages AS m (queue_id, visible_at, attempts, enqueued_at, checksum, content)
                SELECT $1, CASE WHEN u.d > 0 THEN $2 + u.d ELSE 0 END, 0, $2, u.c, u.t
                FROM unnest($3::text[], $4::double precision[], $5::bigint[]) WITH ORDINALITY AS u(t, d, c, n)
                WHERE EXISTS (SELECT 1 FROM q)
                ORDER BY u.n
                RETURNING m.id""",
            queue_id,
            now,
            [m.content for m in messages],
            [float(m.delay) for m in messages],
            [content_checksum(m.content) for m in messages],
        )
        if not ids:
            return [QueueGone(queue_id)] * len(requests)
        all_ids = [row["id"] for row in ids]
        self._sent(tx, queue_id, now, messages)
        results = []
        start = 0
        for request in requests:
            size = len(request[0])
            results.append(
                SendResult(
                    all_ids[start : start + size], [False] * size, sum(m.delay <= 0 for m in request[0])
                )
            )
            start += size
        return results

    def _sent(self, tx: Changes, queue_id: int, now: float, messages: Sequence[NewMessage]) -> None:
        tx.depth(queue_id, len(messages))
        ready = sum(1 for m in messages if m.delay <= 0)
        delays = [m.delay for m in messages if m.delay > 0]
        if ready:
            tx.notify("ready", queue_id, ready)
        if delays:
            tx.notify("due", queue_id, now + min(delays))

    async def _send_keyed(self, tx: Changes, queue_id: int, messages, now: float, window: float):
        s, connection = self.s, tx.connection
        if not await connection.fetchval(f"SELECT id FROM {s}.queues WHERE id = $1 FOR KEY SHARE", queue_id):
            return QueueGone(queue_id)
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
                new_id = await connection.fetchval(
                    f"""INSERT INTO {s}.messages (queue_id, visible_at, attempts, enqueued_at, checksum, content)
                        VALUES ($1, CASE WHEN $2 > 0 THEN $3 + $2 ELSE 0 END, 0, $3, $4, $5) RETURNING id""",
                    queue_id,
                    float(message.delay),
                    now,
                    content_checksum(message.content),
                    message.content,
                )
                earlier = (
                    new_id
                    if message.key is None
                    else await self._claim(tx, queue_id, message.key, new_id, now + window, now)
                )
                if earlier == new_id:
                    ids.append(new_id)
                    duplicates.append(False)
                    stored.append(message)
                    continue
            ids.append(earlier)
            duplicates.append(True)
        self._sent(tx, queue_id, now, stored)
        return SendResult(ids, duplicates, sum(1 for m in stored if m.delay <= 0))

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

    async def takes(
        self,
        tx: Changes,
        requests: list[tuple[int, float, Lease | None, DeadLetterRule | None]],
        *,
        queue_id: int,
    ) -> list:
        """Every take from one queue in this batch, all removing or all leasing (the kind says
        which): one look for all of them, the oldest messages handed out in request order."""
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
        # Per position in line, the lease it gets: the requests' tokens and expiries, in order.
        tokens = [t for _, _, lease, _ in requests for t in (lease.tokens if lease else [])]
        expiries = [lease.expires_at for count, _, lease, _ in requests for _ in range(count) if lease]
        wanted = sum(r[0] for r in requests)
        taken: list[Delivery] = []
        dead = 0
        rule = requests[0][3]
        while len(taken) < wanted:
            rows = await connection.fetch(
                self._take_sql(leased),
                queue_id,
                wanted - len(taken),
                rule.max_attempts if rule else None,
                rule.queue_id if rule else None,
                *((tokens[len(taken) :], expiries[len(taken) :]) if leased else ()),
            )
            got = [row for row in rows if row["kind"] == "taken"]
            exhausted = len(rows) - len(got)
            taken += sorted((self._delivery(row, leased) for row in got), key=lambda d: d.id)
            dead += exhausted
            if not exhausted:
                break
        if dead:
            tx.depth(queue_id, -dead)
            tx.depth(rule.queue_id, dead)
            tx.notify("ready", rule.queue_id, dead)
        if not leased:
            tx.depth(queue_id, -len(taken))
        elif taken:
            tx.notify("due", queue_id, min(d.lease_expires_at for d in taken))
        results = []
        for count, _, _, _ in requests:
            share, taken = taken[:count], taken[count:]
            results.append(TakeResult(share, dead))
            dead = 0
        return results

    def _take_sql(self, leased: bool) -> str:
        s = self.s
        deliver = (
            f"""UPDATE {s}.messages m SET visible_at = ($6::double precision[])[live.n],
                       lease_token = ($5::text[])[live.n], attempts = m.attempts + 1
                FROM live WHERE m.id = live.id
                RETURNING m.id, m.attempts, m.enqueued_at, m.checksum, m.content, m.lease_token,
                          m.visible_at, NULL::bigint AS source"""
            if leased
            else f"""DELETE FROM {s}.messages m USING live WHERE m.id = live.id
                RETURNING m.id, m.attempts + 1 AS attempts, m.enqueued_at, m.checksum, m.content,
                          NULL::text AS lease_token, NULL::double precision AS visible_at,
                          m.dead_letter_source_id AS source"""
        )
        return f"""
            WITH picked AS (SELECT id, attempts FROM {s}.messages WHERE queue_id = $1 AND visible_at = 0
                            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),
                 dead AS (UPDATE {s}.messages m SET queue_id = $4, dead_letter_source_id = $1, attempts = 0,
                                 visible_at = 0, lease_token = NULL
                          FROM picked WHERE m.id = picked.id AND picked.attempts >= $3 RETURNING m.id),
                 live AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM picked
                          WHERE $3::integer IS NULL OR attempts < $3),
                 taken AS ({deliver})
            SELECT 'taken' AS kind, * FROM taken
            UNION ALL SELECT 'dead', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM dead"""

    def _delivery(self, row, leased: bool) -> Delivery:
        if content_checksum(row["content"]) != row["checksum"]:
            raise DataCorrupt(f"Message {row['id']} in PostgreSQL is damaged (checksum mismatch).")
        if leased:
            return Delivery(
                row["id"],
                row["content"],
                row["attempts"],
                row["enqueued_at"],
                row["lease_token"],
                row["visible_at"],
            )
        return Delivery(
            row["id"],
            row["content"],
            row["attempts"],
            row["enqueued_at"],
            dead_letter_source_id=row["source"],
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
                            UPDATE {s}.messages m SET visible_at = 0, lease_token = NULL, attempts = m.attempts - 1
                            FROM unnest($2::bigint[], $3::text[]) AS r(id, token)
                            WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = $1
                            RETURNING 1),
                         stored AS (
                            INSERT INTO {s}.messages (id, queue_id, visible_at, attempts, enqueued_at,
                                                      dead_letter_source_id, checksum, content)
                            SELECT u.id, $1, 0, u.attempts, u.enqueued_at,
                                   (SELECT x.id FROM {s}.queues x WHERE x.id = u.source), u.checksum, u.content
                            FROM unnest($4::bigint[], $5::integer[], $6::double precision[], $7::bigint[],
                                        $8::bigint[], $9::text[]) AS u(id, attempts, enqueued_at, source, checksum, content)
                            WHERE EXISTS (SELECT 1 FROM q)
                            ON CONFLICT (id) DO NOTHING RETURNING 1)
                    SELECT (SELECT count(*) FROM released) AS released, (SELECT count(*) FROM stored) AS stored""",
                queue_id,
                [d.id for d in leased],
                [d.lease_token for d in leased],
                [d.id for d in removed],
                [d.attempts - 1 for d in removed],
                [d.enqueued_at for d in removed],
                [d.dead_letter_source_id for d in removed],
                [content_checksum(d.content) for d in removed],
                [d.content for d in removed],
            )
            tx.depth(queue_id, row["stored"])
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
        await connection.execute(
            f"""INSERT INTO {s}.messages (queue_id, visible_at, attempts, enqueued_at, dead_letter_source_id, checksum, content)
                SELECT u.q, u.v, u.a, u.e, (SELECT x.id FROM {s}.queues x WHERE x.id = u.o), u.c, u.t
                FROM unnest($1::bigint[], $2::double precision[], $3::integer[], $4::double precision[],
                            $5::bigint[], $6::bigint[], $7::text[]) WITH ORDINALITY AS u(q, v, a, e, o, c, t, n)
                ORDER BY u.n""",
            [queue_ids[m.queue] for m in kept],
            [m.visible_at for m in kept],
            [m.attempts for m in kept],
            [m.enqueued_at for m in kept],
            origins,
            [content_checksum(m.content) for m in kept],
            [m.content for m in kept],
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
            tx.depth(queue_ids[name], count)
            ready = sum(1 for m in kept if m.queue == name and m.visible_at == 0)
            hidden = [m.visible_at for m in kept if m.queue == name and m.visible_at > 0]
            if ready:
                tx.notify("ready", queue_ids[name], ready)
            if hidden:
                tx.notify("due", queue_ids[name], min(hidden))
        return stored

    # -- settling leases -------------------------------------------------------------------------

    async def acks(self, tx: Changes, requests: list[tuple[int, int, str, float]]) -> list:
        rows = await tx.connection.fetch(
            f"""DELETE FROM {self.s}.messages m
                USING unnest($1::bigint[], $2::bigint[], $3::text[], $4::double precision[]) AS u(q, id, token, now)
                WHERE m.id = u.id AND m.queue_id = u.q AND m.lease_token = u.token AND m.visible_at > u.now
                RETURNING m.id, m.queue_id""",
            *_columns(requests, 4),
        )
        for row in rows:
            tx.depth(row["queue_id"], -1)
        return await self._found(tx, requests, {row["id"] for row in rows})

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


_QUEUE_COLUMNS = (
    "q.id, q.name, q.created_at, q.max_attempts, q.dead_letter_queue_id, d.name AS dlq, q.dedup_window"
)


def queue_of(row) -> Queue:
    settings = QueueSettings(row["max_attempts"], row["dlq"], row["dedup_window"])
    return Queue(row["id"], row["name"], row["created_at"], settings, row["dead_letter_queue_id"])


async def find_queue(connection, schema: str, name: str) -> Queue | None:
    row = await connection.fetchrow(
        f"SELECT {_QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.name = $1",
        name,
    )
    return None if row is None else queue_of(row)


async def queues_by_id(connection, schema: str, ids: list[int]) -> list[Queue]:
    rows = await connection.fetch(
        f"SELECT {_QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.id = ANY($1::bigint[])",
        ids,
    )
    return [queue_of(row) for row in rows]
