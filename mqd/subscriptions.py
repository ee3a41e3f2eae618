"""A stream's subscriptions: messages pushed to a client as they arrive, as many as it has
granted credit for, and the leases it holds.

A subscription is a receiver that never leaves the queue's line while it has credit: it waits
(broker.receive, the long-poll's machinery, so it wakes on a send, a release or a lease running
out, on any node) and takes up to its credit at a time. Credit is the client's flow control (an
AMQP 1.0 link's, a JetStream pull consumer's batch): mqd never delivers more than granted, so a
slow consumer costs it nothing but the messages already written to its socket. Leased messages a
stream holds are bounded too (MAX_HELD): beyond, its subscriptions wait for acks.

What a stream held when it closes is given back at once: messages taken but not yet written are
put back as if never taken, leases are released (the delivery counts: it was written).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from . import protocol
from .broker import Broker
from .errors import InvalidArgument, MqError, QueueNotFound, ReceiptNotFound, TooManyWaiters
from .model import Delivery

log = logging.getLogger("mqd.streams")

WAIT_SECONDS = 3600.0  # one long-poll of a subscription; it waits again when it runs out
RETRY_SECONDS = 1.0  # after the store or the waiter cap refused a subscription's receive


class Held:
    """The leases a stream holds: receipt -> queue, in delivery order."""

    def __init__(self) -> None:
        self.leases: dict[str, str] = {}
        self.room = asyncio.Event()
        self.room.set()

    def add(self, queue: str, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self.leases[delivery.receipt] = queue
        if len(self.leases) >= protocol.MAX_HELD:
            self.room.clear()

    def queue_of(self, receipt: str) -> str:
        queue = self.leases.get(receipt)
        if queue is None:
            raise ReceiptNotFound(receipt)
        return queue

    def drop(self, receipt: str) -> None:
        self.leases.pop(receipt, None)
        if len(self.leases) < protocol.MAX_HELD:
            self.room.set()

    def free(self) -> int:
        return protocol.MAX_HELD - len(self.leases)

    def take_all(self) -> list[tuple[str, str]]:
        leases = [(queue, receipt) for receipt, queue in self.leases.items()]
        self.leases.clear()
        return leases


class Subscription:
    """One subscription: ``deliver(subscription, deliveries)`` writes its deliveries to the
    stream (and gives them back if it cannot); ``ended(subscription, error)`` tells the client
    when mqd ends it."""

    def __init__(
        self,
        number: int,
        queue: str,
        lease: float | None,
        broker: Broker,
        held: Held,
        still_there: Callable[[], bool],
        deliver: Callable[[Subscription, list[Delivery]], Awaitable[None]],
        ended: Callable[[Subscription, MqError], Awaitable[None]],
    ) -> None:
        self.number = number
        self.queue = queue
        self.lease = lease
        self.credit = 0
        self._broker = broker
        self._held = held
        self._still_there = still_there
        self._deliver = deliver
        self._ended = ended
        self._credited = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def grant(self, credit: int) -> None:
        if self.credit + credit > protocol.MAX_CREDIT:
            raise InvalidArgument(
                f"Subscription {self.number} would be owed {self.credit + credit} messages; at most "
                f"{protocol.MAX_CREDIT}."
            )
        self.credit += credit
        if self.credit:
            self._credited.set()

    async def _run(self) -> None:
        while True:
            await self._credited.wait()
            if self.lease is not None:
                await self._held.room.wait()
            room = self._held.free() if self.lease is not None else protocol.MAX_BATCH
            count = min(self.credit, protocol.MAX_BATCH, room)
            if count <= 0:
                continue
            try:
                deliveries = await self._broker.receive(
                    self.queue,
                    count=count,
                    lease=self.lease,
                    wait=WAIT_SECONDS,
                    still_there=self._still_there,
                )
            except QueueNotFound as exc:
                await self._ended(self, exc)
                return
            except (TooManyWaiters, MqError) as exc:
                log.warning("subscription to '%s' waits %gs: %s", self.queue, RETRY_SECONDS, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not deliveries:
                if self._broker.closing or not self._still_there():
                    return  # mqd is stopping, or the stream closed: nothing more to deliver
                continue
            self.credit -= len(deliveries)
            if self.credit <= 0:
                self._credited.clear()
            if self.lease is not None:
                self._held.add(self.queue, deliveries)
            await self._deliver(self, deliveries)
