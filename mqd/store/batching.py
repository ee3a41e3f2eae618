"""Group commit for every store: writes that arrive together are committed together, and writes
of one kind share their SQL.

Why: a durable commit costs an fsync (~0.1-1 ms, and a network round trip for PostgreSQL), far
more than the SQL around it. While one batch commits, the operations that arrive queue up; the
next batch takes them all. A lone client still gets its answer after one commit; a hundred
concurrent clients share one.

An operation is a kind and a request. For each kind the store gives one function,
``run_all(transaction, requests)``, that carries out every request of that kind in the batch at
once (sixteen sends to one queue become one INSERT of sixteen rows) and returns one result per
request, in order; a result that is an ``MqError`` is that request's answer (a stale receipt)
and fails it alone. An exception raised is a fault: it undoes what that kind did, and each of its
requests is tried again on its own so that only the faulty one fails (with InternalError, the
fault logged). Only a failure of the store itself (the disk, the connection) fails a batch.
Kinds are grouped in the order they first appear: operations in one batch were concurrent, so
no order among them was promised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import InternalError, MqError

log = logging.getLogger("mqd.store")

MAX_OPERATIONS_PER_BATCH = 4096


class Operation:
    """One request of one kind; ``run_all`` runs a list of requests of this kind together."""

    __slots__ = ("kind", "request", "run_all")

    def __init__(self, kind: Hashable, run_all: Callable, request: Any) -> None:
        self.kind = kind
        self.run_all = run_all
        self.request = request


def by_kind(items: list, operation: Callable[[Any], Operation] = lambda item: item[0]) -> list[list]:
    """``items`` grouped by their operation's kind, groups in order of first appearance."""
    groups: dict[Hashable, list] = {}
    for item in items:
        groups.setdefault(operation(item).kind, []).append(item)
    return list(groups.values())


def fault(exc: BaseException) -> InternalError:
    log.error("a store operation failed; it was undone alone", exc_info=exc)
    return InternalError()


class AsyncBatcher:
    """Group commit for a store with an asynchronous driver (PostgreSQL): one transaction per
    batch, taken from ``transaction()`` (an async context manager yielding a connection).

    ``store_failure(exc)`` turns an exception that means the store as a whole failed (a lost
    connection) into the MqError every operation of the batch gets; for any other exception it
    returns None and the batch is retried one operation at a time.
    """

    def __init__(
        self,
        transaction: Callable[[], Any],
        store_failure: Callable[[BaseException], MqError | None],
        *,
        concurrency: int = 1,
    ) -> None:
        self._transaction = transaction
        self._store_failure = store_failure
        self._concurrency = concurrency
        self._pending: list[tuple[Operation, asyncio.Future]] = []
        self._workers: set[asyncio.Task] = set()
        self._working = 0  # workers taking batches; one starts when there is work and room
        self.on_commit: Callable[[float, int], None] | None = None

    async def run(self, operation: Operation) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if self._working < self._concurrency and self._working < len(self._pending):
            self._working += 1  # counted here and uncounted by the worker itself, never late
            worker = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def close(self) -> None:
        """Let the batches under way finish."""
        while self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        try:
            await self._work_through()
        finally:
            self._working -= 1

    async def _work_through(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_OPERATIONS_PER_BATCH]
            del self._pending[: len(batch)]
            started = time.perf_counter()
            results = await self._commit(batch)
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, len(batch))
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.cancelled():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _commit(self, batch: list) -> list[tuple[bool, Any]]:
        """(ok, value) for each operation of ``batch``."""
        try:
            return await self._in_one_transaction(batch)
        except Exception as exc:
            failure = self._store_failure(exc)
            if failure is not None:
                return [(False, failure)] * len(batch)
            if len(batch) == 1:
                return [(False, fault(exc))]
        # A fault: find the operation it belongs to by trying each on its own.
        return [result for item in batch for result in await self._commit([item])]

    async def _in_one_transaction(self, batch: list) -> list[tuple[bool, Any]]:
        results: dict[int, tuple[bool, Any]] = {}
        async with self._transaction() as connection:
            for group in by_kind(batch):
                values = await group[0][0].run_all(connection, [operation.request for operation, _ in group])
                for (_, future), value in zip(group, values, strict=True):
                    results[id(future)] = (not isinstance(value, MqError), value)
        return [results[id(future)] for _, future in batch]
