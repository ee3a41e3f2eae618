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

from ..errors import DeadLetterQueueInUse, QueueConflict, QueueGone, QueueNotFound
from ..model import (
    ExportedMessage,
    Queue,
    QueueSettings,
    Removed,
    Settled,
    content_bytes,
    content_checksum,
    held,
    new_in_import,
)
from .postgres_migrations import channel
from .postgres_sending import Sending
from .postgres_taking import Taking

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


class Writes(Sending, Taking):
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

    async def updates(self, tx: Changes, requests: list[tuple[int, dict]]) -> list:
        return [await self._update(tx, queue_id, changes) for queue_id, changes in requests]

    async def _update(self, tx: Changes, queue_id: int, changes: dict):
        """The change made to the settings as they are now: the queue's row locked, so two
        changes at once (on any nodes) each keep the other's."""
        s, connection = self.s, tx.connection
        queue = await find_queue(connection, s, None, queue_id=queue_id, lock=True)
        if queue is None:
            return QueueGone(queue_id)
        try:
            settings = queue.settings.changed(queue.name, changes)
        except QueueConflict as conflict:
            return conflict
        assignments = ", ".join(
            f"{column.strip()} = ${n}" for n, column in enumerate(_SETTINGS.split(","), start=3)
        )
        row = await connection.fetchrow(
            f"""WITH dlq AS (SELECT id FROM {s}.queues WHERE name = $2 FOR KEY SHARE)
                UPDATE {s}.queues SET dead_letter_queue_id = (SELECT id FROM dlq), {assignments}
                WHERE id = $1 AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM dlq))
                RETURNING name""",
            queue_id,
            settings.dead_letter_queue,
            *settings.stored(),
        )
        if row is None:
            return QueueNotFound(settings.dead_letter_queue)
        if settings.max_rate != queue.settings.max_rate:
            await connection.execute(f"DELETE FROM {s}.queue_buckets WHERE queue_id = $1", queue_id)
        tx.notify("queue", row["name"])  # other nodes read the settings again
        return (await queues_by_id(connection, s, [queue_id]))[0]

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
            # The queue's row, locked against every send (theirs lock it FOR KEY SHARE): none is
            # half-way through deciding a group's turn by a message this purge removes.
            await tx.connection.execute(f"SELECT 1 FROM {self.s}.queues WHERE id = $1 FOR UPDATE", queue_id)
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

    async def regroup(self, tx: Changes, queue_id: int, groups) -> None:
        """Give each group one head again after messages came back into it (a receiver left
        before it was told of them): the leased one if one is, else the oldest; every other one
        waits. The caller holds the groups' locks."""
        groups = sorted({g for g in groups if g is not None})
        if groups:
            await tx.connection.execute(
                f"""WITH members AS (SELECT id, grp, visible_at, lease_token FROM {self.s}.messages
                                     WHERE queue_id = $1 AND grp = ANY($2::text[]) FOR UPDATE),
                         heads AS (SELECT grp, coalesce(min(id) FILTER (WHERE lease_token IS NOT NULL AND visible_at > 0),
                                                        min(id)) AS id FROM members GROUP BY grp)
                    UPDATE {self.s}.messages m SET visible_at = -m.visible_at - 1
                    FROM members JOIN heads USING (grp)
                    WHERE m.id = members.id AND ((m.id = heads.id AND m.visible_at < 0)
                          OR (m.id <> heads.id AND m.lease_token IS NULL AND m.visible_at >= 0))""",
                queue_id,
                groups,
            )

    async def live_queue(self, tx: Changes, queue_id: int | None) -> int | None:
        """``queue_id`` if that queue exists (kept from deletion until the transaction ends)."""
        if queue_id is None:
            return None
        found = await tx.connection.fetchval(
            f"SELECT id FROM {self.s}.queues WHERE id = $1 FOR KEY SHARE", queue_id
        )
        return found

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
        groups: dict[int, set[str]] = {}
        for row in rows:
            if row["grp"] is not None:
                groups.setdefault(row["queue_id"], set()).add(row["grp"])
        for queue_id in sorted(groups):  # every group lock of the batch, in one order
            await tx.lock_groups(self.s, queue_id, groups[queue_id])
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


async def find_queue(
    connection, schema: str, name: str | None, *, queue_id: int | None = None, lock: bool = False
) -> Queue | None:
    """The queue of that name (or id); with ``lock``, its row locked until the transaction ends."""
    row = await connection.fetchrow(
        f"SELECT {QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.name = $1 OR q.id = $2"
        + (" FOR NO KEY UPDATE OF q" if lock else ""),
        name,
        queue_id,
    )
    return None if row is None else queue_of(row)


async def queues_by_id(connection, schema: str, ids: list[int]) -> list[Queue]:
    rows = await connection.fetch(
        f"SELECT {QUEUE_COLUMNS} FROM {schema}.queues q LEFT JOIN {schema}.queues d "
        "ON d.id = q.dead_letter_queue_id WHERE q.id = ANY($1::bigint[])",
        ids,
    )
    return [queue_of(row) for row in rows]
