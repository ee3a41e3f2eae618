"""Queue semantics over a store: long-poll receivers, their wake-ups, and per-queue counters.

The store makes each operation atomic; the broker decides *when* to try one. Receivers that
find a queue empty wait in line (one deque per queue, arrival order) and keep their place until
they leave with a message or time out. A send of k ready messages lets the first k of them look
again; one that still finds nothing (a receiver without a wait took the message first) sleeps
again where it stood. Messages that become visible later
(delays, leases running out) wake the line through one timer per queue, armed at the earliest
such moment the store knows of. No two receivers can get the same message: that is the store's
promise, whatever order the broker wakes them in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from .errors import MqError, QueueNotFound, ShuttingDown, TooManyWaiters
from .logs import counted
from .store.base import (
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

log = logging.getLogger("mqd.broker")

TIMER_SLACK_SECONDS = 0.001  # fire just after a message becomes visible, never just before


@dataclasses.dataclass
class QueueCounters:
    """Totals since the daemon started, for /metrics (Prometheus counters may reset)."""

    sent: int = 0
    received: int = 0
    returned: int = 0  # taken for a receiver that left before it was told, and put back
    acked: int = 0
    released: int = 0
    dead_lettered: int = 0


class _Receiver:
    """A long-polling receiver's place in line: asleep on ``future``, or awake and looking."""

    __slots__ = ("awake", "future")

    def __init__(self) -> None:
        self.awake = True
        self.future: asyncio.Future | None = None


class _Line:
    """The receivers waiting on one queue, and the timer for its next hidden message."""

    __slots__ = ("generation", "receivers", "timer", "timer_at", "timer_known", "timer_query", "waiting")

    def __init__(self) -> None:
        self.receivers = 0  # receivers inside receive(), asleep or looking
        self.waiting: deque[_Receiver] = deque()  # in arrival order, asleep or looking
        self.generation = 0  # bumped on every wake-up, so a receiver can tell it missed one
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None  # wall-clock time the timer stands for
        self.timer_known = False  # whether timer_at reflects the store's earliest hidden message
        self.timer_query: asyncio.Task | None = None


class Broker:
    def __init__(self, store: Store, *, max_waiters: int = 4096) -> None:
        self.store = store
        self.max_waiters = max_waiters
        self.counters: dict[str, QueueCounters] = {}
        self.started_at = time.time()
        self._lines: dict[str, _Line] = {}
        self._waiting = 0
        self._closing = False
        self._returns: set[asyncio.Task] = set()
        store.set_listener(self)

    # -- what the store reports of changes made elsewhere (other nodes on a shared database) ----

    def messages_ready(self, queue: str, count: int) -> None:
        self._notify(queue, count)

    def message_due(self, queue: str, visible_at: float) -> None:
        self._note_hidden(queue, visible_at)

    @property
    def waiting_receivers(self) -> int:
        return self._waiting

    def close(self) -> None:
        """Stop taking new work and answer every waiting receiver (with nothing)."""
        self._closing = True
        for line in self._lines.values():
            self._wake(line, len(line.waiting))
            if line.timer is not None:
                line.timer.cancel()

    # -- queues ----------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        queue, created = await self.store.create_queue(name, settings)
        if created:
            log.info("queue '%s' created", name)
        return queue, created

    async def delete_queue(self, name: str) -> None:
        await self.store.delete_queue(name)
        log.info("queue '%s' deleted", name)
        self.counters.pop(name, None)
        line = self._lines.get(name)
        if line is not None:  # its receivers find out the queue is gone
            self._wake(line, len(line.waiting))

    async def get_queue(self, name: str) -> Queue:
        return await self.store.get_queue(name)

    async def queue_stats(self, name: str) -> QueueStats:
        return await self.store.queue_stats(name)

    async def list_queues(self) -> list[QueueStats]:
        return await self.store.list_queues()

    async def totals(self) -> Totals:
        return await self.store.totals()

    async def purge(self, name: str) -> int:
        removed = await self.store.purge(name)
        log.info("queue '%s' purged (%s)", name, counted(removed, "message"))
        return removed

    async def redrive(self, name: str) -> dict[str, int]:
        moved = await self.store.redrive(name)
        for destination, count in moved.items():
            self._notify(destination, count)
        return moved

    def counters_for(self, name: str) -> QueueCounters:
        counters = self.counters.get(name)
        if counters is None:
            counters = self.counters[name] = QueueCounters()
        return counters

    # -- messages --------------------------------------------------------------------------------

    async def send(self, name: str, messages: Sequence[NewMessage]) -> SendResult:
        if self._closing:
            raise ShuttingDown("mqd is shutting down; send again once it is back.")
        result = await self.store.send(name, messages)
        self.counters_for(name).sent += result.duplicates.count(False)
        if result.ready:
            self._notify(name, result.ready)
        delays = [
            m.delay for m, dup in zip(messages, result.duplicates, strict=True) if m.delay > 0 and not dup
        ]
        if delays:
            self._note_hidden(name, time.time() + min(delays))
        return result

    async def receive(
        self,
        name: str,
        *,
        count: int = 1,
        lease: float | None = None,
        wait: float = 0.0,
        still_there: Callable[[], bool] = lambda: True,
    ) -> list[Delivery]:
        """Up to ``count`` messages; waits up to ``wait`` seconds for the first one.

        A message never goes to a receiver that has left: ``still_there`` is asked before every
        look at the store (and a waiting receiver leaves the line as soon as its caller is
        cancelled); messages taken for one that is cancelled while the store takes them are put
        back (see ``give_back``)."""
        if wait <= 0 or self._closing:
            return await self._take(name, count, lease, still_there)
        # Join the line before looking, so that a send landing between our look and our sleep
        # still bumps the generation we compare against.
        line = self._lines.get(name)
        if line is None:
            line = self._lines[name] = _Line()
        line.receivers += 1
        try:
            return await self._wait_and_take(name, line, count, lease, wait, still_there)
        finally:
            line.receivers -= 1
            self._forget_if_idle(name, line)

    async def peek(self, name: str, count: int) -> list[Delivery]:
        return await self.store.peek(name, count)

    async def ack(self, name: str, receipt: str) -> None:
        await self.store.ack(name, receipt)
        self.counters_for(name).acked += 1

    async def release(self, name: str, receipt: str, delay: float) -> float:
        visible_at = await self.store.release(name, receipt, delay)
        self.counters_for(name).released += 1
        if visible_at == 0:
            self._notify(name, 1)
        else:
            self._note_hidden(name, visible_at)
        return visible_at

    async def extend(self, name: str, receipt: str, lease: float) -> float:
        return await self.store.extend(name, receipt, lease)

    # -- waiting ---------------------------------------------------------------------------------

    def give_back(self, name: str, deliveries: Sequence[Delivery]) -> None:
        """Put back messages whose receiver left before it was told of them (its connection
        closed before the reply was written): ready again at once, the attempt not counted."""
        if deliveries:
            task = asyncio.get_running_loop().create_task(self._restore(name, list(deliveries)))
            self._returns.add(task)
            task.add_done_callback(self._returns.discard)

    async def finish_returns(self) -> None:
        """Wait for messages being given back (before the store closes)."""
        while self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)

    async def _restore(self, name: str, deliveries: list[Delivery]) -> None:
        try:
            restored = await self.store.restore(name, deliveries)
        except MqError as exc:
            log.warning(
                "could not put back %s of '%s' whose receiver left: %s",
                counted(len(deliveries), "message"),
                name,
                exc,
            )
            return
        self.counters_for(name).returned += restored
        if restored:
            log.debug("put back %s of '%s': the receiver left", counted(restored, "message"), name)
            self._notify(name, restored)

    async def _take(
        self, name: str, count: int, lease: float | None, still_there: Callable[[], bool]
    ) -> list[Delivery]:
        if not still_there():
            return []
        # Once asked, the store takes the messages whatever happens to us: if we are cancelled
        # meanwhile (the receiver's connection closed), they are put back as soon as it has.
        taking = asyncio.ensure_future(self.store.receive(name, count, lease))
        try:
            result = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(functools.partial(self._taken_for_nobody, name, lease))
            raise
        return self._taken(name, result, lease)

    def _taken_for_nobody(self, name: str, lease: float | None, taking: asyncio.Future) -> None:
        if taking.cancelled() or taking.exception() is not None:
            return
        self.give_back(name, self._taken(name, taking.result(), lease))

    def _taken(self, name: str, result: ReceiveResult, lease: float | None) -> list[Delivery]:
        if result.deliveries:
            self.counters_for(name).received += len(result.deliveries)
            if lease is not None:
                self._note_hidden(name, result.deliveries[0].lease_expires_at)
        for destination, moved in result.dead_lettered.items():
            self.counters_for(name).dead_lettered += moved
            self._notify(destination, moved)
        return result.deliveries

    async def _wait_and_take(
        self,
        name: str,
        line: _Line,
        count: int,
        lease: float | None,
        wait: float,
        still_there: Callable[[], bool],
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        me: _Receiver | None = None  # our place in line, from our first empty look until we leave
        try:
            while True:
                generation = line.generation
                deliveries = await self._take(name, count, lease, still_there)
                if deliveries:
                    if me is not None:
                        self._leave(line, me)
                        me = None
                    if len(deliveries) == count and line.waiting:
                        self._wake(line, 1)  # there may be more: pass the baton
                    return deliveries
                if self._closing or loop.time() >= deadline or not still_there():
                    return []
                if line.generation != generation:
                    continue  # something arrived while we looked: look again
                if me is None:
                    if self._waiting >= self.max_waiters:
                        raise TooManyWaiters(
                            f"Too many receivers are waiting ({self.max_waiters}); retry shortly."
                        )
                    me = _Receiver()
                    line.waiting.append(me)
                    self._waiting += 1
                if not await self._sleep(line, name, me, deadline) or self._closing:
                    return []
        except asyncio.CancelledError:
            if me is not None:  # we may have been woken for a message: let the next one look
                self._leave(line, me)
                me = None
                if line.waiting:
                    self._wake(line, 1)
            raise
        finally:
            if me is not None:
                self._leave(line, me)

    def _leave(self, line: _Line, me: _Receiver) -> None:
        line.waiting.remove(me)
        self._waiting -= 1

    async def _sleep(self, line: _Line, name: str, me: _Receiver, deadline: float) -> bool:
        """Sleep in our place until woken (True) or until the deadline (False)."""
        loop = asyncio.get_running_loop()
        me.awake = False
        me.future = loop.create_future()
        timeout = loop.call_at(deadline, _settle, me.future, False)
        try:
            self._ensure_timer(name, line)
            return await me.future
        finally:
            timeout.cancel()
            me.awake = True

    def _notify(self, name: str, ready: int) -> None:
        line = self._lines.get(name)
        if line is not None:
            self._wake(line, ready)

    def _wake(self, line: _Line, count: int) -> None:
        """Let the first ``count`` receivers in line look again. One already looking counts too:
        it sees the new generation and looks again itself, ahead of those behind it."""
        line.generation += 1
        for receiver in line.waiting:
            if count <= 0:
                break
            count -= 1
            if not receiver.awake:
                receiver.awake = True
                _settle(receiver.future, True)

    # -- the timer for messages that become visible later ----------------------------------------

    def _note_hidden(self, name: str, visible_at: float | None) -> None:
        """A message of ``name`` becomes visible at ``visible_at``; wake the line then."""
        line = self._lines.get(name)
        if line is None or not line.waiting or visible_at is None:
            return
        if line.timer_known and (line.timer_at is None or visible_at < line.timer_at):
            self._arm(name, line, visible_at)

    def _ensure_timer(self, name: str, line: _Line) -> None:
        if not line.timer_known and line.timer_query is None:
            line.timer_query = asyncio.create_task(self._query_timer(name, line))

    async def _query_timer(self, name: str, line: _Line) -> None:
        try:
            visible_at = await self.store.next_visible_at(name)
        except QueueNotFound:
            visible_at = None
        except Exception:
            log.exception("could not read the next visible time of '%s'", name)
            visible_at = None
        finally:
            line.timer_query = None
        line.timer_known = True
        if visible_at is not None and (line.timer_at is None or visible_at < line.timer_at):
            self._arm(name, line, visible_at)

    def _arm(self, name: str, line: _Line, visible_at: float) -> None:
        if line.timer is not None:
            line.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, visible_at - time.time()) + TIMER_SLACK_SECONDS
        line.timer_at = visible_at
        line.timer = loop.call_later(delay, self._timer_fired, name, line)

    def _timer_fired(self, name: str, line: _Line) -> None:
        line.timer = None
        line.timer_at = None
        line.timer_known = False  # the next sleeper asks the store again
        if line.waiting:
            self._wake(line, 1)
        self._forget_if_idle(name, line)

    def _forget_if_idle(self, name: str, line: _Line) -> None:
        if line.receivers == 0 and line.timer is None and self._lines.get(name) is line:
            del self._lines[name]


def _settle(future: asyncio.Future, value: bool) -> None:
    if not future.done():
        future.set_result(value)
