"""The embedded store: one SQLite database in the data directory, written by one thread.

Durability: WAL mode with ``synchronous=FULL`` fsyncs the log on every commit, and the
group-commit worker answers an operation only after its commit returned, so an acknowledged
message survives kill -9 and power loss. With ``fsync=False`` (``--fsync off``) commits reach the
OS page cache only: they survive the daemon crashing, not the machine.

Cost does not grow with the backlog: receivers find the next message with one seek in the index
on (queue_id, visible_at, id), and per-queue depth is a counter kept in the same transaction as
the change, so nothing counts rows on the hot path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import functools
import logging
import os
import secrets
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import (
    DataCorrupt,
    DataDirectoryError,
    InvalidArgument,
    QueueConflict,
    QueueNotFound,
    ReceiptNotFound,
    StorageFull,
)
from .base import (
    Delivery,
    NewMessage,
    Queue,
    QueueSettings,
    QueueStats,
    ReceiveResult,
    SendResult,
    Store,
    Totals,
)
from .group_commit import GroupCommitWorker, SharedOperation
from .integrity import HIGH_WATER_FILE, HighWaterMark, accept_loss, verify
from .schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION

log = logging.getLogger("mqd.store")

DATABASE_FILE = "mq.sqlite3"
LOCK_FILE = "mqd.lock"
KEY_SWEEP_INTERVAL_SECONDS = 60.0
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
WRITE_AMPLIFICATION = 4  # disk bytes per content byte, generously: log frames, index, checkpoint


@dataclasses.dataclass(frozen=True)
class _QueueRow:
    id: int
    queue: Queue
    dead_letter_queue_id: int | None


class SQLiteStore(Store):
    """Queues in ``<data_dir>/mq.sqlite3``; only the worker thread touches the connection."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        fsync: bool = True,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        repair: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_FILE
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self.repair = repair
        self._clock = clock
        self._lock_fd: int | None = None
        self._mark = HighWaterMark(self.data_dir / HIGH_WATER_FILE, fsync=fsync)
        # Worker-thread state: the queue catalogue, the next message id, the free-space verdict.
        self._queues: dict[str, _QueueRow] = {}
        self._next_id = 1
        self._next_key_sweep = 0.0
        self._space_fresh = False  # looked at during the current batch
        self._space_low = False
        self._headroom = 0  # free bytes beyond the reserve at the last look
        self._written_since_look = 0  # bytes (estimated) written since then
        self._worker = GroupCommitWorker(self._connect, on_rollback=self._load_catalogue)
        self._worker.after_commit = self._record_high_water
        self._worker.before_batch = self._forget_space

    def observe_commits(self, observer: Callable[[float, int], None]) -> None:
        self._worker.on_commit = observer

    # -- life ------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._lock_data_dir()
        try:
            await asyncio.to_thread(self._check)
            self._mark.open()
            await self._worker.start()
        except BaseException:
            self._mark.close()
            self._unlock_data_dir()
            raise

    def _check(self) -> None:
        """Verify the data before writing to it; with ``repair``, keep what is left of damage."""
        try:
            log.info("checked %s: %s", self.path, verify(self.path, self._mark))
        except DataCorrupt:
            if not self.repair:
                raise
            accept_loss(self.path, self._mark)
            log.info("checked %s: %s", self.path, verify(self.path, self._mark))

    async def close(self) -> None:
        await self._worker.stop()
        self._mark.close()
        self._unlock_data_dir()

    def verify(self) -> str:
        """The full check (every checksum), for ``mqd --verify``; takes the data directory's lock
        so it never runs beside a daemon."""
        self._lock_data_dir()
        try:
            return verify(self.path, self._mark, full=True)
        finally:
            self._unlock_data_dir()

    def failure(self) -> str | None:
        failure = self._worker.failure
        return str(failure) if failure is not None else None

    def _record_high_water(self) -> None:
        """After each commit, before anyone hears of it: the highest id stored, on disk."""
        self._mark.advance(self._next_id - 1)

    def _lock_data_dir(self) -> None:
        """Hold an exclusive lock on the data directory: two daemons on one store would each
        trust their own view of it."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirectoryError(
                f"Cannot use data directory {self.data_dir}: {exc.strerror or exc}."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirectoryError(
                f"Data directory {self.data_dir} is in use by another mqd (pid {holder})."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, cached_statements=256)
        except sqlite3.Error as exc:
            raise DataDirectoryError(f"Cannot open {self.path}: {exc}.") from exc
        try:
            self._prepare(connection)
            self._load_catalogue(connection)
        except sqlite3.DatabaseError as exc:
            connection.close()
            if isinstance(exc, sqlite3.OperationalError) and _is_access_error(exc):
                raise DataDirectoryError(f"Cannot write {self.path}: {exc}.") from exc
            raise DataCorrupt(
                f"{self.path} is damaged or is not an mq database ({exc}); it was left untouched."
            ) from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare(self, connection: sqlite3.Connection) -> None:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise DataDirectoryError(f"Cannot put {self.path} in WAL mode (got {mode!r}).")
        connection.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'OFF'}")
        connection.execute("PRAGMA cache_size=-8192")  # KiB: bounded memory whatever the backlog
        connection.execute("PRAGMA busy_timeout=5000")
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if application_id == 0 and version == 0:
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise DataCorrupt(
                    f"{self.path} is an SQLite database of another program; it was left untouched."
                )
            connection.executescript(
                f"BEGIN; {SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
                f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            log.info("created %s", self.path)
        elif application_id != APPLICATION_ID:
            raise DataCorrupt(f"{self.path} is not an mq database; it was left untouched.")
        elif version > SCHEMA_VERSION:
            raise DataCorrupt(
                f"{self.path} was written by a newer mqd (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); it was left untouched."
            )

    def _load_catalogue(self, connection: sqlite3.Connection) -> None:
        """(Re)read the queue catalogue and the id sequence: at start-up and after a rollback."""
        rows = connection.execute(
            "SELECT id, name, created_at, max_attempts, dead_letter_queue_id, dedup_window FROM queues"
        ).fetchall()
        names = {row[0]: row[1] for row in rows}
        self._queues = {}
        for queue_id, name, created_at, max_attempts, dlq_id, dedup_window in rows:
            settings = QueueSettings(max_attempts, names.get(dlq_id), dedup_window)
            self._queues[name] = _QueueRow(queue_id, Queue(name, created_at, settings), dlq_id)
        row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        last = connection.execute("SELECT max(id) FROM messages").fetchone()[0]
        self._next_id = max(row[0] if row else 0, last or 0) + 1

    # -- the public interface: every call is one operation of the group-commit worker -----------

    async def _run(self, method: Callable, *args):
        return await self._worker.run(lambda connection: method(connection, *args))

    async def create_queue(self, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        return await self._run(self._create_queue, name, settings)

    async def delete_queue(self, name: str) -> None:
        await self._run(self._delete_queue, name)

    async def get_queue(self, name: str) -> Queue:
        return await self._run(lambda _connection: self._row(name).queue)

    async def queue_stats(self, name: str) -> QueueStats:
        return await self._run(lambda connection: self._stats(connection, self._row(name)))

    async def list_queues(self) -> list[QueueStats]:
        return await self._run(
            lambda connection: [self._stats(connection, row) for _, row in sorted(self._queues.items())]
        )

    async def totals(self) -> Totals:
        return await self._run(self._totals)

    async def send(self, name: str, messages: Sequence[NewMessage]) -> SendResult:
        send_all = functools.partial(self._send_all, name=name)
        return await self._worker.run(SharedOperation(("send", name), send_all, messages))

    async def receive(self, name: str, count: int, lease: float | None) -> ReceiveResult:
        receive_all = functools.partial(self._receive_all, name=name)
        return await self._worker.run(
            SharedOperation(("receive", name, lease is None), receive_all, (count, lease))
        )

    async def peek(self, name: str, count: int) -> list[Delivery]:
        return await self._run(self._peek, name, count)

    async def ack(self, name: str, receipt: str) -> None:
        await self._run(self._ack, name, receipt)

    async def release(self, name: str, receipt: str, delay: float) -> float:
        return await self._run(self._release, name, receipt, delay)

    async def extend(self, name: str, receipt: str, lease: float) -> float:
        return await self._run(self._extend, name, receipt, lease)

    async def purge(self, name: str) -> int:
        return await self._run(self._purge, name)

    async def redrive(self, name: str) -> dict[str, int]:
        return await self._run(self._redrive, name)

    async def next_visible_at(self, name: str) -> float | None:
        return await self._run(self._next_visible_at, name)

    # -- operations (run in the worker thread, inside its transaction) ---------------------------

    def _row(self, name: str) -> _QueueRow:
        row = self._queues.get(name)
        if row is None:
            raise QueueNotFound(name)
        return row

    def _create_queue(self, connection, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        existing = self._queues.get(name)
        if existing is not None:
            if existing.queue.settings != settings:
                raise QueueConflict(
                    f"Queue '{name}' already exists with other settings "
                    f"({_describe(existing.queue.settings)}); declare it with the same settings "
                    "or delete it first."
                )
            return existing.queue, False
        if (settings.max_attempts is None) != (settings.dead_letter_queue is None):
            raise InvalidArgument(
                "max_attempts and dead_letter_queue go together: exhausted messages are moved to "
                "the dead-letter queue, never dropped."
            )
        dlq_id = None
        if settings.dead_letter_queue is not None:
            if settings.dead_letter_queue == name:
                raise QueueConflict("A queue cannot be its own dead-letter queue.")
            dlq = self._queues.get(settings.dead_letter_queue)
            if dlq is None:
                raise QueueConflict(
                    f"Dead-letter queue '{settings.dead_letter_queue}' does not exist; create it first."
                )
            dlq_id = dlq.id
        created_at = self._clock()
        cursor = connection.execute(
            "INSERT INTO queues (name, created_at, max_attempts, dead_letter_queue_id, dedup_window) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, created_at, settings.max_attempts, dlq_id, settings.dedup_window),
        )
        queue = Queue(name, created_at, settings)
        self._queues[name] = _QueueRow(cursor.lastrowid, queue, dlq_id)
        return queue, True

    def _delete_queue(self, connection, name: str) -> None:
        row = self._row(name)
        users = sorted(n for n, other in self._queues.items() if other.dead_letter_queue_id == row.id)
        if users:
            listed = ", ".join(f"'{n}'" for n in users)
            raise QueueConflict(
                f"Queue '{name}' is the dead-letter queue of {listed}; delete or redeclare those first."
            )
        connection.execute("DELETE FROM messages WHERE queue_id = ?", (row.id,))
        connection.execute("DELETE FROM idempotency_keys WHERE queue_id = ?", (row.id,))
        connection.execute(
            "UPDATE messages SET dead_letter_source_id = NULL WHERE dead_letter_source_id = ?", (row.id,)
        )
        connection.execute("DELETE FROM queues WHERE id = ?", (row.id,))
        del self._queues[name]

    def _stats(self, connection, row: _QueueRow) -> QueueStats:
        now = self._clock()
        depth = connection.execute("SELECT depth FROM queues WHERE id = ?", (row.id,)).fetchone()[0]
        hidden, leased = connection.execute(
            "SELECT count(*), count(lease_token) FROM messages WHERE queue_id = ? AND visible_at > ?",
            (row.id, now),
        ).fetchone()
        dead_lettered = connection.execute(
            "SELECT count(*) FROM messages WHERE dead_letter_source_id = ? AND queue_id != ?",
            (row.id, row.id),
        ).fetchone()[0]
        head = connection.execute(
            "SELECT enqueued_at FROM messages WHERE queue_id = ? AND visible_at = 0 ORDER BY id LIMIT 1",
            (row.id,),
        ).fetchone()
        expired = connection.execute(
            "SELECT min(enqueued_at) FROM messages WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
            (row.id, now),
        ).fetchone()[0]
        candidates = [t for t in (head[0] if head else None, expired) if t is not None]
        return QueueStats(
            queue=row.queue,
            messages=depth,
            ready=depth - hidden,
            leased=leased,
            delayed=hidden - leased,
            dead_lettered=dead_lettered,
            oldest_ready_at=min(candidates) if candidates else None,
        )

    def _totals(self, connection) -> Totals:
        queues, messages = connection.execute(
            "SELECT count(*), coalesce(sum(depth), 0) FROM queues"
        ).fetchone()
        return Totals(queues, messages)

    def _send_all(self, connection, sends: list[Sequence[NewMessage]], *, name: str) -> list[SendResult]:
        """Every send to one queue in this batch: one INSERT for all their messages."""
        row = self._row(name)
        self._check_space(sum(len(m.content) for messages in sends for m in messages))
        now = self._clock()
        if any(m.key is not None for messages in sends for m in messages):
            self._sweep_keys(connection, now)
        inserts: list[tuple] = []
        keys: list[tuple] = []
        seen_keys: dict[str, int] = {}
        results = [
            self._plan_send(connection, row, now, messages, inserts, keys, seen_keys) for messages in sends
        ]
        if inserts:
            connection.executemany(
                "INSERT INTO messages (id, queue_id, visible_at, attempts, enqueued_at, checksum, content) "
                "VALUES (?, ?, ?, 0, ?, ?, ?)",
                inserts,
            )
            connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (len(inserts), row.id))
        if keys:
            connection.executemany("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", keys)
        return results

    def _plan_send(
        self, connection, row: _QueueRow, now: float, messages, inserts, keys, seen_keys
    ) -> SendResult:
        """Assign ids to one send's messages and add their rows to ``inserts`` (and ``keys``);
        a repeated idempotency key (in the store or earlier in this batch) gets the first id."""
        if all(m.key is None and m.delay <= 0 for m in messages):  # the common case, in one sweep
            first = self._next_id
            self._next_id += len(messages)
            inserts += [
                (first + i, row.id, 0.0, now, _checksum(m.content), m.content) for i, m in enumerate(messages)
            ]
            return SendResult(list(range(first, self._next_id)), [False] * len(messages), len(messages))
        window = row.queue.settings.dedup_window
        ids: list[int] = []
        duplicates: list[bool] = []
        ready = 0
        for message in messages:
            if message.key is not None:
                earlier = seen_keys.get(message.key)
                if earlier is None:
                    hit = connection.execute(
                        "SELECT message_id FROM idempotency_keys "
                        "WHERE queue_id = ? AND key = ? AND expires_at > ?",
                        (row.id, message.key, now),
                    ).fetchone()
                    earlier = hit[0] if hit else None
                if earlier is not None:
                    ids.append(earlier)
                    duplicates.append(True)
                    continue
            message_id = self._next_id
            self._next_id += 1
            visible_at = now + message.delay if message.delay > 0 else 0.0
            ready += visible_at == 0.0
            inserts.append((message_id, row.id, visible_at, now, _checksum(message.content), message.content))
            if message.key is not None:
                seen_keys[message.key] = message_id
                keys.append((row.id, message.key, message_id, now + window))
            ids.append(message_id)
            duplicates.append(False)
        return SendResult(ids, duplicates, ready)

    def _forget_space(self) -> None:
        self._space_fresh = False

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

    def _promote_expired(self, connection, row: _QueueRow, now: float) -> None:
        """Make messages whose lease or delay has ended ready again, in their original place."""
        connection.execute(
            "UPDATE messages SET visible_at = 0, lease_token = NULL "
            "WHERE queue_id = ? AND visible_at > 0 AND visible_at <= ?",
            (row.id, now),
        )

    def _ready_rows(self, connection, row: _QueueRow, count: int, after_id: int = 0) -> list:
        rows = connection.execute(
            "SELECT id, attempts, enqueued_at, checksum, content FROM messages "
            "WHERE queue_id = ? AND visible_at = 0 AND id > ? ORDER BY id LIMIT ?",
            (row.id, after_id, count),
        ).fetchall()
        for message_id, _, _, checksum, content in rows:
            if _checksum(content) != checksum:
                raise DataCorrupt(
                    f"Message {message_id} in {self.path} is damaged (checksum mismatch); "
                    "stop mqd and run its verification."
                )
        return rows

    def _receive_all(
        self, connection, requests: list[tuple[int, float | None]], *, name: str
    ) -> list[ReceiveResult]:
        """Every receive from one queue in this batch (all removing, or all leasing): one SELECT
        for all of them, then the oldest messages handed out in the order the requests came."""
        row = self._row(name)
        now = self._clock()
        self._promote_expired(connection, row, now)
        taken, dead_lettered = self._take_ready(connection, row, sum(count for count, _ in requests))
        results = []
        for count, lease in requests:
            share, taken = taken[:count], taken[count:]
            results.append(ReceiveResult(self._deliver(connection, share, now, lease), dead_lettered))
            dead_lettered = {}  # reported once, with the first result
        if requests[0][1] is None:
            removed = sum(len(result.deliveries) for result in results)
            if removed:
                connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (removed, row.id))
        return results

    def _take_ready(self, connection, row: _QueueRow, count: int) -> tuple[list, dict[str, int]]:
        """Up to ``count`` ready messages, oldest first; those that used up their attempts go to
        the dead-letter queue instead."""
        max_attempts = row.queue.settings.max_attempts
        taken: list = []
        exhausted: list[int] = []
        after_id = 0
        while len(taken) < count:
            rows = self._ready_rows(connection, row, count - len(taken), after_id)
            if not rows:
                break
            after_id = rows[-1][0]
            for message in rows:
                if max_attempts is not None and message[1] >= max_attempts:
                    exhausted.append(message[0])
                else:
                    taken.append(message)
        return taken, self._dead_letter(connection, row, exhausted)

    def _deliver(self, connection, rows: list, now: float, lease: float | None) -> list[Delivery]:
        """Remove ``rows`` (no lease) or lease them, each with a fresh receipt."""
        if not rows:
            return []
        if lease is None:
            connection.executemany("DELETE FROM messages WHERE id = ?", [(m[0],) for m in rows])
            return [Delivery(m[0], m[4], m[1] + 1, m[2]) for m in rows]
        expires_at = now + lease
        tokens = [secrets.token_hex(8) for _ in rows]
        connection.executemany(
            "UPDATE messages SET visible_at = ?, lease_token = ?, attempts = attempts + 1 WHERE id = ?",
            [(expires_at, token, m[0]) for m, token in zip(rows, tokens, strict=True)],
        )
        return [
            Delivery(m[0], m[4], m[1] + 1, m[2], receipt=f"{m[0]}.{token}", lease_expires_at=expires_at)
            for m, token in zip(rows, tokens, strict=True)
        ]

    def _dead_letter(self, connection, row: _QueueRow, message_ids: list[int]) -> dict[str, int]:
        if not message_ids:
            return {}
        dlq_id = row.dead_letter_queue_id
        dlq_name = row.queue.settings.dead_letter_queue
        connection.executemany(
            "UPDATE messages SET queue_id = ?, dead_letter_source_id = ?, attempts = 0, "
            "visible_at = 0, lease_token = NULL WHERE id = ?",
            [(dlq_id, row.id, message_id) for message_id in message_ids],
        )
        self._move_depth(connection, row.id, dlq_id, len(message_ids))
        log.info(
            "moved %d message(s) from '%s' to dead-letter queue '%s'",
            len(message_ids),
            row.queue.name,
            dlq_name,
        )
        return {dlq_name: len(message_ids)}

    def _move_depth(self, connection, from_id: int, to_id: int, count: int) -> None:
        connection.execute("UPDATE queues SET depth = depth - ? WHERE id = ?", (count, from_id))
        connection.execute("UPDATE queues SET depth = depth + ? WHERE id = ?", (count, to_id))

    def _peek(self, connection, name: str, count: int) -> list[Delivery]:
        row = self._row(name)
        self._promote_expired(connection, row, self._clock())
        return [Delivery(m[0], m[4], m[1], m[2]) for m in self._ready_rows(connection, row, count)]

    def _ack(self, connection, name: str, receipt: str) -> None:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        cursor = connection.execute(
            "DELETE FROM messages WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (message_id, row.id, token, self._clock()),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        connection.execute("UPDATE queues SET depth = depth - 1 WHERE id = ?", (row.id,))

    def _release(self, connection, name: str, receipt: str, delay: float) -> float:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        now = self._clock()
        visible_at = now + delay if delay > 0 else 0.0
        cursor = connection.execute(
            "UPDATE messages SET visible_at = ?, lease_token = NULL "
            "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (visible_at, message_id, row.id, token, now),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        return visible_at

    def _extend(self, connection, name: str, receipt: str, lease: float) -> float:
        row = self._row(name)
        message_id, token = _parse_receipt(receipt)
        now = self._clock()
        cursor = connection.execute(
            "UPDATE messages SET visible_at = ? "
            "WHERE id = ? AND queue_id = ? AND lease_token = ? AND visible_at > ?",
            (now + lease, message_id, row.id, token, now),
        )
        if cursor.rowcount == 0:
            raise ReceiptNotFound(receipt)
        return now + lease

    def _purge(self, connection, name: str) -> int:
        row = self._row(name)
        removed = connection.execute("DELETE FROM messages WHERE queue_id = ?", (row.id,)).rowcount
        connection.execute("UPDATE queues SET depth = 0 WHERE id = ?", (row.id,))
        return removed

    def _redrive(self, connection, name: str) -> dict[str, int]:
        row = self._row(name)
        now = self._clock()
        names = {other.id: other.queue.name for other in self._queues.values()}
        not_leased = "(lease_token IS NULL OR visible_at <= ?)"
        moves = connection.execute(
            "SELECT queue_id, dead_letter_source_id, count(*) FROM messages "
            f"WHERE dead_letter_source_id IS NOT NULL AND {not_leased} "
            "AND (queue_id = ? OR dead_letter_source_id = ?) AND queue_id != dead_letter_source_id "
            "GROUP BY queue_id, dead_letter_source_id",
            (now, row.id, row.id),
        ).fetchall()
        moved: dict[str, int] = {}
        for from_id, to_id, _ in moves:
            count = connection.execute(
                "UPDATE messages SET queue_id = dead_letter_source_id, dead_letter_source_id = NULL, "
                "attempts = 0, visible_at = 0, lease_token = NULL WHERE queue_id = ? "
                f"AND dead_letter_source_id = ? AND {not_leased}",
                (from_id, to_id, now),
            ).rowcount
            self._move_depth(connection, from_id, to_id, count)
            moved[names[to_id]] = moved.get(names[to_id], 0) + count
        return moved

    def _next_visible_at(self, connection, name: str) -> float | None:
        row = self._row(name)
        return connection.execute(
            "SELECT min(visible_at) FROM messages WHERE queue_id = ? AND visible_at > 0", (row.id,)
        ).fetchone()[0]


def _parse_receipt(receipt: str) -> tuple[int, str]:
    """A receipt is "<message id>.<lease token>": the id finds the row, the token proves the lease."""
    message_id, _, token = receipt.partition(".")
    if not message_id.isdigit() or not token:
        raise ReceiptNotFound(receipt)
    return int(message_id), token


def _checksum(content: str) -> int:
    return zlib.crc32(content.encode("utf-8", "surrogatepass"))


def _describe(settings: QueueSettings) -> str:
    return ", ".join(
        f"{field.name}={getattr(settings, field.name)!r}" for field in dataclasses.fields(settings)
    )


def _is_access_error(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"}
