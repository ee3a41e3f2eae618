"""The embedded store: one SQLite database in the data directory, one writer thread and one
reader thread (sqlite_threads.py).

Durability: WAL mode with ``synchronous=FULL`` fsyncs the log on every commit, and the writer
answers an operation only after its commit returned and the high-water mark recorded it, so an
acknowledged message survives kill -9 and power loss. With ``fsync=False`` (``--fsync off``)
commits reach the OS page cache only: they survive the daemon crashing, not the machine.

Cost does not grow with the backlog: takes find the next message with one seek in the index on
(queue_id, visible_at, id), and per-queue depth is a counter kept in the same transaction as the
change, so nothing counts rows that wait.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataCorrupt, DataDirectoryError
from ..logs import moment
from ..model import (
    Caps,
    Clock,
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
)
from . import sqlite_backup, sqlite_reads, sqlite_removals
from .base import Backup, Store
from .batching import BatchedPrimitives, Batcher
from .high_water import HIGH_WATER_FILE, HighWaterMark
from .sqlite_tables import APPLICATION_ID, SCHEMA, SCHEMA_VERSION, UPGRADES
from .sqlite_threads import Reader, Writer
from .sqlite_verify import accept_loss, verify
from .sqlite_writes import Writes

log = logging.getLogger("mqd.store")

DATABASE_FILE = "mq.sqlite3"
LOCK_FILE = "mqd.lock"
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class SQLiteStore(BatchedPrimitives, Store):
    """Queues in ``<data_dir>/mq.sqlite3``. This object opens, checks and closes the store and
    turns each primitive into an operation for the writer (sqlite_writes.py) or a read for the
    reader (sqlite_reads.py)."""

    kind = "sqlite"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        fsync: bool = True,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        repair: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_FILE
        self.fsync = fsync
        self.repair = repair
        self._lock_fd: int | None = None
        self._mark = HighWaterMark(self.data_dir / HIGH_WATER_FILE, fsync=fsync)
        self._writes = Writes(self.data_dir, min_free_bytes)
        self._writer = Writer(
            self._connect_writer,
            before_batch=self._writes.before_batch,
            after_commit=self._record_high_water,
            after_rollback=self._writes.load,
        )
        self._batcher = Batcher(self._writer)  # one batch at a time: SQLite has one writer
        self._reader = Reader(self._connect_reader)
        self._min_free_bytes = min_free_bytes
        self._backing_up = asyncio.Lock()  # one copy at a time: each needs the store's size free

    def location(self) -> str:
        return str(self.data_dir.absolute())

    def observe_commits(self, observer: Callable[[float, int], None]) -> None:
        self._batcher.on_commit = observer

    def failure(self) -> str | None:
        failure = self._writer.failure
        return str(failure) if failure is not None else None

    # -- life ------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._lock_data_dir()
        try:
            sqlite_backup.remove_partial_copies(self.data_dir)
            await asyncio.to_thread(self._check)
            self._mark.open()
            await self._writer.start()
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
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
        await self._batcher.close()
        await self._reader.stop()
        await self._writer.stop()
        self._mark.close()
        self._unlock_data_dir()

    def verify(self) -> str:
        """The full check (every checksum), for ``mqd --verify``; takes the data directory's lock
        so it never runs beside a daemon. A directory without a store is not "sound": a mistyped
        path must not pass for a checked copy (and nothing is created to find that out)."""
        if not self.path.exists():
            raise DataDirectoryError(
                f"There is no mq store in {self.data_dir} ({DATABASE_FILE}): nothing to check."
            )
        self._lock_data_dir()
        try:
            return verify(self.path, self._mark, full=True)
        finally:
            self._unlock_data_dir()

    async def backup(self, clock: Clock) -> Backup:
        """One copy at a time, each in a thread. A caller that leaves while waiting its turn
        makes none; one that leaves while its copy is made does not stop the thread: the copy
        is removed once made, and only then may the next begin."""
        await self._backing_up.acquire()
        making = asyncio.ensure_future(
            asyncio.to_thread(sqlite_backup.make_backup, self.path, clock, self._min_free_bytes)
        )
        making.add_done_callback(lambda _: self._backing_up.release())
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:
            making.add_done_callback(_remove_unwanted_copy)
            raise

    def restore_backup(self, backup: Path) -> str:
        """``mqd --restore``: put a backup in place of this store (which must not be serving)."""
        self._lock_data_dir()
        try:
            mark, aside = sqlite_backup.restore(backup, self.path)
        finally:
            self._unlock_data_dir()
        moved = f"; the files it replaced were renamed {', '.join(p.name for p in aside)}" if aside else ""
        return (
            f"restored {backup} into {self.data_dir}: a backup taken at {moment(mark.taken_at)} "
            f"(messages up to id {mark.highest_id}){moved}"
        )

    def _record_high_water(self) -> None:
        """After each commit, before anyone hears of it: the highest id stored, on disk."""
        self._mark.advance(self._writes.next_id - 1)

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

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, cached_statements=256)
        except sqlite3.Error as exc:
            raise DataDirectoryError(f"Cannot open {self.path}: {exc}.") from exc
        try:
            self._prepare(connection)
            self._adopt_backup(connection)
            self._writes.load(connection)
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

    def _adopt_backup(self, connection: sqlite3.Connection) -> None:
        mark = sqlite_backup.adopt(connection, self._mark.value)
        if mark is not None:
            log.warning(
                "started from a backup taken at %s (messages up to id %d): messages acknowledged "
                "after it are gone",
                moment(mark.taken_at),
                mark.highest_id,
            )

    def _connect_reader(self) -> sqlite3.Connection:
        """A read-only connection: in WAL mode it reads the last commit without waiting for the
        writer, and cannot write by mistake."""
        connection = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, cached_statements=64
        )
        connection.execute("PRAGMA cache_size=-8192")
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
        elif version < SCHEMA_VERSION:
            steps = " ".join(UPGRADES[step] for step in range(version + 1, SCHEMA_VERSION + 1))
            connection.executescript(f"BEGIN; {steps} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            log.info("upgraded %s from schema %d to %d", self.path, version, SCHEMA_VERSION)

    # -- the primitives: writes go to the writer, reads to the reader ----------------------------

    async def create_queue(self, name: str, settings: QueueSettings, now: float) -> tuple[Queue, bool]:
        return await self._write("create", self._writes.create_queues, (name, settings, now))

    async def delete_queue(self, queue_id: int) -> None:
        await self._write(object(), self._writes.delete_queues, queue_id)  # alone

    async def find_queue(self, name: str) -> Queue | None:
        return await self._reader.run(functools.partial(sqlite_reads.find_queue, name=name))

    async def send(
        self,
        queue_id: int,
        messages: Sequence[NewMessage],
        now: float,
        dedup_window: float,
        limit: Limit | None = None,
        dead_letter_queue_id: int | None = None,
    ) -> SendResult:
        sends = functools.partial(self._writes.sends, queue_id=queue_id)
        return await self._write(
            ("send", queue_id), sends, (messages, now, dedup_window, limit, dead_letter_queue_id)
        )

    async def take(
        self,
        queue_id: int,
        count: int,
        now: float,
        lease: Lease | None,
        dead_letter: DeadLetterRule | None,
        caps: Caps | None = None,
    ) -> TakeResult:
        takes = functools.partial(self._writes.takes, queue_id=queue_id)
        return await self._write(("take", queue_id), takes, (count, now, lease, dead_letter, caps))

    async def exchanges(self) -> dict[str, list[Queue]]:
        return await self._reader.run(sqlite_reads.exchanges)

    async def expiring(self, now: float) -> list[str]:
        return await self._reader.run(functools.partial(sqlite_removals.expiring_queues, now=now))

    async def stats(self, now: float, queue_id: int | None = None) -> list[QueueStats]:
        return await self._reader.run(functools.partial(sqlite_reads.stats, now=now, queue_id=queue_id))

    async def totals(self) -> Totals:
        return await self._reader.run(sqlite_reads.totals)

    async def peek(self, queue_id: int, count: int, now: float) -> list[Delivery]:
        return await self._reader.run(
            functools.partial(sqlite_reads.peek, queue_id=queue_id, count=count, now=now)
        )

    async def export(self, after: int, count: int) -> list[ExportedMessage]:
        return await self._reader.run(functools.partial(sqlite_reads.export, after=after, count=count))

    async def import_messages(
        self, source: str, messages: Sequence[ExportedMessage], queue_ids: dict[str, int]
    ) -> dict[str, int]:
        return await self._write(object(), self._writes.imports, (source, messages, queue_ids))  # alone

    async def next_visible_at(self, queue_id: int) -> float | None:
        return await self._reader.run(functools.partial(sqlite_reads.next_visible_at, queue_id=queue_id))


def _remove_unwanted_copy(making: asyncio.Future) -> None:
    if not making.cancelled() and making.exception() is None:
        path = making.result().path
        asyncio.get_running_loop().run_in_executor(None, functools.partial(path.unlink, missing_ok=True))


def _is_access_error(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"}
