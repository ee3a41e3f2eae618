"""The storage interface every backend implements, and the values that cross it.

A store keeps queues and their messages durably and makes every operation one atomic step:
when a coroutine here returns, its effect is committed (and, where the store promises it,
fsynced). Message content crosses this boundary as JSON text that the store never parses, so
the API can splice it into replies without decoding and re-encoding it.

Message states are derived from two columns every backend keeps:
``visible_at == 0`` means ready; ``visible_at > now`` means hidden (leased when a lease token
is set, delayed otherwise); ``0 < visible_at <= now`` is a lease or delay that has run out and
counts as ready again. Receivers take the lowest id among ready messages, so a message whose
lease expires comes back at its original place in the queue.
"""

from __future__ import annotations

import abc
import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from .. import protocol


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """What a queue is declared with; a second declaration must match it exactly."""

    max_attempts: int | None = None
    dead_letter_queue: str | None = None
    dedup_window: float = protocol.DEFAULT_DEDUP_WINDOW_SECONDS


@dataclasses.dataclass(frozen=True)
class Queue:
    name: str
    created_at: float
    settings: QueueSettings


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """A queue and its counters at one moment (``messages`` counts every state)."""

    queue: Queue
    messages: int
    ready: int
    leased: int
    delayed: int
    dead_lettered: int  # messages of this queue now waiting in its dead-letter queue
    oldest_ready_at: float | None


def content_checksum(content: str) -> int:
    """CRC-32 of a message's JSON text, stored beside it so a read can tell rot from content.
    ``surrogatepass`` because JSON may carry lone surrogates (``"\\ud800"``) that strict UTF-8
    refuses."""
    return zlib.crc32(content.encode("utf-8", "surrogatepass"))


class NewMessage(NamedTuple):
    """A message to send (a named tuple: batches create a thousand of these per request)."""

    content: str  # JSON text
    delay: float = 0.0
    key: str | None = None  # idempotency key


@dataclasses.dataclass(frozen=True)
class SendResult:
    ids: list[int]
    duplicates: list[bool]  # per message: True when its key matched an earlier send
    ready: int  # how many of them are ready now (for waking receivers)


@dataclasses.dataclass(frozen=True)
class Delivery:
    id: int
    content: str  # JSON text
    attempts: int
    enqueued_at: float
    receipt: str | None = None  # set when leased
    lease_expires_at: float | None = None
    visible_at: float | None = None  # for peek: when a hidden message becomes visible
    dead_letter_source: str | None = None  # removed from a dead-letter queue: where it came from


@dataclasses.dataclass(frozen=True)
class ReceiveResult:
    deliveries: list[Delivery]
    dead_lettered: dict[str, int]  # dead-letter queue name -> messages moved there on the way


@dataclasses.dataclass(frozen=True)
class Totals:
    queues: int
    messages: int


class StoreListener(Protocol):
    """What a store tells the layer above about changes it did not make itself (another mqd
    node writing to a shared database): called on the event loop's thread."""

    def messages_ready(self, queue: str, count: int) -> None: ...

    def message_due(self, queue: str, visible_at: float) -> None: ...


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
        """Call ``observer(seconds, operations)`` after each commit, for metrics (may be
        called from another thread). Stores that do not batch may ignore it."""
        return None

    @abc.abstractmethod
    async def open(self) -> None:
        """Recover and check the stored data; raise DataCorrupt rather than repair silently."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending operations and release the data."""

    @abc.abstractmethod
    async def create_queue(self, name: str, settings: QueueSettings) -> tuple[Queue, bool]:
        """Declare a queue; returns it and whether it was created (False: it existed as is)."""

    @abc.abstractmethod
    async def delete_queue(self, name: str) -> None: ...

    @abc.abstractmethod
    async def get_queue(self, name: str) -> Queue: ...

    @abc.abstractmethod
    async def queue_stats(self, name: str) -> QueueStats: ...

    @abc.abstractmethod
    async def list_queues(self) -> list[QueueStats]: ...

    @abc.abstractmethod
    async def totals(self) -> Totals: ...

    @abc.abstractmethod
    async def send(self, name: str, messages: Sequence[NewMessage]) -> SendResult:
        """Append messages, all or nothing, in the given order."""

    @abc.abstractmethod
    async def receive(self, name: str, count: int, lease: float | None) -> ReceiveResult:
        """Take up to ``count`` ready messages, oldest first.

        Without a lease they are removed (at most once); with one they stay, hidden for
        ``lease`` seconds, each with a fresh receipt (at least once). A message that has used up
        its queue's ``max_attempts`` moves to the dead-letter queue instead of being delivered.
        """

    @abc.abstractmethod
    async def restore(self, name: str, deliveries: Sequence[Delivery]) -> int:
        """Undo a receive whose receiver left before it was told (its connection closed): leased
        messages whose lease is still the one handed out are ready again at once, removed ones are
        stored again under their own ids (so they keep their place in line), and neither counts
        the attempt. Returns how many were put back; a queue deleted meanwhile takes none."""

    @abc.abstractmethod
    async def peek(self, name: str, count: int) -> list[Delivery]:
        """The next ready messages, left as they are."""

    @abc.abstractmethod
    async def ack(self, name: str, receipt: str) -> None:
        """Remove a leased message; ReceiptNotFound unless this lease is still current."""

    @abc.abstractmethod
    async def release(self, name: str, receipt: str, delay: float) -> float:
        """End a lease early; the message is ready again after ``delay``; returns visible_at."""

    @abc.abstractmethod
    async def extend(self, name: str, receipt: str, lease: float) -> float:
        """Make a current lease end ``lease`` seconds from now; returns the new expiry."""

    @abc.abstractmethod
    async def purge(self, name: str) -> int:
        """Remove every message of the queue; returns how many."""

    @abc.abstractmethod
    async def redrive(self, name: str) -> dict[str, int]:
        """Move dead letters back to the queues they came from; returns moved counts by queue.

        ``name`` may be a dead-letter queue (all its dead letters go home) or a source queue
        (its dead letters come back from its dead-letter queue).
        """

    @abc.abstractmethod
    async def next_visible_at(self, name: str) -> float | None:
        """When the earliest hidden message of the queue becomes visible, if any is hidden."""
