"""The shared store: queues in PostgreSQL, served by any number of mqd nodes at once.

PostgreSQL brings what one machine cannot: replication, backups, failover. Each operation is one
round trip, most of them a call to a function of postgres_schema.py; a 2xx means the transaction
committed. Nodes learn of each other's sends through LISTEN/NOTIFY on one channel, so a
long-poll on any node wakes when a message arrives on any other. A lost connection answers 503
(StorageUnavailable) and the pool reconnects on its own; the listening connection too.

asyncpg is imported here only: SQLite users need not install it (``pip install 'mq[postgres]'``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import (
    DataCorrupt,
    InternalError,
    InvalidArgument,
    QueueConflict,
    QueueNotFound,
    ReceiptNotFound,
    StorageFailed,
    StorageFull,
    StorageUnavailable,
)
from ..logs import counted
from .base import (
    Delivery,
    NewMessage,
    Queue,
    QueueSettings,
    QueueStats,
    ReceiveResult,
    SendResult,
    Store,
    StoreListener,
    Totals,
    content_checksum,
)
from .postgres_schema import NAME, SCHEMA_VERSION, TABLE_CHANGES, channel, drop_functions, functions, tables

log = logging.getLogger("mqd.store")

DEFAULT_SCHEMA = "mq"
RECONNECT_SECONDS = 1.0
_QUEUE_NOT_FOUND = "P0002"  # raised by the schema's queue() function
_DISK_FULL = "53100"
_REFUSED_VALUES = {"22", "23"}  # SQLSTATE classes: data exception, integrity constraint violation
_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300"}  # shut down, crashed, starting, too many connections


def split_url(url: str) -> tuple[str, str]:
    """(the URL for asyncpg, the PostgreSQL schema from its ?schema= parameter, default "mq")."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((value for key, value in query if key == "schema"), DEFAULT_SCHEMA)
    if NAME.fullmatch(schema) is None:
        raise InvalidArgument(f"Schema {schema!r} in the store URL is not a plain lower-case identifier.")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def public_url(url: str, schema: str) -> str:
    """The store's URL as it may be shown and logged: no password, the schema named."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}:{parts.port or 5432}"
    query = urlencode([*parse_qsl(parts.query), ("schema", schema)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PostgresStore(Store):
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url, self.schema = split_url(url)
        self.pool_size = pool_size
        self.node = secrets.token_hex(6)  # tells our own notifications from other nodes'
        self.application = f"mqd {self.node}"  # how this node's connections show in pg_stat_activity
        self._pool: asyncpg.Pool | None = None
        self._listener: StoreListener | None = None
        self._listening: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task | None = None
        self._closing = False
        self._observer = None

    kind = "postgresql"

    def location(self) -> str:
        return public_url(self.url, self.schema)

    def set_listener(self, listener: StoreListener) -> None:
        self._listener = listener

    def observe_commits(self, observer) -> None:
        self._observer = observer  # each call is one transaction: one "commit" of one operation

    # -- life ------------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                server_settings={"application_name": self.application},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"Cannot reach PostgreSQL at {self.location()}: {exc}.") from None
        await self._migrate()
        self._listen_task = asyncio.create_task(self._keep_listening())
        log.info("using PostgreSQL at %s", self.location())

    async def _migrate(self) -> None:
        """Create or upgrade the schema; an advisory lock keeps nodes starting together in line."""
        s = self.schema
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"mq schema {s}")
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
            )
            version = await connection.fetchval(f"SELECT max(version) FROM {s}.schema_version")
            if version is None:
                await connection.execute(tables(s))
                await connection.execute(functions(s))
                await connection.execute(f"INSERT INTO {s}.schema_version VALUES ($1)", SCHEMA_VERSION)
                log.info("created the mq schema %s (version %d)", s, SCHEMA_VERSION)
            elif version > SCHEMA_VERSION:
                raise DataCorrupt(
                    f"Schema {s} was written by a newer mqd (version {version}; this one knows "
                    f"{SCHEMA_VERSION}); it was left untouched."
                )
            elif version < SCHEMA_VERSION:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    if TABLE_CHANGES[step]:
                        await connection.execute(TABLE_CHANGES[step].format(s=s))
                await connection.execute(drop_functions(s))
                await connection.execute(functions(s))
                await connection.execute(f"UPDATE {s}.schema_version SET version = $1", SCHEMA_VERSION)
                log.info("upgraded the mq schema %s from version %d to %d", s, version, SCHEMA_VERSION)

    async def verify(self) -> str:
        """The full check, for ``mqd --verify``: the schema's version and every message's
        checksum, in one read-only snapshot, so nodes may keep serving meanwhile."""
        try:
            connection = await asyncpg.connect(self.url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"Cannot reach PostgreSQL at {self.location()}: {exc}.") from None
        s = self.schema
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                exists = await connection.fetchval("SELECT to_regclass($1)", f"{s}.schema_version")
                if exists is None:
                    return f"new store: there is no mq schema {s} at {self.location()} yet"
                version = await connection.fetchval(f"SELECT max(version) FROM {s}.schema_version")
                if version > SCHEMA_VERSION:
                    raise DataCorrupt(
                        f"Schema {s} was written by a newer mqd (version {version}; this one knows "
                        f"{SCHEMA_VERSION}); it cannot be checked here."
                    )
                checked = 0
                async for row in connection.cursor(f"SELECT id, checksum, content FROM {s}.messages"):
                    checked += 1
                    if content_checksum(row["content"]) != row["checksum"]:
                        raise DataCorrupt(
                            f"Message {row['id']} in {self.location()} is damaged (its checksum does not "
                            "match); restore it from a backup of the database."
                        )
        except asyncpg.PostgresError as exc:
            raise StorageUnavailable(f"Cannot read {self.location()}: {exc}.") from None
        finally:
            await connection.close()
        return f"ok: {counted(checked, 'message')} checked in schema {s} (version {version})"

    async def close(self) -> None:
        self._closing = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
        if self._listening is not None and not self._listening.is_closed():
            await self._listening.close()
        if self._pool is not None:
            await self._pool.close()

    # -- notifications from every node ------------------------------------------------------------

    async def _keep_listening(self) -> None:
        while not self._closing:
            try:
                self._listening = await asyncpg.connect(
                    self.url, server_settings={"application_name": self.application}
                )
                lost = asyncio.Event()
                self._listening.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await self._listening.add_listener(channel(self.schema), self._notified)
                await self._wake_everyone()  # anything sent while we were not listening
                await lost.wait()
                log.warning("lost the PostgreSQL notification connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot listen for notifications from PostgreSQL: %s", exc)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _wake_everyone(self) -> None:
        if self._listener is None:
            return
        for name in await self._pool.fetch(f"SELECT name FROM {self.schema}.queues"):
            self._listener.messages_ready(name[0], 1)

    def _notified(self, _connection, _pid: int, _channel: str, payload: str) -> None:
        kind, node, queue, value = payload.split(" ", 3)
        if node == self.node or self._listener is None:
            return  # our own: the broker already knows
        if kind == "ready":
            self._listener.messages_ready(queue, int(value))
        elif kind == "due":
            self._listener.message_due(queue, float(value))

    # -- plumbing ---------------------------------------------------------------------------------

    async def _fetch(self, query: str, *args, name: str | None = None) -> list:
        """Run one statement; map PostgreSQL's errors to ours."""
        started = time.perf_counter()
        try:
            rows = await self._pool.fetch(query, *args)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == _QUEUE_NOT_FOUND:
                raise QueueNotFound(name or str(exc)) from None
            if exc.sqlstate == _DISK_FULL:
                raise StorageFull("PostgreSQL's disk is full; the operation was not carried out.") from None
            if exc.sqlstate.startswith("08") or exc.sqlstate in _UNAVAILABLE:
                raise StorageUnavailable(
                    f"Lost the connection to PostgreSQL ({exc}); retry shortly."
                ) from None
            if exc.sqlstate[:2] in _REFUSED_VALUES:  # this operation's fault, nobody else's
                log.error("PostgreSQL refused a value of one operation: %s", exc)
                raise InternalError() from None
            raise StorageFailed(f"The store failed: {exc}.") from None
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"Lost the connection to PostgreSQL ({exc}); retry shortly.") from None
        except (UnicodeError, ValueError, TypeError, OverflowError) as exc:  # refused by asyncpg itself
            log.error("a value of one operation could not be sent to PostgreSQL: %s", exc)
            raise InternalError() from None
        if self._observer is not None:
            self._observer(time.perf_counter() - started, 1)
        return rows

    def _queue(self, row) -> Queue:
        settings = QueueSettings(row["max_attempts"], row["dead_letter_queue"], row["dedup_window"])
        return Queue(row["name"], row["created_at"], settings)

    # -- queues -----------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        if (settings.max_attempts is None) != (settings.dead_letter_queue is None):
            raise InvalidArgument(
                "max_attempts and dead_letter_queue go together: exhausted messages are moved to "
                "the dead-letter queue, never dropped."
            )
        if settings.dead_letter_queue == name:
            raise QueueConflict("A queue cannot be its own dead-letter queue.")
        s = self.schema
        rows = await self._fetch(
            f"""WITH dlq AS (SELECT id FROM {s}.queues WHERE name = $3),
                     made AS (INSERT INTO {s}.queues (name, created_at, max_attempts, dead_letter_queue_id, dedup_window)
                              SELECT $1, {s}.epoch(), $2, (SELECT id FROM dlq), $4
                              WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM dlq)
                              ON CONFLICT (name) DO NOTHING RETURNING id)
                SELECT (SELECT count(*) FROM made) AS created, EXISTS (SELECT 1 FROM dlq) AS dlq_exists""",
            name,
            settings.max_attempts,
            settings.dead_letter_queue,
            settings.dedup_window,
        )
        created, dlq_exists = rows[0]["created"], rows[0]["dlq_exists"]
        if settings.dead_letter_queue is not None and not dlq_exists:
            raise QueueConflict(
                f"Dead-letter queue '{settings.dead_letter_queue}' does not exist; create it first."
            )
        queue = await self.get_queue(name)
        if not created and queue.settings != settings:
            raise QueueConflict(
                f"Queue '{name}' already exists with other settings; declare it with the same settings "
                "or delete it first."
            )
        return queue, bool(created)

    async def get_queue(self, name: str) -> Queue:
        s = self.schema
        rows = await self._fetch(
            f"""SELECT q.name, q.created_at, q.max_attempts, d.name AS dead_letter_queue, q.dedup_window
                FROM {s}.queues q LEFT JOIN {s}.queues d ON d.id = q.dead_letter_queue_id WHERE q.name = $1""",
            name,
        )
        if not rows:
            raise QueueNotFound(name)
        return self._queue(rows[0])

    async def delete_queue(self, name: str) -> None:
        s = self.schema
        rows = await self._fetch(
            f"""WITH q AS (SELECT id FROM {s}.queues WHERE name = $1),
                     users AS (SELECT string_agg(quote_literal(name), ', ' ORDER BY name) AS names
                               FROM {s}.queues WHERE dead_letter_queue_id = (SELECT id FROM q)),
                     gone AS (DELETE FROM {s}.messages WHERE queue_id = (SELECT id FROM q)
                              AND (SELECT names FROM users) IS NULL),
                     keys AS (DELETE FROM {s}.idempotency_keys WHERE queue_id = (SELECT id FROM q)
                              AND (SELECT names FROM users) IS NULL),
                     orphans AS (UPDATE {s}.messages SET dead_letter_source_id = NULL
                                 WHERE dead_letter_source_id = (SELECT id FROM q) AND (SELECT names FROM users) IS NULL),
                     removed AS (DELETE FROM {s}.queues WHERE id = (SELECT id FROM q)
                                 AND (SELECT names FROM users) IS NULL RETURNING id)
                SELECT (SELECT id FROM q) AS id, (SELECT names FROM users) AS users""",
            name,
        )
        if rows[0]["id"] is None:
            raise QueueNotFound(name)
        if rows[0]["users"] is not None:
            raise QueueConflict(
                f"Queue '{name}' is the dead-letter queue of {rows[0]['users']}; delete or redeclare those first."
            )

    async def queue_stats(self, name: str) -> QueueStats:
        stats = await self._stats(name)
        if not stats:
            raise QueueNotFound(name)
        return stats[0]

    async def list_queues(self) -> list[QueueStats]:
        return await self._stats(None)

    async def _stats(self, name: str | None) -> list[QueueStats]:
        s = self.schema
        rows = await self._fetch(
            f"""SELECT q.name, q.created_at, q.max_attempts, d.name AS dead_letter_queue, q.dedup_window,
                       c.messages, c.leased, c.delayed, c.oldest,
                       (SELECT count(*) FROM {s}.messages x WHERE x.dead_letter_source_id = q.id
                        AND x.queue_id <> q.id) AS dead_lettered
                FROM {s}.queues q
                LEFT JOIN {s}.queues d ON d.id = q.dead_letter_queue_id
                CROSS JOIN LATERAL (
                    SELECT count(*) AS messages,
                           count(*) FILTER (WHERE m.visible_at > e.now AND m.lease_token IS NOT NULL) AS leased,
                           count(*) FILTER (WHERE m.visible_at > e.now AND m.lease_token IS NULL) AS delayed,
                           min(m.enqueued_at) FILTER (WHERE m.visible_at <= e.now) AS oldest
                    FROM {s}.messages m, (SELECT {s}.epoch() AS now) e WHERE m.queue_id = q.id) c
                WHERE $1::text IS NULL OR q.name = $1 ORDER BY q.name""",
            name,
        )
        return [
            QueueStats(
                queue=self._queue(row),
                messages=row["messages"],
                ready=row["messages"] - row["leased"] - row["delayed"],
                leased=row["leased"],
                delayed=row["delayed"],
                dead_lettered=row["dead_lettered"],
                oldest_ready_at=row["oldest"],
            )
            for row in rows
        ]

    async def totals(self) -> Totals:
        s = self.schema
        rows = await self._fetch(
            f"SELECT (SELECT count(*) FROM {s}.queues) AS queues, (SELECT count(*) FROM {s}.messages) AS messages"
        )
        return Totals(rows[0]["queues"], rows[0]["messages"])

    # -- messages ---------------------------------------------------------------------------------

    async def send(self, name: str, messages: Sequence[NewMessage]) -> SendResult:
        rows = await self._fetch(
            f"SELECT id, duplicate, visible_at FROM {self.schema}.send($1, $2, $3, $4, $5, $6)",
            self.node,
            name,
            [m.content for m in messages],
            [float(m.delay) for m in messages],
            [content_checksum(m.content) for m in messages],
            [m.key for m in messages],
            name=name,
        )
        ids = [row["id"] for row in rows]
        duplicates = [row["duplicate"] for row in rows]
        ready = sum(1 for row in rows if not row["duplicate"] and row["visible_at"] == 0)
        return SendResult(ids, duplicates, ready)

    async def receive(self, name: str, count: int, lease: float | None) -> ReceiveResult:
        rows = await self._fetch(
            f"SELECT * FROM {self.schema}.receive($1, $2, $3, $4)", self.node, name, count, lease, name=name
        )
        dead = sum(row["dead_lettered"] for row in rows if row["id"] is None)
        deliveries = sorted(
            (self._delivery(row) for row in rows if row["id"] is not None), key=lambda delivery: delivery.id
        )
        dead_lettered = {}
        if dead:
            queue = await self.get_queue(name)
            dead_lettered = {queue.settings.dead_letter_queue: dead}
        return ReceiveResult(deliveries, dead_lettered)

    def _delivery(self, row) -> Delivery:
        if content_checksum(row["content"]) != row["checksum"]:
            raise DataCorrupt(f"Message {row['id']} in PostgreSQL is damaged (checksum mismatch).")
        token = row.get("lease_token")
        receipt = f"{row['id']}.{token}" if token else None
        return Delivery(
            row["id"],
            row["content"],
            row["attempts"],
            row["enqueued_at"],
            receipt,
            row.get("lease_expires_at"),
            dead_letter_source=row.get("dead_letter_source"),
        )

    async def restore(self, name: str, deliveries: Sequence[Delivery]) -> int:
        s = self.schema
        leased = [d for d in deliveries if d.receipt is not None]
        removed = [d for d in deliveries if d.receipt is None]
        rows = await self._fetch(
            f"""WITH q AS (SELECT id FROM {s}.queues WHERE name = $1),
                     released AS (
                        UPDATE {s}.messages m SET visible_at = 0, lease_token = NULL, attempts = m.attempts - 1
                        FROM unnest($2::bigint[], $3::text[]) AS r(id, token)
                        WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = (SELECT id FROM q)
                        RETURNING 1),
                     stored AS (
                        INSERT INTO {s}.messages (id, queue_id, visible_at, attempts, enqueued_at,
                                                  dead_letter_source_id, checksum, content)
                        SELECT u.id, (SELECT id FROM q), 0, u.attempts, u.enqueued_at,
                               (SELECT x.id FROM {s}.queues x WHERE x.name = u.source), u.checksum, u.content
                        FROM unnest($4::bigint[], $5::integer[], $6::double precision[], $7::text[],
                                    $8::bigint[], $9::text[]) AS u(id, attempts, enqueued_at, source, checksum, content)
                        WHERE EXISTS (SELECT 1 FROM q)
                        ON CONFLICT (id) DO NOTHING RETURNING 1),
                     counted AS (SELECT (SELECT count(*) FROM released) + (SELECT count(*) FROM stored) AS n)
                SELECT n, CASE WHEN n > 0 THEN pg_notify($10, concat_ws(' ', 'ready', $11::text, $1, n)) END
                FROM counted""",
            name,
            [d.id for d in leased],
            [d.receipt.partition(".")[2] for d in leased],
            [d.id for d in removed],
            [d.attempts - 1 for d in removed],
            [d.enqueued_at for d in removed],
            [d.dead_letter_source for d in removed],
            [content_checksum(d.content) for d in removed],
            [d.content for d in removed],
            channel(s),
            self.node,
        )
        return rows[0]["n"]

    async def peek(self, name: str, count: int) -> list[Delivery]:
        rows = await self._fetch(f"SELECT * FROM {self.schema}.peek($1, $2)", name, count, name=name)
        return [self._delivery(row) for row in rows]

    async def _settle(self, name: str, receipt: str, action: str, seconds: float) -> list:
        message_id, _, token = receipt.partition(".")
        if not message_id.isdigit() or not token:
            await self.get_queue(name)  # an unknown queue says so first
            raise ReceiptNotFound(receipt)
        rows = await self._fetch(
            f"SELECT visible_at FROM {self.schema}.settle($1, $2, $3, $4, $5, $6)",
            self.node,
            name,
            int(message_id),
            token,
            action,
            seconds,
            name=name,
        )
        if not rows:
            raise ReceiptNotFound(receipt)
        return rows

    async def ack(self, name: str, receipt: str) -> None:
        await self._settle(name, receipt, "ack", 0.0)

    async def release(self, name: str, receipt: str, delay: float) -> float:
        return (await self._settle(name, receipt, "release", delay))[0]["visible_at"]

    async def extend(self, name: str, receipt: str, lease: float) -> float:
        return (await self._settle(name, receipt, "extend", lease))[0]["visible_at"]

    async def purge(self, name: str) -> int:
        s = self.schema
        rows = await self._fetch(
            f"""WITH q AS (SELECT ({s}.queue($1)).id),
                     gone AS (DELETE FROM {s}.messages WHERE queue_id = (SELECT id FROM q) RETURNING 1)
                SELECT count(*) AS removed FROM gone""",
            name,
            name=name,
        )
        return rows[0]["removed"]

    async def redrive(self, name: str) -> dict[str, int]:
        s = self.schema
        rows = await self._fetch(
            f"""WITH q AS (SELECT ({s}.queue($1)).id),
                     moved AS (
                        UPDATE {s}.messages m
                        SET queue_id = m.dead_letter_source_id, dead_letter_source_id = NULL, attempts = 0,
                            visible_at = 0, lease_token = NULL
                        WHERE m.dead_letter_source_id IS NOT NULL AND m.queue_id <> m.dead_letter_source_id
                          AND (m.queue_id = (SELECT id FROM q) OR m.dead_letter_source_id = (SELECT id FROM q))
                          AND (m.lease_token IS NULL OR m.visible_at <= {s}.epoch())
                        RETURNING m.queue_id)
                SELECT d.name, count(*) AS moved, pg_notify($2, concat_ws(' ', 'ready', $3::text, d.name, count(*)))
                FROM moved JOIN {s}.queues d ON d.id = moved.queue_id GROUP BY d.name""",
            name,
            channel(s),
            self.node,
            name=name,
        )
        return {row["name"]: row["moved"] for row in rows}

    async def next_visible_at(self, name: str) -> float | None:
        s = self.schema
        rows = await self._fetch(
            f"""SELECT min(visible_at) AS due FROM {s}.messages
                WHERE queue_id = ({s}.queue($1)).id AND visible_at > 0""",
            name,
            name=name,
        )
        return rows[0]["due"]
