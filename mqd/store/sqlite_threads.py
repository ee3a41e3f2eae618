"""The two threads that own the SQLite store's connections: the writer, which commits batches
(group commit, see batching.py), and the reader, which answers reads from its own read-only
connection. In WAL mode a reader never waits for the writer, so stats, peeks and health checks
do not queue behind fsyncs. The event loop never blocks on SQLite.

The writer runs each kind of operation in a batch inside a savepoint of its own: one that raises
is undone alone and the rest of the batch still commits (see batching.py for what counts as the
operation's answer and what as a fault). Only a store-wide SQLite error fails the whole batch:
a full disk is answered StorageFull; an I/O error or damage puts the store in its failed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import MqError, StorageFailed, StorageFull
from .batching import MAX_OPERATIONS_PER_BATCH, Operation, by_kind, fault

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
        await opened

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
            while len(batch) < MAX_OPERATIONS_PER_BATCH:
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
    """Runs write operations on one connection, committing them in batches."""

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
        self._failure: MqError | None = None  # once set, every operation fails with it
        self.on_commit: Callable[[float, int], None] | None = None  # (seconds, operations)

    @property
    def failure(self) -> MqError | None:
        return self._failure

    async def run(self, operation: Operation) -> Any:
        """Queue ``operation`` and wait until it has been committed."""
        return await self._submit(operation)

    def _handle(self, connection: sqlite3.Connection, work: list) -> list:
        started = time.perf_counter()
        results = self._commit(connection, work)
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, len(work))
        return results

    def _commit(self, connection: sqlite3.Connection, work: list) -> list:
        if self._failure is not None:
            return [(future, False, self._failure) for _, future in work]
        results = []
        try:
            self._before_batch(connection)
            connection.execute("BEGIN IMMEDIATE")
            for group in by_kind(work):
                results += self._run_group(connection, group)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            error = self._storage_error(exc)
            self._rollback(connection)
            return [(future, False, error) for _, future in work]
        except BaseException as exc:
            self._rollback(connection)
            error = fault(exc)
            return [(future, False, error) for _, future in work]
        try:
            self._after_commit()
        except OSError as exc:
            error = self._fail(f"recording the commit failed ({exc.strerror or exc})")
            return [(future, False, error) for _, future in work]
        return results

    def _run_group(self, connection: sqlite3.Connection, group: list) -> list:
        """Run a group of operations of one kind inside a savepoint of its own; returns
        (future, ok, value) for each."""
        connection.execute("SAVEPOINT operation")
        try:
            values = group[0][0].run_all(connection, [operation.request for operation, _ in group])
        except MqError as exc:
            connection.execute("ROLLBACK TO operation")
            values = [exc] * len(group)
        except Exception as exc:
            if _is_store_failure(exc):
                raise
            connection.execute("ROLLBACK TO operation")
            self._after_rollback(connection)
            if len(group) > 1:  # which of them was it? each on its own, so that only that one fails
                connection.execute("RELEASE operation")
                return [result for item in group for result in self._run_group(connection, [item])]
            values = [fault(exc)]
        connection.execute("RELEASE operation")
        return [
            (future, not isinstance(value, MqError), value)
            for (_, future), value in zip(group, values, strict=True)
        ]

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
