"""The two threads that own the SQLite store's connections: the writer, which commits the
batches batching.py forms (group commit), and the reader, which answers reads from its own read-only
connection. In WAL mode a reader never waits for the writer, so stats, peeks and health checks
do not queue behind fsyncs. The event loop never blocks on SQLite.

The writer runs each group of a batch (the operations of one kind) inside a savepoint of its
own: one that raises is undone alone and the rest of the batch still commits (batching.py decides
what that means for its requests). Only a store-wide SQLite error fails the whole batch:
a full disk is answered StorageFull; an I/O error or damage puts the store in its failed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import MqError, StorageFailed, StorageFull
from .batching import Group, fault

log = logging.getLogger("mqd.store")

T = TypeVar("T")
_STOP = object()

# SQLite primary result codes (the low byte of the extended code).
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# Codes that say the database as a whole cannot take this transaction, whichever operation met
# them: busy, locked, out of memory, read-only, interrupted, I/O, damaged, full, cannot open.
_STORE_WIDE = {5, 6, 7, 8, 9, 10, 11, 13, 14, 26}


def _is_store_failure(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _STORE_WIDE


class _Thread:
    """A thread that owns one connection and answers requests from the event loop."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._name = name
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open the connection in the thread; raise whatever opening raised."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(opened,), name=self._name, daemon=True)
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._thread = None  # it has ended: nothing to stop
            raise

    async def _submit(self, item: Any) -> Any:
        if self._thread is None or self._loop is None:
            raise RuntimeError("the store is not open")
        future = self._loop.create_future()
        self._pending.put((item, future))
        return await future

    async def stop(self) -> None:
        """Finish what is queued, close the connection and end the thread."""
        if self._thread is None or self._loop is None:
            return
        done = self._loop.create_future()
        self._pending.put((_STOP, done))
        await done
        self._thread = None

    def _main(self, opened: asyncio.Future) -> None:
        try:
            connection = self._connect()
        except BaseException as exc:  # handed to the event loop as is
            self._answer([(opened, False, exc)])
            return
        self._answer([(opened, True, None)])
        stopping = self._serve(connection)
        # Closing the writer's connection, the last, checkpoints the WAL into the database and
        # removes it: answer "stopped" only after that, or the process could exit halfway.
        connection.close()
        self._answer([(future, True, None) for future in stopping])

    def _serve(self, connection: sqlite3.Connection) -> list[asyncio.Future]:
        """Answer requests until asked to stop; returns the futures of the stop requests."""
        while True:
            batch = [self._pending.get()]
            while True:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            stop = [future for item, future in batch if item is _STOP]
            work = [entry for entry in batch if entry[0] is not _STOP]
            if work:
                self._answer(self._handle(connection, work))
            if stop:
                return stop

    def _handle(self, connection: sqlite3.Connection, work: list) -> list:
        raise NotImplementedError

    def _answer(self, results: list) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle, results)


class Reader(_Thread):
    """Runs read functions, one after another, each in a read transaction of its own (one
    consistent snapshot per function, however many statements it runs)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connect, "mqd-store-reader")

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(read)

    def _handle(self, connection: sqlite3.Connection, work: list) -> list:
        results = []
        for read, future in work:
            try:
                connection.execute("BEGIN")
                try:
                    results.append((future, True, read(connection)))
                finally:
                    connection.execute("COMMIT")
            except Exception as exc:
                results.append((future, False, exc if isinstance(exc, MqError) else _read_error(exc)))
        return results


def _read_error(exc: BaseException) -> MqError:
    if isinstance(exc, sqlite3.Error):
        return StorageFailed(f"The store could not be read: {exc}.")
    return fault(exc)


class Writer(_Thread):
    """Commits batches on one connection: the SQLite store's Committer (see batching.py). Each
    group of a batch runs inside a savepoint of its own, so one that raises is undone alone."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        before_batch: Callable[[sqlite3.Connection], None],
        after_commit: Callable[[], None],
        after_rollback: Callable[[sqlite3.Connection], None],
    ) -> None:
        super().__init__(connect, "mqd-store-writer")
        self._before_batch = before_batch  # per-batch bookkeeping (the free-space look)
        self._after_commit = after_commit  # durable bookkeeping, before anyone hears back
        self._after_rollback = after_rollback  # reread what the store keeps in memory
        self._failure: MqError | None = None  # once set, every batch fails with it

    @property
    def failure(self) -> MqError | None:
        return self._failure

    async def commit(self, groups: list[Group]) -> list[list | BaseException]:
        return await self._submit(groups)

    def _handle(self, connection: sqlite3.Connection, work: list) -> list:
        results = []
        for groups, future in work:
            try:
                results.append((future, True, self._commit(connection, groups)))
            except Exception as exc:
                results.append((future, False, exc))
        return results

    def _commit(self, connection: sqlite3.Connection, groups: list[Group]) -> list[list | BaseException]:
        if self._failure is not None:
            raise self._failure
        try:
            self._before_batch(connection)
            connection.execute("BEGIN IMMEDIATE")
            outcomes = [self._run_group(connection, group) for group in groups]
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            error = self._storage_error(exc)
            self._rollback(connection)
            raise error from None
        except BaseException:
            self._rollback(connection)
            raise
        try:
            self._after_commit()
        except OSError as exc:
            raise self._fail(f"recording the commit failed ({exc.strerror or exc})") from None
        return outcomes

    def _run_group(self, connection: sqlite3.Connection, group: Group) -> list | BaseException:
        """Run one group inside a savepoint: its results, or what it raised (and it is undone)."""
        connection.execute("SAVEPOINT operation")
        try:
            outcome = group.run_all(connection, group.requests)
        except Exception as exc:
            if _is_store_failure(exc):
                raise
            connection.execute("ROLLBACK TO operation")
            self._after_rollback(connection)
            outcome = exc
        connection.execute("RELEASE operation")
        return outcome

    def _storage_error(self, exc: sqlite3.Error) -> MqError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL:
            log.warning("the disk is full: %s", exc)
            return StorageFull("The data directory's disk is full; the operation was not carried out.")
        if code == _SQLITE_IOERR:
            # After a failed fsync the kernel may have dropped the dirty pages: retrying could
            # report success for data that is gone (PostgreSQL's fsyncgate). Stop writing.
            return self._fail(f"an I/O error ({exc})")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return self._fail(f"the database is damaged ({exc}); stop mqd and run mqd --verify")
        log.error("store error: %s", exc)
        return StorageFailed(f"The store failed: {exc}.")

    def _fail(self, cause: str) -> MqError:
        """Enter the failed state: every later operation is refused until mqd is restarted."""
        self._failure = StorageFailed(
            f"The store failed: {cause}. The outcome of the last writes is unknown; mqd accepts no "
            "more operations until it is restarted."
        )
        log.critical("store failure, refusing all further operations: %s", cause)
        return self._failure

    def _rollback(self, connection: sqlite3.Connection) -> None:
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._after_rollback(connection)
        except sqlite3.Error as exc:
            log.error("rollback failed: %s", exc)


def _settle(results: list) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
