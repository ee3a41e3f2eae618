"""The PostgreSQL store's takes: ``SELECT … FOR UPDATE SKIP LOCKED`` pages of ready messages,
within the queue's caps (its row locked for capped takes of every node, max_rate's bucket a row);
what undoes a take (restores); expiry. A mixin of ``postgres_writes.Writes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import DataCorrupt, QueueGone
from ..model import (
    Bucket,
    Delivery,
    TakeResult,
    content_checksum,
)

if TYPE_CHECKING:
    from .postgres_writes import Changes


class Taking:
    """Takes within caps, restores, expiries."""

    async def takes(self, tx: Changes, requests: list[tuple], *, queue_id: int) -> list:
        """Every take from one queue in this batch, (count, now, lease, dead-letter rule, caps)
        each, all removing or all leasing (the kind says which): one look for all of them, the
        next messages (by priority, then age) handed out in request order. Expired messages and
        those that used up their attempts met on the way are removed instead."""
        s, connection = self.s, tx.connection
        now = max(r[1] for r in requests)
        rule = requests[0][3]
        found = await connection.fetchrow(
            f"""WITH promoted AS (UPDATE {s}.messages SET visible_at = 0, lease_token = NULL
                                  WHERE queue_id = $1 AND visible_at > 0 AND visible_at <= $2 RETURNING 1)
                SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE id = $1) AS queue,
                       EXISTS (SELECT 1 FROM {s}.queues WHERE id = $3 FOR KEY SHARE) AS dead_letter_queue""",
            queue_id,
            now,
            rule.queue_id if rule is not None else None,
        )
        if not found["queue"]:
            return [QueueGone(queue_id)] * len(requests)
        if rule is not None and not found["dead_letter_queue"]:
            rule = None  # its dead-letter queue was deleted after a change of settings
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
            results.append(TakeResult(share, dead, expired, capped_until))
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
            await tx.lock_groups(s, queue_id, [d.group for d in removed])
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
                            ON CONFLICT (id) DO NOTHING RETURNING id, grp, octet_length(content) AS size)
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
            await self.regroup(tx, queue_id, [d.group for d in removed])
            restored = row["released"] + row["stored"]
            if restored:
                tx.notify("ready", queue_id, restored)
            results.append(restored)
        return results

    async def expiries(self, tx: Changes, requests: list[tuple]) -> list:
        return [await self._expire(tx, *request) for request in requests]

    async def _expire(self, tx: Changes, queue_id: int, now: float, dlq_id: int | None, limit: int):
        s = self.s
        dlq_id = await self.live_queue(tx, dlq_id)
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
