"""The storage interface every backend implements: a few atomic primitives, and no policy.

A store keeps queues and messages durably; the broker decides what should happen to them. So
every primitive takes what it needs as arguments: the time (``now``, the broker's clock), the
lease (its expiry and tokens, made by the broker), the dead-letter rule, the dedup window. When
a coroutine here returns, its effect is committed (and, where the store promises it, fsynced).
Writes that arrive together are committed together (group commit); reads never wait for them.

Queues are addressed by their id, which is never reused: a primitive on a queue deleted
meanwhile raises QueueGone, whatever was declared under its name since. "Not found" outcomes that
are the client's business (a stale receipt) are results, not errors, so they never disturb the
other operations committed with them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import NotSupported
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
    Removed,
    SendResult,
    Settled,
    TakeResult,
    Totals,
)


@dataclasses.dataclass(frozen=True)
class Backup:
    """A checked copy of a store, in ``path`` until the caller has sent it and removes it."""

    path: Path
    taken_at: float  # the instant the copy holds the store as of (the start of its read)
    highest_id: int  # the highest message id in it
    messages: int
    size: int
    sha256: str  # hex digest of the file


class StoreListener:
    """What a store tells the layer above about changes it did not make itself (another mqd
    node writing to a shared database): called on the event loop's thread."""

    def messages_ready(self, queue_id: int, count: int) -> None: ...

    def message_due(self, queue_id: int, visible_at: float) -> None: ...

    def queue_changed(self, name: str) -> None: ...  # declared or deleted


class Store(abc.ABC):
    """Durable queues. Every method is one atomic step; errors come from ``mqd.errors``."""

    kind: str  # "sqlite" or "postgresql"

    @abc.abstractmethod
    def location(self) -> str:
        """Where the data is, to show people: a directory, or a URL without its password."""

    def failure(self) -> str | None:
        """Why the store refuses all work since a fault it cannot recover from, if it does."""
        return None

    def set_listener(self, listener: StoreListener) -> None:
        """Report changes made by others to ``listener``. A store that is the only writer of its
        data (SQLite) has nothing to report and may ignore it."""
        return None

    def observe_commits(self, observer: Callable[[float, int], None]) -> None:
        """Call ``observer(seconds, operations)`` after each commit, for metrics (may be called
        from another thread)."""
        return None

    @abc.abstractmethod
    async def open(self) -> None:
        """Recover and check the stored data; raise DataCorrupt rather than repair silently."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending operations and release the data."""

    # -- the catalogue ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_queue(self, name: str, settings: QueueSettings, now: float) -> tuple[Queue, bool]:
        """Declare a queue: (it, True) if created; (the queue as it exists, False) if the name is
        taken, whatever its settings. QueueNotFound (of the dead-letter queue) if the settings
        name one that does not exist."""

    @abc.abstractmethod
    async def update_queue(self, queue_id: int, changes: dict) -> Queue:
        """Change some of a queue's settings, as they are when the change is made (``settings.
        changed``: QueueConflict if the result does not hold together); QueueNotFound (of the
        dead-letter queue) if it names one that does not exist, QueueGone if the queue is."""

    @abc.abstractmethod
    async def delete_queue(self, queue_id: int) -> None:
        """Remove a queue and its messages; DeadLetterQueueInUse if others dead-letter into it."""

    @abc.abstractmethod
    async def find_queue(self, name: str) -> Queue | None:
        """The queue of that name, or None."""

    # -- exchanges: one send, a copy in each queue bound ---------------------------------------

    @abc.abstractmethod
    async def bind(self, exchange: str, queue_ids: Sequence[int]) -> bool:
        """Make ``exchange`` deliver into exactly these queues; whether it is new. QueueGone if
        one of them is."""

    @abc.abstractmethod
    async def unbind(self, exchange: str) -> bool:
        """Remove an exchange (its queues stay); whether it existed."""

    @abc.abstractmethod
    async def exchanges(self) -> dict[str, list[Queue]]:
        """Every exchange and the queues it is bound to, by name (a read)."""

    @abc.abstractmethod
    async def fan_out(self, sends: Sequence[tuple]) -> list[SendResult]:
        """Several sends, each ``(queue_id, messages, now, dedup_window, limit, dead-letter
        queue id)`` as ``send`` takes them, committed together or not at all: the first refusal
        (QueueFull, QueueGone) is raised and nothing is stored."""

    # -- messages (writes) ------------------------------------------------------------------------

    @abc.abstractmethod
    async def send(
        self,
        queue_id: int,
        messages: Sequence[NewMessage],
        now: float,
        dedup_window: float,
        limit: Limit | None = None,
        dead_letter_queue_id: int | None = None,
    ) -> SendResult:
        """Append messages, all or nothing, in the given order. A message whose idempotency key
        was stored less than ``dedup_window`` seconds ago is not stored again: it gets the id of
        the first. A message with a ``ttl`` expires that many seconds after it becomes visible;
        one of a group that has a message already waits its turn (held). With a ``limit``, a
        send it cannot fit raises QueueFull, unless the limit drops the queue's head to make
        room (to ``dead_letter_queue_id`` if given)."""

    @abc.abstractmethod
    async def take(
        self,
        queue_id: int,
        count: int,
        now: float,
        lease: Lease | None,
        dead_letter: DeadLetterRule | None,
        caps: Caps | None = None,
    ) -> TakeResult:
        """Take up to ``count`` ready messages, highest priority first and oldest first within a
        priority (leases and delays that ran out by ``now`` count as ready, in their original
        place). Without a lease they are removed (at most once); with one they stay, hidden
        until its expiry, the i-th with its i-th token (at least once). A message that has used
        up ``dead_letter.max_attempts`` moves to that queue instead of being delivered; one past
        its expiry is removed (to that queue if there is a rule). ``caps`` bound how many may go:
        leased at once, and per second (a token bucket the store keeps, across nodes)."""

    @abc.abstractmethod
    async def expiring(self, now: float) -> list[str]:
        """The names of the queues that have messages waiting past their expiry (a read)."""

    @abc.abstractmethod
    async def expire(
        self, queue_id: int, now: float, dead_letter_queue_id: int | None, limit: int
    ) -> Removed:
        """Remove up to ``limit`` messages of the queue waiting past their expiry (never leased
        ones): to ``dead_letter_queue_id`` if given, else deleted."""

    @abc.abstractmethod
    async def ack(
        self, queue_id: int, message_id: int, token: str, now: float, announce: bool = False
    ) -> Settled:
        """Remove a leased message (the next of its group gets its turn); not found unless this
        lease is still current. ``announce``: tell other nodes that a lease ended (their
        receivers may be waiting for a place under max_in_flight)."""

    @abc.abstractmethod
    async def release(
        self, queue_id: int, message_id: int, token: str, now: float, visible_at: float
    ) -> bool:
        """End a current lease: the message is ready at ``visible_at`` (0: now); False if stale."""

    @abc.abstractmethod
    async def extend(self, queue_id: int, message_id: int, token: str, now: float, expires_at: float) -> bool:
        """Make a current lease end at ``expires_at``; False if it is stale."""

    @abc.abstractmethod
    async def restore(self, queue_id: int, deliveries: Sequence[Delivery]) -> int:
        """Undo a take whose receiver left before it was told: leased messages whose lease is
        still the one handed out are ready again at once, removed ones are stored again under
        their own ids (so they keep their place in line), and neither counts the attempt. How
        many were put back; none if the queue is gone."""

    @abc.abstractmethod
    async def purge(self, queue_id: int) -> int:
        """Remove every message of the queue; how many."""

    @abc.abstractmethod
    async def redrive(self, queue_id: int, now: float) -> list[tuple[Queue, int]]:
        """Move dead letters back to the queues they came from: (destination, how many) each.
        ``queue_id`` may be a dead-letter queue (all its dead letters go home) or a source queue
        (its dead letters come back); leased dead letters stay until their lease ends."""

    # -- reads: never queued behind writes --------------------------------------------------------

    @abc.abstractmethod
    async def stats(self, now: float, queue_id: int | None = None) -> list[QueueStats]:
        """Every queue's counts (or one queue's: [] if it is gone), by name; without counting
        rows that are ready, however many."""

    @abc.abstractmethod
    async def totals(self) -> Totals:
        """How many queues and messages, in time that does not grow with either."""

    @abc.abstractmethod
    async def peek(self, queue_id: int, count: int, now: float) -> list[Delivery]:
        """The next ready messages, left as they are."""

    @abc.abstractmethod
    async def export(self, after: int, count: int) -> list[ExportedMessage]:
        """Up to ``count`` messages with ids above ``after``, by id, of every queue and in every
        state (a read: never queued behind writes)."""

    @abc.abstractmethod
    async def import_messages(
        self, source: str, messages: Sequence[ExportedMessage], queue_ids: dict[str, int]
    ) -> dict[str, int]:
        """Store exported messages as they were, each under a new id, all or nothing; skip
        those whose ids ``source`` has stored in their queue already (an import repeated or
        resumed). ``queue_ids``: the ids here of the queues named (a dead letter's origin may be
        missing: it is then no dead letter). How many were stored, by queue; QueueGone if a
        queue was deleted meanwhile."""

    async def backup(self, clock: Clock) -> Backup:
        """A checked copy of the whole store, made while it serves, in a file the caller removes
        once it has sent it; as of ``clock()`` read when the copy starts. A store kept by a
        database server is backed up with that server's own tools instead."""
        raise NotSupported(
            f"This mqd keeps its queues in {self.kind}: back them up with {self.kind}'s own tools "
            "(pg_dump; see docs/backups.md)."
        )

    @abc.abstractmethod
    async def next_visible_at(self, queue_id: int) -> float | None:
        """When the earliest hidden message of the queue becomes visible, if any is hidden."""
