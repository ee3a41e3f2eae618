"""The values of the queue model, shared by the broker and the stores (no I/O here).

A message's state lives in two fields every store keeps: ``visible_at`` (0: ready; in the future:
hidden, leased when it has a lease token, delayed otherwise; in the past: a lease or delay that
has run out, ready again in its original place) and ``lease_token``. Content is the JSON text the
client wrote (see jsontext.py): a store never parses it.

Receipts and lease tokens are made and read here only, so every store hands out the same kind.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import protocol
from .errors import InvalidArgument, QueueConflict

Clock = Callable[[], float]  # seconds since the epoch; the broker's, passed to the stores as `now`

LEASE_TOKEN_BYTES = 8
OVERFLOW_REJECT = "reject"
OVERFLOW_DROP_OLDEST = "drop_oldest"
OVERFLOWS = (OVERFLOW_REJECT, OVERFLOW_DROP_OLDEST)


def held(visible_at: float) -> float:
    """The ``visible_at`` of a message held behind the head of its group: below zero, so it is
    neither ready (0) nor hidden (> 0), and its own visibility recoverable (``unheld``)."""
    return -visible_at - 1.0


def unheld(visible_at: float) -> float:
    """A held message's own ``visible_at`` once its turn comes (0: ready at once)."""
    return -visible_at - 1.0


def content_bytes(content: str) -> int:
    """The size of a message's JSON text in UTF-8, as max_bytes counts it."""
    return len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))


@dataclasses.dataclass(frozen=True)
class Limit:
    """A bounded queue: at most ``max_messages`` messages and ``max_bytes`` bytes of content (in
    every state); a send beyond them is refused, or, with ``drop_oldest``, makes room by removing
    the queue's head (to the dead-letter queue if it has one)."""

    max_messages: int | None
    max_bytes: int | None
    drop_oldest: bool

    def describe(self) -> str:
        limits = [f"max_messages {self.max_messages}"] if self.max_messages is not None else []
        limits += [f"max_bytes {self.max_bytes}"] if self.max_bytes is not None else []
        return " and ".join(limits)

    def excess(self, messages: int, size: int) -> tuple[int, int]:
        """(messages, bytes) over the limit for a queue holding ``messages`` of ``size`` bytes."""
        over_messages = max(0, messages - self.max_messages) if self.max_messages is not None else 0
        over_bytes = max(0, size - self.max_bytes) if self.max_bytes is not None else 0
        return over_messages, over_bytes

    def admits(self, count: int, size: int) -> bool:
        """Whether a send of ``count`` messages and ``size`` bytes fits an empty queue at all."""
        return self.excess(count, size) == (0, 0)


@dataclasses.dataclass(frozen=True)
class Caps:
    """How fast a queue's messages may go out: at most ``max_in_flight`` leased at once, and at
    most ``max_rate`` deliveries per second (a token bucket, ``Bucket``)."""

    max_in_flight: int | None
    max_rate: float | None


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A token bucket for ``max_rate``: ``tokens`` as of ``at``. It holds at most a tenth of a
    second's worth (and at least one), so a receiver that was idle gets a short burst, not a
    second's worth: over any second, deliveries stay within a tenth of the rate."""

    tokens: float
    at: float

    @staticmethod
    def capacity(rate: float) -> float:
        return max(1.0, rate / 10)

    @classmethod
    def full(cls, rate: float, now: float) -> Bucket:
        return cls(cls.capacity(rate), now)

    def refilled(self, rate: float, now: float) -> Bucket:
        """The bucket at ``now``, topped up at ``rate`` since ``at`` (never beyond capacity)."""
        elapsed = max(0.0, now - self.at)
        return Bucket(min(self.capacity(rate), self.tokens + elapsed * rate), max(now, self.at))

    @property
    def whole(self) -> int:
        """Deliveries it allows now."""
        return max(0, int(self.tokens + 1e-9))

    def spend(self, deliveries: int) -> Bucket:
        return Bucket(self.tokens - deliveries, self.at)

    def next_token_at(self, rate: float, wanted: int = 1) -> float:
        """When ``wanted`` deliveries may go (as many as the bucket holds at most): a receiver
        that asked for many is woken once a batch of them can go, not for every token, so a
        capped queue answers a few full replies a second rather than many of one message."""
        enough = min(float(wanted), self.capacity(rate))
        return self.at + max(0.0, enough - self.tokens) / rate


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """What a queue is declared with; a second declaration must match it exactly. Each field's
    type and range are checked where a request is parsed (contract.py); the rules between fields
    are checked here, once."""

    max_attempts: int | None = None
    dead_letter_queue: str | None = None
    dedup_window: float = protocol.DEFAULT_DEDUP_WINDOW_SECONDS
    # The policies (docs/policies.md); None: no such limit.
    message_ttl: float | None = None  # the ttl of a message sent without one
    max_messages: int | None = None
    max_bytes: int | None = None
    overflow: str = OVERFLOW_REJECT  # what a send beyond max_messages or max_bytes does
    max_in_flight: int | None = None  # messages leased at once
    max_rate: float | None = None  # deliveries per second

    def __post_init__(self) -> None:
        if (self.max_attempts is None) != (self.dead_letter_queue is None):
            raise InvalidArgument(
                "max_attempts and dead_letter_queue go together: exhausted messages are moved to "
                "the dead-letter queue, never dropped."
            )
        if self.overflow not in OVERFLOWS:
            raise InvalidArgument(f"'overflow' must be one of {', '.join(OVERFLOWS)}, not {self.overflow!r}.")

    def changed(self, name: str, changes: dict) -> QueueSettings:
        """These settings with ``changes`` made, for the queue ``name``; QueueConflict if the
        result does not hold together (the rules between fields, checked again)."""
        try:
            settings = dataclasses.replace(self, **changes)
        except InvalidArgument as exc:
            raise QueueConflict(str(exc)) from None
        if settings.dead_letter_queue == name:
            raise QueueConflict("A queue cannot be its own dead-letter queue.")
        return settings

    def stored(self) -> tuple:
        """The settings as the stores keep them, in ``STORED_SETTINGS``' order (the dead-letter
        queue is kept as an id, by the store)."""
        return tuple(getattr(self, name) for name in STORED_SETTINGS)

    @property
    def limit(self) -> Limit | None:
        """What a send must fit within, if the queue is bounded."""
        if self.max_messages is None and self.max_bytes is None:
            return None
        return Limit(self.max_messages, self.max_bytes, self.overflow == OVERFLOW_DROP_OLDEST)

    @property
    def caps(self) -> Caps | None:
        """What a take must stay within, if the queue's deliveries are capped."""
        if self.max_in_flight is None and self.max_rate is None:
            return None
        return Caps(self.max_in_flight, self.max_rate)

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))


# The settings' columns, in both stores' tables.
STORED_SETTINGS = (
    "max_attempts",
    "dedup_window",
    "message_ttl",
    "max_messages",
    "max_bytes",
    "overflow",
    "max_in_flight",
    "max_rate",
)


@dataclasses.dataclass(frozen=True)
class Queue:
    """A queue as a store keeps it. ``id`` is never reused, so an operation on a queue that was
    deleted (and perhaps declared again) meanwhile is noticed rather than applied to another."""

    id: int
    name: str
    created_at: float
    settings: QueueSettings
    dead_letter_queue_id: int | None = None


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """A queue and its counts at one moment (``messages`` counts every state)."""

    queue: Queue
    messages: int
    ready: int
    leased: int
    delayed: int
    dead_lettered: int  # messages of this queue now waiting in its dead-letter queue
    oldest_ready_at: float | None
    bytes: int = 0  # of content, in every state (what max_bytes counts)


@dataclasses.dataclass(frozen=True)
class Totals:
    queues: int
    messages: int


class NewMessage(NamedTuple):
    """A message to send (a named tuple: batches create a thousand of these per request)."""

    content: str  # JSON text
    delay: float = 0.0
    key: str | None = None  # idempotency key
    priority: int = 0  # 0-9: higher first
    group: str | None = None  # delivered in order, one leased at a time
    ttl: float | None = None  # seconds it may wait once visible (the broker puts the queue's in)

    def times(self, now: float) -> tuple[float, float | None]:
        """(visible_at, expires_at) of the message sent at ``now``: its ttl counts from when it
        becomes visible, after its delay."""
        visible_at = now + self.delay if self.delay > 0 else 0.0
        expires_at = now + max(0.0, self.delay) + self.ttl if self.ttl is not None else None
        return visible_at, expires_at

    @property
    def plain(self) -> bool:
        """Nothing but content: the common case, stored in one sweep."""
        return (
            self.delay <= 0
            and self.key is None
            and self.group is None
            and self.ttl is None
            and not self.priority
        )


class ExportedMessage(NamedTuple):
    """A message as it leaves one store (export) and arrives at another (import): every state is
    in ``visible_at`` (0 ready; later: hidden until then, a lease's end or a delay's), and a dead
    letter names the queue it came from."""

    queue: str
    id: int  # in the store it was exported from
    content: str  # JSON text
    attempts: int
    enqueued_at: float
    visible_at: float  # 0: ready (or waiting its group's turn); later: hidden until then
    dead_letter_source: str | None = None
    priority: int = 0
    group: str | None = None
    expires_at: float | None = None


def new_in_import(
    messages: Sequence[ExportedMessage], queue_ids: dict[str, int], done: dict[int, int]
) -> tuple[list[ExportedMessage], dict[int, int]]:
    """Which messages of an import to store, given ``done`` (queue id: the last exported id its
    source stored there): those with higher ids, in the order of their ids, each id once; and
    ``done`` after them."""
    kept = []
    done = dict(done)
    for message in sorted(messages, key=lambda m: m.id):
        queue_id = queue_ids[message.queue]
        if message.id > done.get(queue_id, 0):
            kept.append(message)
            done[queue_id] = message.id
    return kept, done


@dataclasses.dataclass(frozen=True)
class SendResult:
    ids: list[int]
    duplicates: list[bool]  # per message: True when its key matched an earlier send
    ready: int  # how many of them are ready now (for waking receivers)
    dropped: Removed | None = None  # the oldest messages that made room (overflow drop_oldest)


@dataclasses.dataclass(frozen=True)
class Lease:
    """How messages taken are leased: until ``expires_at``, the i-th taken with ``tokens[i]``."""

    expires_at: float
    tokens: list[str]

    @classmethod
    def new(cls, expires_at: float, count: int) -> Lease:
        raw = secrets.token_bytes(LEASE_TOKEN_BYTES * count).hex()
        width = 2 * LEASE_TOKEN_BYTES
        return cls(expires_at, [raw[i : i + width] for i in range(0, len(raw), width)])


@dataclasses.dataclass(frozen=True)
class DeadLetterRule:
    """A message that has been delivered ``max_attempts`` times goes to queue ``queue_id``
    instead of being delivered again."""

    max_attempts: int
    queue_id: int


@dataclasses.dataclass(frozen=True)
class Delivery:
    id: int
    content: str  # JSON text
    attempts: int
    enqueued_at: float
    lease_token: str | None = None  # set when leased
    lease_expires_at: float | None = None
    dead_letter_source_id: int | None = None  # a dead letter removed: the queue it came from
    priority: int = 0
    group: str | None = None
    expires_at: float | None = None  # (kept so that a message put back expires as it would have)

    @property
    def receipt(self) -> str | None:
        return None if self.lease_token is None else f"{self.id}.{self.lease_token}"


@dataclasses.dataclass(frozen=True)
class TakeResult:
    deliveries: list[Delivery]
    dead_lettered: int  # messages moved to the dead-letter queue on the way (expired ones too)
    expired: int = 0  # messages that waited past their ttl, found on the way
    capped_until: float | None = None  # fewer than asked for by max_rate: when the next may go


class Settled(NamedTuple):
    """What an ack did: whether the lease was current, and how many messages it made ready (the
    next of the message's group)."""

    found: bool
    ready: int = 0


@dataclasses.dataclass(frozen=True)
class Removed:
    """Messages a store removed by policy (expired, or dropped to make room): how many, how many
    of them went to the dead-letter queue, and the queues whose groups it moved on."""

    count: int = 0
    dead_lettered: int = 0
    promoted: int = 0  # group messages whose turn came


_RECEIPT = re.compile(r"([1-9][0-9]{0,17})\.([0-9a-f]{1,64})")  # "<message id>.<lease token>"


def parse_receipt(text: str) -> tuple[int, str] | None:
    """(message id, lease token), or None for anything that cannot be a receipt mqd handed out."""
    found = _RECEIPT.fullmatch(text)
    return None if found is None else (int(found.group(1)), found.group(2))


def content_checksum(content: str) -> int:
    """CRC-32 of a message's JSON text, stored beside it so a read can tell rot from content."""
    return zlib.crc32(content.encode("utf-8", "surrogatepass"))
