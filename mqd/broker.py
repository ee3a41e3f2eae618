"""Queue semantics, decided once, over a store that only keeps: the one home of the queue model.

The broker resolves queue names (a catalogue of queues it has seen, updated when it changes a
queue's settings and told by the store of changes made on other nodes; a store refuses an
operation on a queue deleted meanwhile, so a stale entry is noticed and looked up again), reads
the clock, makes lease tokens and receipts, decides which settings conflict, when a message is
dead-lettered, expires or makes room, what a queue's limits and caps are (docs/policies.md),
and what a stale receipt means, and passes all of it to the store as arguments. It also owns
the waiting (waiting.py): long-polls, their wake-ups, and receivers that leave; the expiry
sweep; and the per-queue traffic counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .errors import (
    ExchangeNotFound,
    MqError,
    QueueConflict,
    QueueFull,
    QueueGone,
    QueueNotFound,
    ReceiptNotFound,
    ShuttingDown,
)
from .logs import counted
from .model import (
    Clock,
    DeadLetterRule,
    Delivery,
    ExportedMessage,
    Lease,
    NewMessage,
    Queue,
    QueueSettings,
    QueueStats,
    Removed,
    SendResult,
    Settled,
    TakeResult,
    Totals,
    parse_receipt,
)
from .store.base import Backup, Store, StoreListener
from .waiting import Lines

log = logging.getLogger("mqd.broker")

EXPIRY_SWEEP_SECONDS = 1.0  # how often messages past their ttl are looked for (takes skip them anyway)
EXPIRED_PER_SWEEP = 1000  # per queue and transaction
ABANDONED_SEND_LOOK_AGAIN_SECONDS = 0.5  # after a send whose sender left mid-commit

T = TypeVar("T")


@dataclasses.dataclass
class QueueCounters:
    """Totals since the daemon started, for /metrics and the JSON API (they reset with mqd)."""

    sent: int = 0
    received: int = 0
    returned: int = 0  # taken for a receiver that left before it was told, and put back
    acked: int = 0
    released: int = 0
    dead_lettered: int = 0  # moved to the dead-letter queue: attempts used up, expired or dropped
    expired: int = 0  # waited past their ttl: dead-lettered, or dropped when there is no DLQ
    dropped: int = 0  # made room in a full queue (overflow drop_oldest)
    refused: int = 0  # sends refused by a full queue (overflow reject)


class Broker(StoreListener):
    def __init__(self, store: Store, *, max_waiters: int = 4096, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock
        self.counters: dict[str, QueueCounters] = {}
        self.started_at = clock()
        self._queues: dict[str, Queue] = {}  # the catalogue: name -> queue, as last seen
        self._lines = Lines(clock, store.next_visible_at, max_waiters)
        self._closing = False
        self._returns: set[asyncio.Task] = set()
        store.set_listener(self)

    # -- what the store reports of changes made elsewhere (other nodes on a shared database) ----

    def messages_ready(self, queue_id: int, count: int) -> None:
        self._lines.notify(queue_id, count)

    def message_due(self, queue_id: int, visible_at: float) -> None:
        self._lines.note_hidden(queue_id, visible_at)

    def queue_changed(self, name: str) -> None:
        gone = self._queues.pop(name, None)
        if gone is not None:
            self._lines.wake_all(gone.id)

    @property
    def closing(self) -> bool:
        """Whether mqd is stopping: receives answer at once, with nothing if nothing is ready."""
        return self._closing

    @property
    def waiting_receivers(self) -> int:
        return self._lines.waiting

    def close(self) -> None:
        """Stop taking new work and answer every waiting receiver (with nothing)."""
        self._closing = True
        self._lines.wake_all()

    def counters_for(self, name: str) -> QueueCounters:
        counters = self.counters.get(name)
        if counters is None:
            counters = self.counters[name] = QueueCounters()
        return counters

    # -- the catalogue ---------------------------------------------------------------------------

    async def queue(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = await self.store.find_queue(name)
            if queue is None:
                raise QueueNotFound(name)
            self._queues[name] = queue
        return queue

    async def _on_queue(self, name: str, operation: Callable[[Queue], Awaitable[T]]) -> T:
        """Run ``operation`` on the queue named; if the store says that queue is gone (deleted,
        perhaps on another node), forget it and try once more with what the name is now."""
        queue = await self.queue(name)
        try:
            return await operation(queue)
        except QueueGone:
            if self._queues.get(name) is queue:
                del self._queues[name]
            again = await self.queue(name)
            try:
                return await operation(again)
            except QueueGone:
                self._queues.pop(name, None)
                raise QueueNotFound(name) from None

    async def create_queue(self, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        if settings.dead_letter_queue == name:
            raise QueueConflict("A queue cannot be its own dead-letter queue.")
        try:
            queue, created = await self.store.create_queue(name, settings, self.clock())
        except QueueNotFound as exc:
            raise QueueConflict(f"Dead-letter queue '{exc.name}' does not exist; create it first.") from None
        if not created and queue.settings != settings:
            raise QueueConflict(
                f"Queue '{name}' already exists with other settings ({queue.settings.describe()}); "
                "declare it with the same settings or delete it first."
            )
        self._queues[name] = queue
        if created:
            log.info("queue '%s' created", name)
        return queue, created

    async def update_queue(self, name: str, changes: dict[str, object]) -> Queue:
        """Change some of a queue's settings (those not named stay as they are)."""

        async def update(queue: Queue) -> Queue:
            # Made in the store's transaction, on the settings as they are there then: two
            # changes at once (or on two nodes) each keep what the other changed.
            return await self.store.update_queue(queue.id, changes)

        try:
            queue = await self._on_queue(name, update)
        except QueueNotFound as exc:
            if exc.name == name:
                raise
            raise QueueConflict(f"Dead-letter queue '{exc.name}' does not exist; create it first.") from None
        self._queues[name] = queue
        log.info("queue '%s' settings changed: %s", name, queue.settings.describe())
        self._lines.notify(queue.id, 1)  # a cap raised may let a waiting receiver take
        return queue

    async def delete_queue(self, name: str) -> None:
        queue = await self.queue(name)
        try:
            await self.store.delete_queue(queue.id)
        except QueueGone:
            raise QueueNotFound(name) from None
        finally:
            self._queues.pop(name, None)
        log.info("queue '%s' deleted", name)
        self.counters.pop(name, None)
        self._lines.wake_all(queue.id)  # its receivers find out the queue is gone

    async def queue_stats(self, name: str) -> QueueStats:
        queue = await self.queue(name)
        found = await self.store.stats(self.clock(), queue.id)
        if not found:
            self._queues.pop(name, None)
            raise QueueNotFound(name)
        return found[0]

    async def list_queues(self) -> list[QueueStats]:
        return await self.store.stats(self.clock())

    async def totals(self) -> Totals:
        return await self.store.totals()

    async def backup(self) -> Backup:
        """A copy of the store as of now, while it serves (the store says if it cannot)."""
        if self._closing:
            raise ShuttingDown("mqd is shutting down; back it up once it is back.")
        backup = await self.store.backup(self.clock)
        log.info("backup taken: %s up to id %d", counted(backup.messages, "message"), backup.highest_id)
        return backup

    async def purge(self, name: str) -> int:
        removed = await self._on_queue(name, lambda queue: self.store.purge(queue.id))
        log.info("queue '%s' purged (%s)", name, counted(removed, "message"))
        return removed

    async def redrive(self, name: str) -> dict[str, int]:
        moves = await self._on_queue(name, lambda queue: self.store.redrive(queue.id, self.clock()))
        for destination, count in moves:
            self._lines.notify(destination.id, count)
        return {destination.name: count for destination, count in moves}

    # -- messages --------------------------------------------------------------------------------

    async def send(self, name: str, messages: Sequence[NewMessage]) -> SendResult:
        if self._closing:
            raise ShuttingDown("mqd is shutting down; send again once it is back.")
        now = self.clock()

        async def send(queue: Queue) -> tuple[Queue, SendResult]:
            settings = queue.settings
            result = await self.store.send(
                queue.id,
                self._with_ttl(queue, messages),
                now,
                settings.dedup_window,
                settings.limit,
                queue.dead_letter_queue_id,
            )
            return queue, result

        try:
            queue, result = await self._on_queue(name, send)
        except QueueFull as full:
            self.counters_for(full.name).refused += 1
            raise
        except asyncio.CancelledError:
            # The sender left while the store committed: the messages are stored all the same,
            # but their result is lost to us (not counted). Waiting receivers look again once
            # the commit has surely ended (shielding every send instead would cost W2 a tenth).
            known = self._queues.get(name)
            if known is not None:
                self._lines.wake_at(known.id, self.clock() + ABANDONED_SEND_LOOK_AGAIN_SECONDS)
            raise
        self._count_sent(name, queue, messages, now, result)
        return result

    def _count_sent(
        self, name: str, queue: Queue, messages: Sequence[NewMessage], now: float, result: SendResult
    ) -> None:
        self.counters_for(name).sent += result.duplicates.count(False)
        if result.dropped:
            self._removed(name, queue, result.dropped, dropped=True)
        if result.ready:
            self._lines.notify(queue.id, result.ready)
        delays = [
            m.delay for m, dup in zip(messages, result.duplicates, strict=True) if m.delay > 0 and not dup
        ]
        if delays:
            self._lines.note_hidden(queue.id, now + min(delays))

    @staticmethod
    def _with_ttl(queue: Queue, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        """The messages as the queue keeps them: its message_ttl for those sent without a ttl."""
        ttl = queue.settings.message_ttl
        if ttl is None or all(m.ttl is not None for m in messages):
            return messages
        return [m if m.ttl is not None else m._replace(ttl=ttl) for m in messages]

    # -- exchanges: one send, a copy in each queue bound -----------------------------------------

    async def bind(self, exchange: str, queues: Sequence[str]) -> bool:
        """Make ``exchange`` deliver into exactly ``queues``; whether it is new."""
        bound = [await self.queue(name) for name in dict.fromkeys(queues)]
        try:
            created = await self.store.bind(exchange, [queue.id for queue in bound])
        except QueueGone as gone:
            name = next(queue.name for queue in bound if queue.id == gone.queue_id)
            self._queues.pop(name, None)
            raise QueueNotFound(name) from None
        log.info("exchange '%s' bound to %s", exchange, ", ".join(q.name for q in bound))
        return created

    async def unbind(self, exchange: str) -> None:
        if not await self.store.unbind(exchange):
            raise ExchangeNotFound(exchange)
        log.info("exchange '%s' deleted", exchange)

    async def exchanges(self) -> dict[str, list[str]]:
        return {name: [q.name for q in bound] for name, bound in (await self.store.exchanges()).items()}

    async def publish(self, exchange: str, messages: Sequence[NewMessage]) -> dict[str, SendResult]:
        """Send ``messages`` into every queue ``exchange`` is bound to, in one commit: each copy
        with its own id and its own life there, or none at all if one queue refuses them."""
        if self._closing:
            raise ShuttingDown("mqd is shutting down; send again once it is back.")
        bound = (await self.store.exchanges()).get(exchange)
        if not bound:
            raise ExchangeNotFound(exchange)
        now = self.clock()
        sends = [
            (
                queue.id,
                self._with_ttl(queue, messages),
                now,
                queue.settings.dedup_window,
                queue.settings.limit,
                queue.dead_letter_queue_id,
            )
            for queue in bound
        ]
        publishing = asyncio.ensure_future(self.store.fan_out(sends))
        publishing.add_done_callback(functools.partial(self._published, bound, messages, now))
        try:
            results = await asyncio.shield(publishing)
        except QueueGone as gone:  # deleted meanwhile (its bindings went with it): nothing stored
            raise QueueNotFound(next(q.name for q in bound if q.id == gone.queue_id)) from None
        return {queue.name: result for queue, result in zip(bound, results, strict=True)}

    def _published(self, bound: list[Queue], messages, now: float, publishing: asyncio.Future) -> None:
        if publishing.cancelled():
            return
        if publishing.exception() is not None:
            refused = publishing.exception()
            if isinstance(refused, QueueFull):
                self.counters_for(refused.name).refused += 1
            return
        for queue, result in zip(bound, publishing.result(), strict=True):
            self._count_sent(queue.name, queue, messages, now, result)

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
        look at the store, a waiting receiver leaves its line as soon as its caller is cancelled,
        and messages taken for one cancelled while the store took them are put back (see
        ``give_back``)."""
        queue = await self.queue(name)
        if wait <= 0 or self._closing:
            return await self._take(name, queue, count, lease, still_there)
        line = self._lines.enter(queue.id)
        try:
            return await self._wait_and_take(name, queue, line, count, lease, wait, still_there)
        finally:
            self._lines.exit(queue.id, line)

    async def export(self, after: int, count: int) -> tuple[list[ExportedMessage], int | None]:
        """Up to ``count`` messages with ids above ``after``, of every queue, in every state, and
        the ``after`` of the next page (None after the last)."""
        messages = await self.store.export(after, count)
        return messages, (messages[-1].id if len(messages) == count else None)

    async def import_messages(self, source: str, messages: Sequence[ExportedMessage]) -> int:
        """Store exported messages again as they were (attempts; delays, and leases as delays
        until their end; dead letters with the queue they came from, if it is here), each under
        a new id, all or nothing. Those ``source`` has stored in their queue already are
        skipped: how many were stored. Every queue must exist (mqctl import declares them)."""
        if self._closing:
            raise ShuttingDown("mqd is shutting down; import again once it is back.")
        now = self.clock()
        queue_ids = {}
        for name in {m.queue for m in messages}:
            queue_ids[name] = (await self.queue(name)).id
        for origin in {m.dead_letter_source for m in messages} - {None, *queue_ids}:
            found = await self.store.find_queue(origin)
            if found is not None:
                queue_ids[origin] = found.id
        try:
            stored = await self.store.import_messages(source, messages, queue_ids)
        except QueueGone as gone:  # deleted meanwhile, perhaps on another node: nothing was stored
            name = next(name for name, queue_id in queue_ids.items() if queue_id == gone.queue_id)
            self._queues.pop(name, None)
            raise QueueNotFound(name) from None
        for name, count in stored.items():
            self.counters_for(name).sent += count
            self._lines.notify(queue_ids[name], count)
            hidden = [m.visible_at for m in messages if m.queue == name and m.visible_at > now]
            if hidden:
                self._lines.note_hidden(queue_ids[name], min(hidden))
        total = sum(stored.values())
        log.info("%s imported from %s", counted(total, "message"), source)
        return total

    async def peek(self, name: str, count: int) -> list[Delivery]:
        queue = await self.queue(name)
        return await self.store.peek(queue.id, count, self.clock())

    async def ack(self, name: str, receipt: str) -> None:
        message_id, token = self._receipt(receipt)

        async def ack(queue: Queue) -> tuple[Queue, Settled]:
            capped = queue.settings.max_in_flight is not None
            return queue, await self.store.ack(queue.id, message_id, token, self.clock(), announce=capped)

        queue, settled = await self._on_queue(name, ack)
        if not settled.found:
            raise ReceiptNotFound(receipt)
        self.counters_for(name).acked += 1
        if settled.ready or queue.settings.max_in_flight is not None:
            self._lines.notify(queue.id, max(1, settled.ready))  # a group's turn, or a place free

    async def release(self, name: str, receipt: str, delay: float) -> float:
        message_id, token = self._receipt(receipt)
        now = self.clock()
        visible_at = now + delay if delay > 0 else 0.0

        async def release(queue: Queue) -> tuple[Queue, bool]:
            return queue, await self.store.release(queue.id, message_id, token, now, visible_at)

        queue, found = await self._on_queue(name, release)
        if not found:
            raise ReceiptNotFound(receipt)
        self.counters_for(name).released += 1
        if visible_at == 0:
            self._lines.notify(queue.id, 1)
        else:
            self._lines.note_hidden(queue.id, visible_at)
        return visible_at

    async def extend(self, name: str, receipt: str, lease: float) -> float:
        message_id, token = self._receipt(receipt)
        now = self.clock()
        found = await self._on_queue(
            name, lambda q: self.store.extend(q.id, message_id, token, now, now + lease)
        )
        if not found:
            raise ReceiptNotFound(receipt)
        return now + lease

    def _receipt(self, receipt: str) -> tuple[int, str]:
        parsed = parse_receipt(receipt)
        if parsed is None:
            raise ReceiptNotFound(receipt)
        return parsed

    # -- taking, and giving back -----------------------------------------------------------------

    async def _take(
        self, name: str, queue: Queue, count: int, lease: float | None, still_there: Callable[[], bool]
    ) -> list[Delivery]:
        if not still_there():
            return []
        now = self.clock()
        settings = queue.settings
        rule = None
        if settings.max_attempts is not None and queue.dead_letter_queue_id is not None:
            rule = DeadLetterRule(settings.max_attempts, queue.dead_letter_queue_id)
        leasing = None if lease is None else Lease.new(now + lease, count)
        # Once asked, the store takes the messages whatever happens to us: if we are cancelled
        # meanwhile (the receiver's connection closed), they are put back as soon as it has.
        taking = asyncio.ensure_future(self.store.take(queue.id, count, now, leasing, rule, settings.caps))
        try:
            result = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(functools.partial(self._taken_for_nobody, name, queue))
            raise
        except QueueGone:
            self._queues.pop(name, None)
            raise QueueNotFound(name) from None
        return self._taken(name, queue, result)

    def _taken_for_nobody(self, name: str, queue: Queue, taking: asyncio.Future) -> None:
        if taking.cancelled() or taking.exception() is not None:
            return
        self.give_back(name, self._taken(name, queue, taking.result()))

    def _taken(self, name: str, queue: Queue, result: TakeResult) -> list[Delivery]:
        counters = self.counters_for(name)
        if result.deliveries:
            counters.received += len(result.deliveries)
            if result.deliveries[0].lease_expires_at is not None:
                self._lines.note_hidden(queue.id, result.deliveries[0].lease_expires_at)
        counters.expired += result.expired
        if result.dead_lettered:
            counters.dead_lettered += result.dead_lettered
            self._lines.notify(queue.dead_letter_queue_id, result.dead_lettered)
        if result.capped_until is not None:  # max_rate: the line looks again when it allows
            self._lines.wake_at(queue.id, result.capped_until)
        return result.deliveries

    def _removed(self, name: str, queue: Queue, removed: Removed, *, dropped: bool) -> None:
        """Count messages removed by policy, and wake whoever they concern."""
        counters = self.counters_for(name)
        if dropped:
            counters.dropped += removed.count
        else:
            counters.expired += removed.count
        if removed.dead_lettered:
            counters.dead_lettered += removed.dead_lettered
            self._lines.notify(queue.dead_letter_queue_id, removed.dead_lettered)
        if removed.promoted:
            self._lines.notify(queue.id, removed.promoted)

    async def keep_expiring(self) -> None:
        """Remove messages that waited past their ttl, every second, so that counts, limits and
        dead-letter queues see them go in time (a take never delivers one, whatever this does)."""
        while not self._closing:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
            try:
                await self.expire_now()
            except MqError as exc:
                log.warning("could not remove expired messages: %s", exc)

    async def expire_now(self) -> int:
        """One sweep: how many messages expired."""
        now = self.clock()
        expired = 0
        for name in await self.store.expiring(now):
            try:
                queue = await self.queue(name)
                while True:
                    removed = await self.store.expire(
                        queue.id, now, queue.dead_letter_queue_id, EXPIRED_PER_SWEEP
                    )
                    self._removed(name, queue, removed, dropped=False)
                    expired += removed.count
                    if removed.count < EXPIRED_PER_SWEEP or self._closing:
                        break
            except (QueueNotFound, QueueGone):
                self._queues.pop(name, None)  # deleted meanwhile: its messages went with it
        if expired:
            log.info("%s expired", counted(expired, "message"))
        return expired

    def give_back(self, name: str, deliveries: Sequence[Delivery]) -> None:
        """Put back messages whose receiver left before it was told of them (its connection
        closed before the reply was written): ready again at once, the attempt not counted."""
        if deliveries:
            self.track(self._restore(name, list(deliveries)))

    def return_leases(self, leases: Sequence[tuple[str, str]]) -> None:
        """Release leases, given as (queue, receipt), whose holder left (its stream closed): the
        messages are ready again at once, not when the leases run out. They were delivered, so
        the attempt counts. A lease that ended meanwhile is left as it is."""
        if leases:
            self.track(self._release_all(list(leases)))

    def track(self, work: Awaitable[object]) -> None:
        """Run ``work`` (putting messages back) to its end even if its caller is gone; the store
        is closed only after it (``finish_returns``)."""
        task = asyncio.ensure_future(work)
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def finish_returns(self) -> None:
        """Wait for messages being given back (before the store closes)."""
        while self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)

    async def _release_all(self, leases: list[tuple[str, str]]) -> None:
        results = await asyncio.gather(
            *(self.release(name, receipt, 0.0) for name, receipt in leases), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, MqError) and not isinstance(r, ReceiptNotFound)]
        if failed:
            log.warning(
                "could not release %s whose holder left: %s", counted(len(failed), "lease"), failed[0]
            )

    async def _restore(self, name: str, deliveries: list[Delivery]) -> None:
        try:
            queue = await self.queue(name)
            restored = await self.store.restore(queue.id, deliveries)
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
            self._lines.notify(queue.id, restored)

    async def _wait_and_take(
        self,
        name: str,
        queue: Queue,
        line,
        count: int,
        lease: float | None,
        wait: float,
        still_there: Callable[[], bool],
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        me = None  # our place in line, from our first empty look until we leave
        try:
            while True:
                generation = line.generation
                current = await self.queue(name)  # its settings as they are now (a PATCH, on any node)
                if current.id != queue.id:
                    raise QueueNotFound(name)
                deliveries = await self._take(name, current, count, lease, still_there)
                if deliveries:
                    if me is not None:
                        self._lines.leave(line, me)
                        me = None
                    if len(deliveries) == count and line.waiting:
                        self._lines.wake(line, 1)  # there may be more: pass the baton
                    return deliveries
                if self._closing or loop.time() >= deadline or not still_there():
                    return []
                if line.generation != generation:
                    continue  # something arrived while we looked: look again
                if me is None:
                    me = self._lines.take_place(line)
                if not await self._lines.sleep(queue.id, line, me, deadline) or self._closing:
                    return []
        except asyncio.CancelledError:
            if me is not None:
                self._lines.leave(line, me, pass_turn=True)
                me = None
            raise
        finally:
            if me is not None:
                self._lines.leave(line, me)
