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
from .errors import InvalidArgument

Clock = Callable[[], float]  # seconds since the epoch; the broker's, passed to the stores as `now`

LEASE_TOKEN_BYTES = 8


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """What a queue is declared with; a second declaration must match it exactly. Each field's
    type and range are checked where a request is parsed (contract.py); the rules between fields
    are checked here, once."""

    max_attempts: int | None = None
    dead_letter_queue: str | None = None
    dedup_window: float = protocol.DEFAULT_DEDUP_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if (self.max_attempts is None) != (self.dead_letter_queue is None):
            raise InvalidArgument(
                "max_attempts and dead_letter_queue go together: exhausted messages are moved to "
                "the dead-letter queue, never dropped."
            )

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))


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


@dataclasses.dataclass(frozen=True)
class Totals:
    queues: int
    messages: int


class NewMessage(NamedTuple):
    """A message to send (a named tuple: batches create a thousand of these per request)."""

    content: str  # JSON text
    delay: float = 0.0
    key: str | None = None  # idempotency key


class ExportedMessage(NamedTuple):
    """A message as it leaves one store (export) and arrives at another (import): every state is
    in ``visible_at`` (0 ready; later: hidden until then, a lease's end or a delay's), and a dead
    letter names the queue it came from."""

    queue: str
    id: int  # in the store it was exported from
    content: str  # JSON text
    attempts: int
    enqueued_at: float
    visible_at: float
    dead_letter_source: str | None = None


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

    @property
    def receipt(self) -> str | None:
        return None if self.lease_token is None else f"{self.id}.{self.lease_token}"


@dataclasses.dataclass(frozen=True)
class TakeResult:
    deliveries: list[Delivery]
    dead_lettered: int  # messages moved to the dead-letter queue on the way


_RECEIPT = re.compile(r"([1-9][0-9]{0,17})\.([0-9a-f]{1,64})")  # "<message id>.<lease token>"


def parse_receipt(text: str) -> tuple[int, str] | None:
    """(message id, lease token), or None for anything that cannot be a receipt mqd handed out."""
    found = _RECEIPT.fullmatch(text)
    return None if found is None else (int(found.group(1)), found.group(2))


def content_checksum(content: str) -> int:
    """CRC-32 of a message's JSON text, stored beside it so a read can tell rot from content."""
    return zlib.crc32(content.encode("utf-8", "surrogatepass"))
