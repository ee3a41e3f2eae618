"""The shared store: queues in PostgreSQL, served by any number of mqd nodes at once.

PostgreSQL brings what one machine cannot: replication, backups, failover. Writes that arrive
together are committed in one transaction (batching.py; the statements are in
postgres_writes.py), so sixteen concurrent sends cost one transaction, not sixteen; reads go
straight to the pool and never wait for a batch. A 2xx means the transaction committed. Nodes
learn of each other's changes through LISTEN/NOTIFY on one channel, so a long-poll on any node
wakes when a message arrives on any other. A lost connection answers 503 (StorageUnavailable)
and the pool reconnects on its own; the listening connection too.

asyncpg is imported here only: SQLite users need not install it (``pip install 'mq[postgres]'``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import DataCorrupt, InvalidArgument, MqError, StorageFull, StorageUnavailable
from ..logs import counted
from ..model import (
    Caps,
    DeadLetterRule,
    Delivery,
    ExportedMessage,
    Lease,
    Limit,
    NewMessage,
    Queue,
    QueueSettings,
    QueueStats,
    SendResult,
    TakeResult,
    Totals,
    content_checksum,
    unheld,
)
from . import postgres_writes
from .base import Store, StoreListener
from .batching import BatchedPrimitives, Batcher, Group
from .postgres_migrations import NAME, SCHEMA_VERSION, UPGRADES, channel, tables
from .postgres_writes import Changes, Writes

log = logging.getLogger("mqd.store")

DEFAULT_SCHEMA = "mq"
RECONNECT_SECONDS = 1.0
KEY_SWEEP_INTERVAL_SECONDS = 60.0
BATCHES_IN_FLIGHT = 2  # transactions of one node committing at once
DEADLOCK_RETRIES = 5  # a batch PostgreSQL chose as a deadlock's victim is committed again
_DISK_FULL = "53100"
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


SECRET_PARAMETERS = {"password", "sslpassword", "passfile", "sslkey"}  # libpq's, never shown


def public_url(url: str, schema: str) -> str:
    """The store's URL as it may be shown and logged: no password, the schema named."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}:{parts.port or 5432}"
    shown = [(key, value) for key, value in parse_qsl(parts.query) if key not in SECRET_PARAMETERS]
    query = urlencode([*shown, ("schema", schema)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# Every statement here is a small indexed one: PostgreSQL's JIT, made for analytics, would spend
# 100-200 ms compiling the stats query it misjudges (measured), for nothing.
SESSION_SETTINGS = {"jit": "off"}


async def _keep_session(connection) -> None:
    """The pool's reset between uses: nothing. Our sessions change no state (every transaction
    ends, nothing is LISTENed on pool connections), and asyncpg's default reset is a transaction
    of its own each time a connection goes back: one more per batch, measured."""


def store_failure(exc: BaseException) -> MqError | None:
    """The error a whole batch gets when PostgreSQL as a whole failed it; None for a fault of
    one operation."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state == _DISK_FULL:
            return StorageFull("PostgreSQL's disk is full; the operation was not carried out.")
        if state.startswith("08") or state in _UNAVAILABLE:
            return StorageUnavailable(f"Lost the connection to PostgreSQL ({exc}); retry shortly.")
        return None
    if isinstance(exc, OSError | asyncpg.InterfaceError | ConnectionError | asyncpg.InternalClientError):
        # (InternalClientError: a connection the server ended, met while asyncpg was still in the
        # middle of its previous exchange on it; the pool replaces it)
        return StorageUnavailable(f"Lost the connection to PostgreSQL ({exc}); retry shortly.")
    return None


class PostgresStore(BatchedPrimitives, Store):
    kind = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url, self.schema = split_url(url)
        self.pool_size = pool_size
        self.node = secrets.token_hex(6)  # tells our own notifications from other nodes'
        self.application = f"mqd {self.node}"  # how this node's connections show in pg_stat_activity
        self._writes = Writes(self.schema, self.node)
        self._batcher = Batcher(self, concurrency=BATCHES_IN_FLIGHT)
        self._pool: asyncpg.Pool | None = None
        self._listener: StoreListener | None = None
        self._listening: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task | None = None
        self._closing = False
        self._next_key_sweep = 0.0

    def location(self) -> str:
        return public_url(self.url, self.schema)

    def set_listener(self, listener: StoreListener) -> None:
        self._listener = listener

    def observe_commits(self, observer) -> None:
        self._batcher.on_commit = observer

    # -- life ------------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                server_settings=SESSION_SETTINGS | {"application_name": self.application},
                reset=_keep_session,
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
            if version is not None and version > SCHEMA_VERSION:
                raise DataCorrupt(
                    f"Schema {s} was written by a newer mqd (version {version}; this one knows "
                    f"{SCHEMA_VERSION}); it was left untouched."
                )
            if version == SCHEMA_VERSION:
                return
            if version is None:
                await connection.execute(tables(s))
                await connection.execute(f"INSERT INTO {s}.schema_version VALUES (1)")
            for step in range((version or 1) + 1, SCHEMA_VERSION + 1):
                if statements := UPGRADES[step](s):
                    await connection.execute(statements)
            await connection.execute(f"UPDATE {s}.schema_version SET version = $1", SCHEMA_VERSION)
            if version is None:
                log.info("created the mq schema %s (version %d)", s, SCHEMA_VERSION)
            else:
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
                    raise StorageUnavailable(
                        f"There is no mq schema {s} at {self.location()}: nothing to check."
                    )
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
        await self._batcher.close()
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
        for row in await self._pool.fetch(f"SELECT id FROM {self.schema}.queues"):
            self._listener.messages_ready(row["id"], 1)

    def _notified(self, _connection, _pid: int, _channel: str, payload: str) -> None:
        kind, node, *fields = payload.split(" ")
        if node == self.node or self._listener is None:
            return  # our own: the broker already knows
        if kind == "ready":
            self._listener.messages_ready(int(fields[0]), int(fields[1]))
        elif kind == "due":
            self._listener.message_due(int(fields[0]), float(fields[1]))
        elif kind == "queue":
            self._listener.queue_changed(fields[0])

    # -- writes: one transaction per batch -------------------------------------------------------

    async def commit(self, groups: list[Group]) -> list[list | BaseException]:
        """The Committer of batching.py: every group in one transaction. A group that raises
        aborts it; the others are then committed again without it (PostgreSQL has savepoints,
        but each costs two round trips on every batch, and a fault is rare)."""
        outcomes: list[list | BaseException | None] = [None] * len(groups)
        remaining = list(range(len(groups)))
        deadlocks = 0
        while remaining:
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    changes = Changes(connection)
                    for index in remaining:
                        outcomes[index] = await _run_group(groups[index], changes, index)
                    await self._writes.finish(changes)
                break
            except _GroupFailed as failed:
                outcomes[failed.index] = failed.cause
                remaining.remove(failed.index)
            except asyncpg.DeadlockDetectedError:  # another node's transaction won: ours again
                deadlocks += 1
                if deadlocks > DEADLOCK_RETRIES:
                    raise
                log.info("a batch met a deadlock with another transaction; committing it again")
            except Exception as exc:
                failure = store_failure(exc)
                if failure is None:
                    raise
                raise failure from None
        return outcomes

    async def create_queue(self, name: str, settings: QueueSettings, now: float) -> tuple[Queue, bool]:
        return await self._write(object(), self._writes.create_queues, (name, settings, now))

    async def delete_queue(self, queue_id: int) -> None:
        await self._write(object(), self._writes.delete_queues, queue_id)

    async def send(
        self,
        queue_id: int,
        messages: Sequence[NewMessage],
        now: float,
        dedup_window: float,
        limit: Limit | None = None,
        dead_letter_queue_id: int | None = None,
    ) -> SendResult:
        if now >= self._next_key_sweep and any(m.key is not None for m in messages):
            self._next_key_sweep = now + KEY_SWEEP_INTERVAL_SECONDS
            await self._read(lambda connection: self._writes.sweep_keys(connection, now))
        sends = _bound(self._writes.sends, queue_id=queue_id)
        request = (messages, now, dedup_window, limit, dead_letter_queue_id)
        return await self._write(("send", queue_id), sends, request)

    async def take(
        self,
        queue_id: int,
        count: int,
        now: float,
        lease: Lease | None,
        dead_letter: DeadLetterRule | None,
        caps: Caps | None = None,
    ) -> TakeResult:
        takes = _bound(self._writes.takes, queue_id=queue_id)
        kind = ("take", queue_id, lease is None, caps)  # one set of caps per group
        return await self._write(kind, takes, (count, now, lease, dead_letter, caps))

    async def exchanges(self) -> dict[str, list[Queue]]:
        s = self.schema
        rows = await self._read(
            lambda connection: connection.fetch(
                f"""SELECT b.exchange, {postgres_writes.QUEUE_COLUMNS} FROM {s}.exchange_bindings b
                    JOIN {s}.queues q ON q.id = b.queue_id LEFT JOIN {s}.queues d ON d.id = q.dead_letter_queue_id
                    ORDER BY b.exchange, q.name"""
            )
        )
        found: dict[str, list[Queue]] = {}
        for row in rows:
            found.setdefault(row["exchange"], []).append(postgres_writes.queue_of(row))
        return found

    async def expiring(self, now: float) -> list[str]:
        s = self.schema
        rows = await self._read(
            lambda connection: connection.fetch(
                f"""SELECT name FROM {s}.queues WHERE id IN (SELECT queue_id FROM {s}.messages
                    WHERE expires_at <= $1 AND lease_token IS NULL)""",
                now,
            )
        )
        return [row["name"] for row in rows]

    # -- reads: straight to the pool --------------------------------------------------------------

    async def _read(self, read):
        try:
            async with self._pool.acquire() as connection:
                return await read(connection)
        except Exception as exc:
            failure = store_failure(exc)
            if failure is None:
                raise
            raise failure from None

    async def find_queue(self, name: str) -> Queue | None:
        return await self._read(lambda connection: postgres_writes.find_queue(connection, self.schema, name))

    async def stats(self, now: float, queue_id: int | None = None) -> list[QueueStats]:
        s = self.schema
        rows = await self._read(
            lambda connection: connection.fetch(
                f"""SELECT {postgres_writes.QUEUE_COLUMNS},
                           coalesce((SELECT sum(x.depth) FROM {s}.queue_depths x WHERE x.queue_id = q.id), 0)::bigint AS messages,
                           coalesce((SELECT sum(x.bytes) FROM {s}.queue_depths x WHERE x.queue_id = q.id), 0)::bigint AS bytes,
                           h.leased, h.delayed,
                           (SELECT count(*) FROM {s}.messages x WHERE x.dead_letter_source_id = q.id
                            AND x.queue_id <> q.id) AS dead_lettered,
                           (SELECT m.enqueued_at FROM {s}.messages m WHERE m.queue_id = q.id AND m.visible_at = 0
                            ORDER BY m.id LIMIT 1) AS head,
                           h.expired
                    FROM {s}.queues q
                    LEFT JOIN {s}.queues d ON d.id = q.dead_letter_queue_id
                    CROSS JOIN LATERAL (
                        SELECT count(*) FILTER (WHERE m.visible_at > $1 AND m.lease_token IS NOT NULL) AS leased,
                               count(*) FILTER (WHERE m.visible_at > $1 AND m.lease_token IS NULL) AS delayed,
                               min(m.enqueued_at) FILTER (WHERE m.visible_at <= $1) AS expired
                        FROM {s}.messages m WHERE m.queue_id = q.id AND m.visible_at > 0) h
                    WHERE $2::bigint IS NULL OR q.id = $2 ORDER BY q.name""",
                now,
                queue_id,
            )
        )
        found = []
        for row in rows:
            oldest = [t for t in (row["head"], row["expired"]) if t is not None]
            found.append(
                QueueStats(
                    queue=postgres_writes.queue_of(row),
                    messages=row["messages"],
                    ready=row["messages"] - row["leased"] - row["delayed"],
                    leased=row["leased"],
                    delayed=row["delayed"],
                    dead_lettered=row["dead_lettered"],
                    oldest_ready_at=min(oldest) if oldest else None,
                    bytes=row["bytes"],
                )
            )
        return found

    async def totals(self) -> Totals:
        s = self.schema
        row = await self._read(
            lambda connection: connection.fetchrow(
                f"""SELECT (SELECT count(*) FROM {s}.queues) AS queues,
                           (SELECT coalesce(sum(d.depth), 0)::bigint FROM {s}.queue_depths d
                            JOIN {s}.queues q ON q.id = d.queue_id) AS messages"""
            )
        )
        return Totals(row["queues"], row["messages"])

    async def peek(self, queue_id: int, count: int, now: float) -> list[Delivery]:
        s = self.schema
        rows = await self._read(
            lambda connection: connection.fetch(
                f"""SELECT * FROM
                    ((SELECT id, attempts, enqueued_at, checksum, content, priority, grp, expires_at FROM {s}.messages
                      WHERE queue_id = $1 AND visible_at = 0 ORDER BY priority DESC, id LIMIT $2)
                     UNION ALL
                     (SELECT id, attempts, enqueued_at, checksum, content, priority, grp, expires_at FROM {s}.messages
                      WHERE queue_id = $1 AND visible_at > 0 AND visible_at <= $3 ORDER BY priority DESC, id LIMIT $2)
                    ) AS next WHERE expires_at IS NULL OR expires_at > $3
                    ORDER BY priority DESC, id LIMIT $2""",
                queue_id,
                count,
                now,
            )
        )
        _check_contents(rows)
        return [
            Delivery(
                row["id"],
                row["content"],
                row["attempts"],
                row["enqueued_at"],
                priority=row["priority"],
                group=row["grp"],
            )
            for row in rows
        ]

    async def export(self, after: int, count: int) -> list[ExportedMessage]:
        s = self.schema
        rows = await self._read(
            lambda connection: connection.fetch(
                f"""SELECT m.id, m.attempts, m.enqueued_at, m.visible_at, m.checksum, m.content,
                           q.name AS queue, o.name AS origin, m.priority, m.grp, m.expires_at
                    FROM {s}.messages m JOIN {s}.queues q ON q.id = m.queue_id
                    LEFT JOIN {s}.queues o ON o.id = m.dead_letter_source_id
                    WHERE m.id > $1 ORDER BY m.id LIMIT $2""",
                after,
                count,
            )
        )
        _check_contents(rows)
        return [
            ExportedMessage(
                row["queue"],
                row["id"],
                row["content"],
                row["attempts"],
                row["enqueued_at"],
                unheld(row["visible_at"]) if row["visible_at"] < 0 else row["visible_at"],
                row["origin"],
                row["priority"],
                row["grp"],
                row["expires_at"],
            )
            for row in rows
        ]

    async def import_messages(
        self, source: str, messages: Sequence[ExportedMessage], queue_ids: dict[str, int]
    ) -> dict[str, int]:
        return await self._write(object(), self._writes.imports, (source, messages, queue_ids))  # alone

    async def next_visible_at(self, queue_id: int) -> float | None:
        return await self._read(
            lambda connection: connection.fetchval(
                f"SELECT min(visible_at) FROM {self.schema}.messages WHERE queue_id = $1 AND visible_at > 0",
                queue_id,
            )
        )


def _check_contents(rows) -> None:
    """Every row read for a client carries its content's checksum: rot is refused, not sent."""
    for row in rows:
        if content_checksum(row["content"]) != row["checksum"]:
            raise DataCorrupt(f"Message {row['id']} in PostgreSQL is damaged (checksum mismatch).")


class _GroupFailed(Exception):
    def __init__(self, index: int, cause: BaseException) -> None:
        self.index = index
        self.cause = cause


async def _run_group(group: Group, changes: Changes, index: int) -> list:
    try:
        return await group.run_all(changes, group.requests)
    except asyncpg.DeadlockDetectedError:
        raise  # the whole transaction was aborted: committed again as a whole
    except Exception as exc:
        if store_failure(exc) is not None:
            raise
        raise _GroupFailed(index, exc) from exc


def _bound(run_all, **fixed):
    """``run_all`` with the arguments every request of its kind shares."""

    async def bound(tx, requests):
        return await run_all(tx, requests, **fixed)

    return bound
