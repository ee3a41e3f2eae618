"""Group commit for every store: writes that arrive together are committed together, and writes
of one kind share their SQL. The one batching layer; a store only says how to commit a batch.

Why: a durable commit costs an fsync (~0.1-1 ms, and a network round trip for PostgreSQL), far
more than the SQL around it. While one batch commits, the operations that arrive queue up; the
next batch takes them all. A lone client still gets its answer after one commit; a hundred
concurrent clients share one.

An operation is a kind and a request. For each kind the store gives one function,
``run_all(transaction, requests)``, that carries out every request of that kind in the batch at
once (sixteen sends to one queue become one INSERT of sixteen rows) and returns one result per
request, in order; a result that is an ``MqError`` is that request's answer (a stale receipt)
and fails it alone. The batch's operations are grouped by kind, in the order kinds first appear
(operations in one batch were concurrent, so no order among them was promised), and handed to
the store's ``Committer`` as one transaction.

Faults stay with the request that caused them. A group whose ``run_all`` raised is undone by the
committer while the other groups commit; an ``MqError`` it raised is the answer of every request
in it (its queue was deleted meanwhile), anything else is a fault: each of its requests is then
committed again on its own, so that only the faulty one fails (with InternalError, the fault
logged). Only a failure of the store itself (the disk, the connection) fails a whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from ..errors import InternalError, MqError
from ..model import Delivery, Queue, Removed, Settled

log = logging.getLogger("mqd.store")

MAX_OPERATIONS_PER_BATCH = 4096


class Operation:
    """One request of one kind; ``run_all`` runs a list of requests of this kind together."""

    __slots__ = ("kind", "request", "run_all")

    def __init__(self, kind: Hashable, run_all: Callable, request: Any) -> None:
        self.kind = kind
        self.run_all = run_all
        self.request = request


class Group:
    """The operations of one kind in a batch: ``run_all(transaction, requests)`` runs them."""

    __slots__ = ("futures", "requests", "run_all")

    def __init__(self, run_all: Callable, requests: list, futures: list[asyncio.Future]) -> None:
        self.run_all = run_all
        self.requests = requests
        self.futures = futures


class Committer(Protocol):
    """How a store commits a batch: every group in one transaction, each group's results (a
    list, one per request) or the exception its ``run_all`` raised, in order. A group that raised
    must leave no effect, while the others commit. Raise an ``MqError`` only when the store as a
    whole failed the batch (every operation in it gets that error)."""

    async def commit(self, groups: list[Group]) -> list[list | BaseException]: ...


def fault(exc: BaseException) -> InternalError:
    log.error("a store operation failed; it was undone alone", exc_info=exc)
    return InternalError()


def _groups(batch: list[tuple[Operation, asyncio.Future]]) -> list[Group]:
    by_kind: dict[Hashable, Group] = {}
    for operation, future in batch:
        group = by_kind.get(operation.kind)
        if group is None:
            group = by_kind[operation.kind] = Group(operation.run_all, [], [])
        group.requests.append(operation.request)
        group.futures.append(future)
    return list(by_kind.values())


class Batcher:
    """Collects operations on the event loop and commits them in batches through ``committer``,
    at most ``concurrency`` batches at a time (1 for a store with one writer)."""

    def __init__(self, committer: Committer, *, concurrency: int = 1) -> None:
        self._committer = committer
        self._concurrency = concurrency
        self._pending: list[tuple[Operation, asyncio.Future]] = []
        self._workers: set[asyncio.Task] = set()
        self._working = 0  # workers taking batches; one starts when there is work and room
        self.on_commit: Callable[[float, int], None] | None = None  # (seconds, operations)

    async def run(self, operation: Operation) -> Any:
        """Queue ``operation`` and wait until its batch has been committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((operation, future))
        if self._working < self._concurrency and self._working < len(self._pending):
            self._working += 1  # counted here and uncounted by the worker itself, never late
            worker = loop.create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def close(self) -> None:
        """Let the batches under way finish."""
        while self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_OPERATIONS_PER_BATCH]
                del self._pending[: len(batch)]
                started = time.perf_counter()
                await self._commit(_groups(batch))
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started, len(batch))
        finally:
            self._working -= 1

    async def _commit(self, groups: list[Group]) -> None:
        """Commit ``groups`` and settle their futures; a group that faulted is committed again
        one request at a time."""
        try:
            outcomes = await self._committer.commit(groups)
        except MqError as failure:  # the store failed the batch as a whole
            for group in groups:
                _settle_all(group.futures, failure)
            return
        except Exception as exc:  # a committer's own bug: nothing was committed
            error = fault(exc)
            for group in groups:
                _settle_all(group.futures, error)
            return
        retry: list[Group] = []
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, MqError):
                _settle_all(group.futures, outcome)
            elif isinstance(outcome, BaseException):
                if len(group.requests) == 1:
                    _settle_all(group.futures, fault(outcome))
                else:  # which of them was it? each on its own, so that only that one fails
                    retry += [
                        Group(group.run_all, [request], [future])
                        for request, future in zip(group.requests, group.futures, strict=True)
                    ]
            else:
                for future, value in zip(group.futures, outcome, strict=True):
                    _settle(future, value)
        if retry:
            await self._commit(retry)


def _settle(future: asyncio.Future, value: Any) -> None:
    if future.cancelled():
        return
    if isinstance(value, MqError):
        future.set_exception(value)
    else:
        future.set_result(value)


def _settle_all(futures: list[asyncio.Future], error: MqError) -> None:
    for future in futures:
        _settle(future, error)


class BatchedPrimitives:
    """The primitives every store carries out the same way: an operation for its batcher, run by
    its ``_writes`` object's function of the same purpose (``acks``, ``releases``, ...). A store
    sets ``self._batcher`` and ``self._writes``; sends, takes and the catalogue stay its own."""

    _batcher: Batcher
    _writes: Any

    async def _write(self, kind: Hashable, run_all: Callable, request: Any) -> Any:
        return await self._batcher.run(Operation(kind, run_all, request))

    async def ack(
        self, queue_id: int, message_id: int, token: str, now: float, announce: bool = False
    ) -> Settled:
        return await self._write("ack", self._writes.acks, (queue_id, message_id, token, now, announce))

    async def bind(self, exchange: str, queue_ids: Sequence[int]) -> bool:
        return await self._write(object(), self._writes.binds, (exchange, sorted(set(queue_ids))))

    async def unbind(self, exchange: str) -> bool:
        return await self._write(object(), self._writes.unbinds, exchange)

    async def fan_out(self, sends: Sequence[tuple]) -> list:
        return await self._write(object(), self._writes.fan_outs, sends)  # alone: all or nothing

    async def update_queue(self, queue_id: int, changes: dict) -> Queue:
        return await self._write(object(), self._writes.updates, (queue_id, changes))  # alone

    async def expire(
        self, queue_id: int, now: float, dead_letter_queue_id: int | None, limit: int
    ) -> Removed:
        return await self._write(
            object(), self._writes.expiries, (queue_id, now, dead_letter_queue_id, limit)
        )

    async def release(
        self, queue_id: int, message_id: int, token: str, now: float, visible_at: float
    ) -> bool:
        return await self._write(
            "release", self._writes.releases, (queue_id, message_id, token, now, visible_at)
        )

    async def extend(self, queue_id: int, message_id: int, token: str, now: float, expires_at: float) -> bool:
        return await self._write(
            "extend", self._writes.extensions, (queue_id, message_id, token, now, expires_at)
        )

    async def restore(self, queue_id: int, deliveries: Sequence[Delivery]) -> int:
        return await self._write("restore", self._writes.restores, (queue_id, deliveries))

    async def purge(self, queue_id: int) -> int:
        return await self._write("purge", self._writes.purges, queue_id)

    async def redrive(self, queue_id: int, now: float) -> list[tuple[Queue, int]]:
        return await self._write(object(), self._writes.redrives, (queue_id, now))  # alone: it moves many
