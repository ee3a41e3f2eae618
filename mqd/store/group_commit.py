"""Group commit: one thread owns the SQLite connection and commits many operations at once.

Why: a durable commit costs an fsync (~0.1-1 ms), far more than the SQL around it. The thread
takes every operation queued while the previous commit was running, applies them all in one
transaction, commits once, then answers them all. A lone client still gets its answer after one
fsync; a hundred concurrent clients share one. The event loop never blocks on SQLite.

Operations are plain functions of the connection, each run inside its own savepoint: one that
raises is undone alone and the rest of the batch still commits. A domain error (``MqError``) is
the operation's answer; anything else is a fault of that operation (a value SQLite refused, a
bug), logged and answered with InternalError, and if it struck a group of operations sharing
their SQL, each of them is tried again on its own so that only the faulty one fails. Only a
failure of the store itself (an I/O error, a full disk, a damaged database) fails the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ..errors import InternalError, MqError, StorageFailed, StorageFull

log = logging.getLogger("mqd.store")

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

_STOP = object()


class SharedOperation:
    """An operation that runs together with its neighbours of the same ``kind`` in a batch.

    Sixteen producers sending to one queue become one INSERT of sixteen rows, sixteen consumers
    one SELECT and one DELETE: the SQL is paid per batch, not per request. ``run_all(connection,
    requests)`` returns one result per request, in order; a result that is an ``MqError`` fails
    that request alone (it must be decided before anything is written), and an ``MqError``
    raised fails the whole group.
    """

    __slots__ = ("kind", "request", "run_all")

    def __init__(
        self, kind: Hashable, run_all: Callable[[sqlite3.Connection, list], list], request: Any
    ) -> None:
        self.kind = kind
        self.run_all = run_all
        self.request = request

    def __call__(self, connection: sqlite3.Connection) -> Any:
        (result,) = self.run_all(connection, [self.request])
        if isinstance(result, MqError):
            raise result
        return result


MAX_OPERATIONS_PER_COMMIT = 4096

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


class GroupCommitWorker:
    """Runs operations on one connection in one thread, committing them in groups."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        on_rollback: Callable[[sqlite3.Connection], None] | None = None,
        name: str = "mqd-store",
    ) -> None:
        self._connect = connect
        self._on_rollback = on_rollback
        self._name = name
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: MqError | None = None  # once set, every operation fails with it
        self.on_commit: Callable[[float, int], None] | None = None  # (seconds, operations)
        self.after_commit: Callable[[], None] | None = None  # durable bookkeeping before replies
        self.before_batch: Callable[[], None] | None = None

    @property
    def failure(self) -> MqError | None:
        return self._failure

    async def start(self) -> None:
        """Open the connection in the worker thread; raise whatever opening raised."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(opened,), name=self._name, daemon=True)
        self._thread.start()
        await opened

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``operation`` and wait until it has been committed."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("the store is not open")
        future = self._loop.create_future()
        self._pending.put((operation, future))
        return await future

    async def stop(self) -> None:
        """Commit what is queued, close the connection and end the thread."""
        if self._thread is None or self._loop is None:
            return
        done = self._loop.create_future()
        self._pending.put((_STOP, done))
        await done
        self._thread = None

    # -- the worker thread ---------------------------------------------------------------------

    def _main(self, opened: asyncio.Future) -> None:
        try:
            connection = self._connect()
        except BaseException as exc:  # handed to the event loop as is
            self._answer([(opened, False, exc)])
            return
        self._answer([(opened, True, None)])
        stopping = self._serve(connection)
        # Closing the last connection checkpoints the WAL into the database and removes it:
        # answer "stopped" only after that, or the process could exit halfway through.
        connection.close()
        self._answer([(future, True, None) for future in stopping])

    def _serve(self, connection: sqlite3.Connection) -> list[asyncio.Future]:
        """Commit batches until asked to stop; returns the futures of the stop requests."""
        while True:
            batch = [self._pending.get()]
            self._drain_into(batch)
            stop = [future for operation, future in batch if operation is _STOP]
            work = [item for item in batch if item[0] is not _STOP]
            if work:
                started = time.perf_counter()
                self._answer(self._commit(connection, work))
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started, len(work))
            if stop:
                return stop

    def _drain_into(self, batch: list) -> None:
        while len(batch) < MAX_OPERATIONS_PER_COMMIT:
            try:
                batch.append(self._pending.get_nowait())
            except queue.Empty:
                return

    def _commit(self, connection: sqlite3.Connection, work: list) -> list:
        if self._failure is not None:
            return [(future, False, self._failure) for _, future in work]
        results = []
        if self.before_batch is not None:
            self.before_batch()
        try:
            connection.execute("BEGIN IMMEDIATE")
            start = 0
            while start < len(work):
                end = _end_of_group(work, start)
                results += self._run_group(connection, work[start:end])
                start = end
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            error = self._storage_error(exc)
            self._rollback(connection)
            return [(future, False, error) for _, future in work]
        except BaseException as exc:
            log.exception("store operation failed; its batch was rolled back")
            self._rollback(connection)
            return [(future, False, exc) for _, future in work]
        if self.after_commit is not None:
            try:
                self.after_commit()
            except OSError as exc:
                error = self._fail(f"recording the commit failed ({exc.strerror or exc})")
                return [(future, False, error) for _, future in work]
        return results

    def _run_group(self, connection: sqlite3.Connection, group: list) -> list:
        """Run one operation, or a group of shared ones, inside a savepoint of its own; returns
        (future, ok, value) for each."""
        connection.execute("SAVEPOINT operation")
        try:
            first = group[0][0]
            if len(group) == 1:
                values = [first(connection)]
            else:
                values = first.run_all(connection, [operation.request for operation, _ in group])
        except MqError as exc:
            connection.execute("ROLLBACK TO operation")
            values = [exc] * len(group)
        except Exception as exc:
            if _is_store_failure(exc):
                raise
            self._undo_operation(connection)
            if len(group) == 1:
                log.error("a store operation failed and was undone alone", exc_info=exc)
                values = [InternalError()]
            else:  # which of them was it? each on its own, so that only that one fails
                connection.execute("RELEASE operation")
                return [result for item in group for result in self._run_group(connection, [item])]
        connection.execute("RELEASE operation")
        return [
            (future, not isinstance(value, MqError), value)
            for (_, future), value in zip(group, values, strict=True)
        ]

    def _undo_operation(self, connection: sqlite3.Connection) -> None:
        """Roll back to the operation's savepoint and let the store reread what it keeps in
        memory, which the operation may have changed before it failed."""
        connection.execute("ROLLBACK TO operation")
        if self._on_rollback is not None:
            self._on_rollback(connection)

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
            if self._on_rollback is not None:
                self._on_rollback(connection)
        except sqlite3.Error as exc:
            log.error("rollback failed: %s", exc)

    def _answer(self, results: list) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle, results)


def _end_of_group(work: list, start: int) -> int:
    """Where the run of operations that share their SQL with work[start] ends."""
    first = work[start][0]
    end = start + 1
    if isinstance(first, SharedOperation):
        while (
            end < len(work) and isinstance(work[end][0], SharedOperation) and work[end][0].kind == first.kind
        ):
            end += 1
    return end


def _settle(results: list) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
