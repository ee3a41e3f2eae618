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
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataCorrupt, DataDirectoryError
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
from .integrity import HIGH_WATER_FILE, HighWaterMark, accept_loss, highest_id, verify
from .schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from .sqlite_messages import MessageOperations
from .sqlite_queues import QueueOperations, QueueRow

log = logging.getLogger("mqd.store")

DATABASE_FILE = "mq.sqlite3"
LOCK_FILE = "mqd.lock"
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class SQLiteStore(QueueOperations, MessageOperations, Store):
    """Queues in ``<data_dir>/mq.sqlite3``; only the worker thread touches the connection.

    This class opens, checks and closes the store and turns each call into an operation of the
    group-commit worker; the operations themselves are in sqlite_queues.py and sqlite_messages.py.
    """

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
        self._queues: dict[str, QueueRow] = {}
        self._next_id = 1
        self._next_key_sweep = 0.0
        self._space_fresh = False  # looked at during the current batch
        self._space_low = False
        self._headroom = 0  # free bytes beyond the reserve at the last look
        self._written_since_look = 0  # bytes (estimated) written since then
        self._worker = GroupCommitWorker(self._connect, on_rollback=self._load_catalogue)
        self._worker.after_commit = self._record_high_water
        self._worker.before_batch = self._forget_space

    kind = "sqlite"

    def location(self) -> str:
        return str(self.data_dir.absolute())

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
                f"Data directory {self.data_dir} is in use by another mqd (pid {holder}).", in_use=True
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
            self._queues[name] = QueueRow(queue_id, Queue(name, created_at, settings), dlq_id)
        self._next_id = highest_id(connection) + 1

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

    async def restore(self, name: str, deliveries: Sequence[Delivery]) -> int:
        return await self._run(self._restore, name, deliveries)

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


def _is_access_error(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"}
