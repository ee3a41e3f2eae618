"""The HTTP API as data: every route, its parameters and fields with their limits, its replies
and their shapes, and the error codes. One source of truth: parsing.py checks requests with
these definitions, openapi.py writes /openapi.json from them, api.py attaches its handlers to
these routes, and docs/api.md is checked against them by a test.

Limits come from protocol.py, which mqctl shares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from . import protocol
from .errors import InvalidArgument
from .model import OVERFLOWS

SHOWN_CHARACTERS = 40  # of a client's value quoted back in an error
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,30}")
_NUMBER_TEXT = re.compile(r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?(?:[eE][+-]?[0-9]{1,4})?")


def quoted(text: str) -> str:
    """A client's string in an error sentence: quoted, escaped, and cut if long."""
    if len(text) > SHOWN_CHARACTERS:
        text = text[:SHOWN_CHARACTERS] + "…"
    return json.dumps(text, ensure_ascii=True)


def is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def describe(value: Any) -> str:
    """What arrived, for an error sentence: 'the string "3"', 'null', 'a list'."""
    if isinstance(value, str):
        return f"the string {quoted(value)}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if not is_finite(value):
        return "a number out of range"
    return f"{value:g}"


# -- fields and parameters ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Number:
    name: str
    low: float
    high: float
    integer: bool = False
    description: str = ""

    def parse(self, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float) or not is_finite(value):
            raise InvalidArgument(
                f"'{self.name}' must be {self._kind()} from {self.range()}, not {describe(value)}."
            )
        if self.integer and value != int(value):
            raise InvalidArgument(f"'{self.name}' must be a whole number from {self.range()}, not {value:g}.")
        if not self.low <= value <= self.high:
            raise InvalidArgument(f"'{self.name}' must be from {self.range()}, not {value:g}.")
        return int(value) if self.integer else float(value)

    def parse_text(self, text: str) -> float | int:
        """A query parameter's value, written as JSON writes a number: ASCII digits only, no
        spaces, underscores, signs or other scripts' digits (which Python's int() would take)."""
        grammar = _INTEGER_TEXT if self.integer else _NUMBER_TEXT
        try:
            if grammar.fullmatch(text) is None:
                raise ValueError(text)
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise InvalidArgument(
                f"Query parameter '{self.name}' must be {self._kind()} from {self.range()}, "
                f"not {quoted(text)}."
            ) from None
        return self.parse(value)

    def with_high(self, high: float) -> Number:
        return dataclasses.replace(self, high=high)

    def _kind(self) -> str:
        return "a whole number" if self.integer else "a number"

    def range(self) -> str:
        return f"{self.low:g} to {self.high:g}"

    def schema(self) -> dict[str, Any]:
        schema = {"type": "integer" if self.integer else "number", "minimum": self.low, "maximum": self.high}
        return {**schema, "description": self.description} if self.description else schema


@dataclasses.dataclass(frozen=True)
class Name:
    """A queue name."""

    name: str = "name"
    description: str = f"Queue name: {protocol.QUEUE_NAME_RULE}."

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not protocol.is_valid_queue_name(value):
            raise InvalidArgument(
                f"Invalid queue name ({describe(value)}): use {protocol.QUEUE_NAME_RULE}.",
                code="invalid_name",
            )
        return value

    def schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "pattern": f"^{protocol.QUEUE_NAME_PATTERN.pattern}$",
            "description": self.description,
        }


@dataclasses.dataclass(frozen=True)
class Key:
    """An idempotency key: text every store can keep (no lone surrogates, which UTF-8 cannot
    carry, and no NUL, which PostgreSQL's text cannot)."""

    name: str = "key"
    description: str = "Idempotency key: a repeat within the queue's dedup window enqueues nothing."

    def parse(self, value: Any, source: str | None = None) -> str:
        source = source or f"'{self.name}'"
        limit = protocol.MAX_IDEMPOTENCY_KEY_LENGTH
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            raise InvalidArgument(f"{source} must be a string of 1 to {limit} characters.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(f"{source} must be valid Unicode text (it has a lone surrogate).") from None
        if "\0" in value:
            raise InvalidArgument(f"{source} must not contain NUL characters.")
        return value

    def schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": protocol.MAX_IDEMPOTENCY_KEY_LENGTH,
            "pattern": "^[^\\u0000]*$",
            "description": self.description + " Valid Unicode (no lone surrogates), no NUL.",
        }


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few words."""

    name: str
    choices: tuple[str, ...]
    description: str = ""

    def parse(self, value: Any) -> str:
        if value not in self.choices or not isinstance(value, str):
            raise InvalidArgument(
                f"'{self.name}' must be one of {', '.join(self.choices)}, not {describe(value)}."
            )
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices), "description": self.description}


QUEUE_NAME = Name()
DEAD_LETTER_QUEUE = Name("dead_letter_queue", "Where messages go after max_attempts deliveries.")
MAX_ATTEMPTS = Number(
    "max_attempts",
    1,
    protocol.MAX_ATTEMPTS,
    integer=True,
    description="Deliveries before a message is dead-lettered (with dead_letter_queue).",
)
DEDUP_WINDOW = Number(
    "dedup_window",
    0,
    protocol.MAX_DEDUP_WINDOW_SECONDS,
    description="Seconds an idempotency key is remembered "
    f"(default {protocol.DEFAULT_DEDUP_WINDOW_SECONDS}).",
)
DELAY = Number("delay", 0, protocol.MAX_DELAY_SECONDS, description="Seconds before it can be received.")
KEY = Key()
PRIORITY = Number(
    "priority",
    0,
    protocol.MAX_PRIORITY,
    integer=True,
    description="0 (the default) to 9: higher is delivered first; first in, first out within one.",
)
GROUP = Key(
    "group",
    "Messages of one group are delivered in order, and only one of them is leased at a time.",
)
TTL = Number(
    "ttl",
    0.001,
    protocol.MAX_TTL_SECONDS,
    description="Seconds it may wait once it can be received (after its delay); then it expires: "
    "to the dead-letter queue if the queue has one, else dropped. Default: the queue's message_ttl.",
)
MESSAGE_TTL = Number(
    "message_ttl",
    0.001,
    protocol.MAX_TTL_SECONDS,
    description="The ttl of a message sent without one (null: messages never expire).",
)
MAX_MESSAGES = Number(
    "max_messages",
    1,
    protocol.MAX_QUEUE_MESSAGES,
    integer=True,
    description="The most messages the queue holds, in every state (null: no limit).",
)
MAX_BYTES = Number(
    "max_bytes",
    1,
    protocol.MAX_QUEUE_MESSAGES,
    integer=True,
    description="The most bytes of content (UTF-8 JSON text) the queue holds (null: no limit).",
)
OVERFLOW = Choice(
    "overflow",
    OVERFLOWS,
    "What a send beyond max_messages or max_bytes does: reject (429 queue_full, nothing stored) or "
    "drop_oldest (the queue's head makes room: to the dead-letter queue if there is one).",
)
MAX_IN_FLIGHT = Number(
    "max_in_flight",
    1,
    protocol.MAX_QUEUE_MESSAGES,
    integer=True,
    description="The most messages leased at once, across every consumer and node (null: no cap).",
)
MAX_RATE = Number(
    "max_rate",
    0.01,
    protocol.MAX_RATE,
    description="The most deliveries per second, across every consumer and node (null: no cap).",
)
LEASE = Number(
    "lease",
    protocol.MIN_LEASE_SECONDS,
    protocol.MAX_LEASE_SECONDS,
    description="Seconds the messages stay leased (hidden) instead of removed: at-least-once delivery.",
)
COUNT = Number(
    "count",
    1,
    protocol.MAX_BATCH,
    integer=True,
    description='Up to this many messages, oldest first; the reply is then {"messages": [...]}.',
)
WAIT = Number(
    "wait",
    0,
    protocol.MAX_WAIT_SECONDS,
    description="Long-poll: wait up to this many seconds for a message before answering 204.",
)
MAX_MESSAGE_ID = 2**63 - 1
AFTER = Number(
    "after",
    0,
    MAX_MESSAGE_ID,
    integer=True,
    description="Only messages with a larger id: a reply's next_after.",
)
SOURCE = Key(
    "source",
    "Where the messages come from (mqctl export makes one per export): messages of this source "
    "whose ids a queue has stored already are skipped, so an import repeated or resumed stores "
    "nothing twice.",
)
EXPORTED_FIELDS = {
    "queue": Name("queue", "The queue it is in."),
    "id": Number("id", 1, MAX_MESSAGE_ID, integer=True, description="Its id in the store it comes from."),
    "attempts": Number("attempts", 0, 2**31 - 1, integer=True, description="Deliveries so far."),
    "enqueued_at": Number("enqueued_at", 0, 1e11, description="When it was first sent (epoch seconds)."),
    "visible_at": Number(
        "visible_at", 0, 1e11, description="0: ready; later: hidden until then (a lease's end, or a delay's)."
    ),
    "dead_letter_source": Name("dead_letter_source", "A dead letter: the queue it came from (or null)."),
    "priority": PRIORITY,
    "group": GROUP,
    "expires_at": Number("expires_at", 0, 1e11, description="When it expires unless received (or null)."),
}
MAX_BOUND_QUEUES = 100  # queues one exchange delivers into
RECEIPT_PATTERN = re.compile(r"[1-9][0-9]{0,17}\.[0-9a-f]{1,64}")

SETTINGS_FIELDS = {
    "max_attempts": MAX_ATTEMPTS,
    "dead_letter_queue": DEAD_LETTER_QUEUE,
    "dedup_window": DEDUP_WINDOW,
    "message_ttl": MESSAGE_TTL,
    "max_messages": MAX_MESSAGES,
    "max_bytes": MAX_BYTES,
    "overflow": OVERFLOW,
    "max_in_flight": MAX_IN_FLIGHT,
    "max_rate": MAX_RATE,
}
QUEUE_FIELDS = {"name": QUEUE_NAME, **SETTINGS_FIELDS}
# The settings a change may clear with null (the others go back to their defaults).
CLEARABLE = set(protocol.CLEARABLE_SETTINGS)
MESSAGE_FIELDS = {
    "delay": DELAY,
    "key": KEY,
    "priority": PRIORITY,
    "group": GROUP,
    "ttl": TTL,
}  # and "content"
RELEASE_FIELDS = {"delay": DELAY}
EXTEND_FIELDS = {"lease": LEASE}

# -- reply shapes -------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        **extra,
    }


_COUNTERS = {
    field: {"type": "integer", "minimum": 0, "description": meaning}
    for field, meaning in (
        ("sent", "Messages stored by sends (repeated idempotency keys excluded)."),
        ("received", "Messages delivered to receivers (removed or leased)."),
        ("returned", "Messages taken for a receiver that left before its reply was written, put back."),
        ("acked", "Leased messages acknowledged."),
        ("released", "Leased messages released early."),
        ("dead_lettered", "Messages moved to the dead-letter queue (attempts used up, expired, dropped)."),
        ("expired", "Messages that waited past their ttl (dead-lettered, or dropped without a DLQ)."),
        ("dropped", "Messages that made room in a full queue (overflow drop_oldest)."),
        ("refused", "Sends refused because the queue was full (overflow reject)."),
    )
}
_STORE = _object(
    {
        "kind": {"type": "string", "enum": ["sqlite", "postgresql"]},
        "location": {
            "type": "string",
            "description": "A directory, or the PostgreSQL URL without a password.",
        },
    }
)
_IDENTITY = {
    "version": {"type": "string"},
    "pid": {"type": "integer"},
    "store": _STORE,
    "data_dir": {"type": "string"},
    "pidfile": {"type": ["string", "null"]},
}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": {"type": "string", "description": "One sentence for people; it may change."},
            "code": {
                "type": "string",
                "enum": sorted(protocol.ERROR_CODES),
                "description": "What went wrong, for programs: see the API reference.",
            },
        }
    ),
    "QueueSettings": _object(
        {name: field.schema() for name, field in QUEUE_FIELDS.items()},
        ["name"],
        additionalProperties=False,
        dependentRequired={"max_attempts": ["dead_letter_queue"], "dead_letter_queue": ["max_attempts"]},
    ),
    "QueueChanges": _object(
        {
            name: {**field.schema(), "type": [field.schema()["type"], "null"]}
            if name in CLEARABLE
            else field.schema()
            for name, field in SETTINGS_FIELDS.items()
        },
        [],
        additionalProperties=False,
        minProperties=1,
    ),
    "Queue": _object(
        {
            "name": {"type": "string"},
            "created_at": {"type": "number", "description": "Seconds since the epoch."},
            "max_attempts": {"type": ["integer", "null"]},
            "dead_letter_queue": {"type": ["string", "null"]},
            "dedup_window": {"type": "number"},
            "message_ttl": {"type": ["number", "null"]},
            "max_messages": {"type": ["integer", "null"]},
            "max_bytes": {"type": ["integer", "null"]},
            "overflow": {"type": "string", "enum": list(OVERFLOWS)},
            "max_in_flight": {"type": ["integer", "null"]},
            "max_rate": {"type": ["number", "null"]},
            "messages": {"type": "integer", "description": "Messages in the queue, in every state."},
            "bytes": {
                "type": "integer",
                "description": "Bytes of content in the queue (max_bytes counts them).",
            },
            "ready": {"type": "integer"},
            "leased": {"type": "integer"},
            "delayed": {"type": "integer"},
            "dead_lettered": {
                "type": "integer",
                "description": "Messages of it now in its dead-letter queue.",
            },
            "oldest_ready_age_seconds": {"type": ["number", "null"]},
            "counters": {**_object(_COUNTERS), "description": "Traffic since this mqd started (per node)."},
        }
    ),
    "Queues": _object({"queues": {"type": "array", "items": _ref("Queue")}}),
    "NewMessage": _object(
        {
            "content": {"description": "Any JSON value; kept as the JSON text sent."},
            **{n: f.schema() for n, f in MESSAGE_FIELDS.items()},
        },
        ["content"],
        additionalProperties=False,
    ),
    "Batch": _object(
        {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": protocol.MAX_BATCH,
                "items": _ref("NewMessage"),
            }
        },
        additionalProperties=False,
    ),
    "Sent": _object({"id": {"type": "integer"}}),
    "Duplicate": _object(
        {
            "id": {"type": "integer", "description": "The first send's id."},
            "duplicate": {"type": "boolean", "const": True},
        }
    ),
    "SentBatch": _object(
        {
            "ids": {"type": "array", "items": {"type": "integer"}, "description": "One per item, in order."},
            "duplicates": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Positions of the items whose idempotency key repeated an earlier send: "
                "their id is that send's, and nothing new was stored for them.",
            },
        }
    ),
    "Message": _object(
        {
            "id": {"type": "integer"},
            "content": {"description": "The JSON value that was sent, as it was written."},
            "attempts": {
                "type": "integer",
                "description": "How many times it has been delivered, this one included.",
            },
            "enqueued_at": {"type": "number"},
            "priority": {**PRIORITY.schema(), "description": "Given only when not 0."},
            "group": {**GROUP.schema(), "description": "Given only for a message of a group."},
        },
        ["id", "content", "attempts", "enqueued_at"],
    ),
    "LeasedMessage": {
        "allOf": [
            _ref("Message"),
            _object(
                {
                    "receipt": {
                        "type": "string",
                        "description": "Acknowledges, releases or extends this lease.",
                    },
                    "lease_expires_at": {"type": "number"},
                }
            ),
        ]
    },
    "Messages": _object(
        {"messages": {"type": "array", "items": {"anyOf": [_ref("LeasedMessage"), _ref("Message")]}}}
    ),
    "Extended": _object({"receipt": {"type": "string"}, "lease_expires_at": {"type": "number"}}),
    "ExportedMessage": _object(
        {
            "content": {"description": "The JSON value that was sent, as it was written."},
            **{name: field.schema() for name, field in EXPORTED_FIELDS.items()},
            "dead_letter_source": {
                **EXPORTED_FIELDS["dead_letter_source"].schema(),
                "type": ["string", "null"],
            },
            "group": {**GROUP.schema(), "type": ["string", "null"]},
            "expires_at": {**EXPORTED_FIELDS["expires_at"].schema(), "type": ["number", "null"]},
        },
        ["queue", "content", "id", "attempts", "enqueued_at", "visible_at"],
        additionalProperties=False,
    ),
    "Exported": _object(
        {
            "messages": {"type": "array", "items": _ref("ExportedMessage"), "description": "By id."},
            "next_after": {
                "type": ["integer", "null"],
                "description": "Give it as ?after= for the next page; null: there is none.",
            },
        }
    ),
    "Import": _object(
        {
            "source": SOURCE.schema(),
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": protocol.MAX_BATCH,
                "items": _ref("ExportedMessage"),
                "description": "As an export gave them; stored in the order of their ids.",
            },
        },
        additionalProperties=False,
    ),
    "Imported": _object(
        {
            "imported": {"type": "integer", "description": "Stored now, each under a new id."},
            "skipped": {
                "type": "integer",
                "description": "Stored already by an earlier import of the source.",
            },
        }
    ),
    "Binding": _object(
        {
            "queues": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BOUND_QUEUES,
                "items": QUEUE_NAME.schema(),
                "description": "The queues a send to the exchange delivers into (a copy each).",
            }
        },
        additionalProperties=False,
    ),
    "Exchange": _object(
        {"name": {"type": "string"}, "queues": {"type": "array", "items": {"type": "string"}}}
    ),
    "Exchanges": _object({"exchanges": {"type": "array", "items": _ref("Exchange")}}),
    "Published": _object(
        {
            "queues": {
                "type": "object",
                "additionalProperties": _ref("SentBatch"),
                "description": "By queue bound: the ids of its copies (one per message, in order) and "
                "the positions of those whose idempotency key repeated an earlier send there.",
            }
        }
    ),
    "Purged": _object({"purged": {"type": "integer"}}),
    "Redriven": _object(
        {
            "moved": {"type": "integer"},
            "queues": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Moved, by the queue they went back to.",
            },
        }
    ),
    "Status": _object(
        {
            "status": {"type": "string", "const": "ok"},
            **_IDENTITY,
            "uptime_seconds": {"type": "number"},
            "queues": {"type": "integer"},
            "messages": {"type": "integer"},
            "waiting_receivers": {"type": "integer"},
            "fsync": {"enum": ["always", "off", None], "description": "SQLite's; null on PostgreSQL."},
            "commits": _object(
                {
                    "count": {"type": "integer"},
                    "operations": {"type": "integer"},
                    "seconds": {"type": "number"},
                },
                description="This mqd's store commits since it started: how many, the operations "
                "they carried together, and the time they took (fsync included).",
            ),
        }
    ),
    "Failed": _object(
        {
            "status": {
                "type": "string",
                "enum": ["failed", "unavailable"],
                "description": "failed: until mqd is restarted; "
                "unavailable: the store cannot be reached now.",
            },
            "error": {"type": "string"},
            "code": {"type": "string"},
            **_IDENTITY,
        }
    ),
}

# -- routes -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reply:
    description: str
    schema: str | None = None  # a name in SCHEMAS; None: no body
    codes: tuple[str, ...] = ()  # for error replies: the codes it may carry
    media: str = "application/json"


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: str  # its operationId, and the name of its handler in api.py
    tag: str
    summary: str
    replies: dict[int, Reply]
    query: tuple[Number, ...] = ()
    body: str | None = None  # a name in SCHEMAS, or "Send" (one message or a batch)
    body_required: bool = True
    header_key: bool = False  # takes the Idempotency-Key header
    websocket: bool = False  # an upgrade: its frames are docs/streams.md's, not OpenAPI's to describe


BAD = Reply(
    "Malformed JSON, an invalid field or query parameter, or a bad queue name.",
    "Error",
    ("invalid_request", "invalid_name"),
)
NO_QUEUE = Reply("No such queue.", "Error", ("queue_not_found",))
NO_EXCHANGE = Reply("No such exchange.", "Error", ("exchange_not_found",))
NO_RECEIPT = Reply(
    "No such queue, or the receipt is unknown or its lease has ended.",
    "Error",
    ("queue_not_found", "receipt_not_found"),
)
BODY = {
    413: Reply("The body is over the limit.", "Error", ("body_too_large",)),
    415: Reply("The body is not JSON.", "Error", ("unsupported_media_type",)),
}
FULL = Reply("The disk is (nearly) full; retry after Retry-After.", "Error", ("disk_full",))

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/status",
        "getStatus",
        "daemon",
        "Health, identity and totals of the daemon",
        {
            200: Reply("Running.", "Status"),
            503: Reply(
                "The store has failed, or cannot be reached now.",
                "Failed",
                ("store_failed", "store_unavailable"),
            ),
        },
    ),
    Route(
        "GET",
        "/metrics",
        "getMetrics",
        "daemon",
        "Prometheus metrics: queue depths and traffic, requests, store commits",
        {200: Reply("The Prometheus text format, version 0.0.4.", None, media="text/plain")},
    ),
    Route("GET", "/openapi.json", "getOpenApi", "daemon", "This document", {200: Reply("OpenAPI 3.1.")}),
    Route(
        "GET",
        "/export",
        "exportMessages",
        "daemon",
        "Every message in every state, by id, to move them to another mqd (mqctl export)",
        {
            200: Reply(
                "Up to count messages with larger ids than after, and the next page's after.", "Exported"
            ),
            400: Reply("A query parameter is not acceptable.", "Error", ("invalid_request",)),
        },
        query=(AFTER, COUNT),
    ),
    Route(
        "POST",
        "/import",
        "importMessages",
        "daemon",
        "Store exported messages again as they were, each under a new id (mqctl import)",
        {
            200: Reply("How many were stored, and how many the source had stored already.", "Imported"),
            400: BAD,
            404: NO_QUEUE,
            **BODY,
        },
        body="Import",
    ),
    Route(
        "GET",
        "/backup",
        "backupStore",
        "daemon",
        "A consistent copy of the whole store, made while mqd serves (SQLite; see docs/backups.md)",
        {
            200: Reply(
                "The copy, an SQLite file, checked before it is sent; the headers Mq-Backup-Taken-At, "
                "Mq-Backup-Highest-Id, Mq-Backup-Messages and Repr-Digest (sha-256) describe it.",
                None,
                media="application/vnd.sqlite3",
            ),
            409: Reply("The store is PostgreSQL: back it up with pg_dump.", "Error", ("not_supported",)),
        },
    ),
    Route(
        "GET",
        protocol.STREAM_PATH,
        "openStream",
        "streams",
        "A stream: a WebSocket carrying publishes, subscriptions, acks (see docs/streams.md)",
        {
            101: Reply("Switching to the WebSocket protocol: frames as docs/streams.md says."),
            426: Reply("Not a WebSocket upgrade.", "Error", ("upgrade_required",)),
        },
        websocket=True,
    ),
    Route(
        "POST",
        "/queues",
        "createQueue",
        "queues",
        "Declare a queue (idempotent)",
        {
            201: Reply("Created.", "Queue"),
            200: Reply("It already existed with these settings.", "Queue"),
            400: BAD,
            409: Reply(
                "It exists with other settings, or its dead-letter queue is missing or itself.",
                "Error",
                ("conflict",),
            ),
            **BODY,
        },
        body="QueueSettings",
    ),
    Route(
        "GET",
        "/exchanges",
        "listExchanges",
        "exchanges",
        "Every exchange and the queues it delivers into",
        {200: Reply("The exchanges, by name.", "Exchanges")},
    ),
    Route(
        "PUT",
        "/exchanges/{name}",
        "bindExchange",
        "exchanges",
        "Declare an exchange, or change it: a send to it delivers a copy into each of these queues",
        {
            201: Reply("Created.", "Exchange"),
            200: Reply("It existed: it now delivers into these queues.", "Exchange"),
            400: BAD,
            404: NO_QUEUE,
            **BODY,
        },
        body="Binding",
    ),
    Route(
        "DELETE",
        "/exchanges/{name}",
        "deleteExchange",
        "exchanges",
        "Delete an exchange (its queues and their messages stay)",
        {204: Reply("Deleted."), 400: BAD, 404: NO_EXCHANGE},
    ),
    Route(
        "POST",
        "/exchanges/{name}/messages",
        "publishMessages",
        "exchanges",
        "Send one message, or a batch, into every queue of the exchange, in one commit (all or nothing)",
        {
            201: Reply("Stored in every queue bound: the ids by queue.", "Published"),
            400: BAD,
            404: Reply(
                "No such exchange, or a queue of it was deleted meanwhile.",
                "Error",
                ("exchange_not_found", "queue_not_found"),
            ),
            **BODY,
            429: Reply(
                "A queue bound is at its max_messages or max_bytes and refuses more: nothing was "
                "stored in any queue; retry after Retry-After.",
                "Error",
                ("queue_full",),
            ),
        },
        body="Send",
        header_key=True,
    ),
    Route(
        "GET",
        "/queues",
        "listQueues",
        "queues",
        "Every queue with its counts",
        {200: Reply("The queues, by name.", "Queues")},
    ),
    Route(
        "GET",
        "/queues/{name}",
        "getQueue",
        "queues",
        "A queue's settings and counts",
        {200: Reply("The queue.", "Queue"), 400: BAD, 404: NO_QUEUE},
    ),
    Route(
        "PATCH",
        "/queues/{name}",
        "updateQueue",
        "queues",
        "Change a queue's settings: those given (null clears a limit); the others stay",
        {
            200: Reply("The queue with its new settings.", "Queue"),
            400: BAD,
            404: NO_QUEUE,
            409: Reply(
                "Its dead-letter queue would be missing or itself, or max_attempts and "
                "dead_letter_queue would not go together.",
                "Error",
                ("conflict",),
            ),
            **BODY,
        },
        body="QueueChanges",
    ),
    Route(
        "DELETE",
        "/queues/{name}",
        "deleteQueue",
        "queues",
        "Delete a queue and its messages",
        {
            204: Reply("Deleted."),
            400: BAD,
            404: NO_QUEUE,
            409: Reply("It is another queue's dead-letter queue.", "Error", ("conflict",)),
        },
    ),
    Route(
        "POST",
        "/queues/{name}/messages",
        "sendMessages",
        "messages",
        "Send one message, or a batch (all or nothing); answered once durable",
        {
            201: Reply("Stored: its id, or a batch's ids.", "Stored"),
            200: Reply("A repeated idempotency key: the first send's id.", "Duplicate"),
            400: BAD,
            404: NO_QUEUE,
            **BODY,
            429: Reply(
                "The queue is at its max_messages or max_bytes and refuses more (overflow reject): "
                "nothing of the send was stored; retry after Retry-After.",
                "Error",
                ("queue_full",),
            ),
            507: FULL,
        },
        body="Send",
        header_key=True,
    ),
    Route(
        "GET",
        "/queues/{name}/messages",
        "receiveMessages",
        "messages",
        "Receive the oldest message(s): removed, or leased with ?lease",
        {
            200: Reply("A message, or with ?count a list.", "Received"),
            204: Reply("Nothing ready (after waiting, with ?wait)."),
            400: BAD,
            404: NO_QUEUE,
        },
        query=(COUNT, WAIT, LEASE),
    ),
    Route(
        "DELETE",
        "/queues/{name}/messages",
        "purgeQueue",
        "queues",
        "Purge: remove every message of the queue",
        {200: Reply("How many were removed.", "Purged"), 400: BAD, 404: NO_QUEUE},
    ),
    Route(
        "DELETE",
        "/queues/{name}/messages/{receipt}",
        "ackMessage",
        "leases",
        "Acknowledge a leased message: it is gone",
        {204: Reply("Acknowledged."), 400: BAD, 404: NO_RECEIPT},
    ),
    Route(
        "POST",
        "/queues/{name}/messages/{receipt}/release",
        "releaseMessage",
        "leases",
        "End a lease early; the message is ready again (after an optional delay)",
        {204: Reply("Released."), 400: BAD, 404: NO_RECEIPT, **BODY},
        body="Release",
        body_required=False,
    ),
    Route(
        "POST",
        "/queues/{name}/messages/{receipt}/extend",
        "extendLease",
        "leases",
        "Make a lease end this many seconds from now",
        {200: Reply("The receipt and its new expiry.", "Extended"), 400: BAD, 404: NO_RECEIPT, **BODY},
        body="Extend",
    ),
    Route(
        "GET",
        "/queues/{name}/peek",
        "peekMessages",
        "messages",
        "The next ready messages, left in place",
        {200: Reply("The next messages.", "Messages"), 204: Reply("Nothing ready."), 400: BAD, 404: NO_QUEUE},
        query=(COUNT,),
    ),
    Route(
        "POST",
        "/queues/{name}/redrive",
        "redriveQueue",
        "queues",
        "Move dead letters back to the queues they came from",
        {200: Reply("How many moved, by destination queue.", "Redriven"), 400: BAD, 404: NO_QUEUE, **BODY},
        body="Empty",
        body_required=False,
    ),
)
# Every route that writes may meet a full disk: SQLite needs room even to delete (mqd keeps a
# reserve for receives and acks, but a disk filled by something else is full for them too).
WRITING = {
    "backupStore",  # writes its copy beside the store before sending it
    "createQueue",
    "updateQueue",
    "bindExchange",
    "deleteExchange",
    "publishMessages",
    "deleteQueue",
    "sendMessages",
    "receiveMessages",
    "purgeQueue",
    "ackMessage",
    "releaseMessage",
    "extendLease",
    "redriveQueue",
    "importMessages",
}
# The routes that change nothing: all a read-only console (mqd --console read-only) may use.
READING = {
    "getStatus",
    "getMetrics",
    "getOpenApi",
    "listQueues",
    "listExchanges",
    "getQueue",
    "peekMessages",
    "exportMessages",
}
ROUTES = tuple(
    dataclasses.replace(route, replies={**route.replies, 507: FULL}) if route.operation in WRITING else route
    for route in ROUTES
)

# Replies every route may give, whatever it does.
EVERY_ROUTE: dict[int, Reply] = {
    401: Reply(
        "An access token is configured and the request lacks it or has a wrong one.",
        "Error",
        ("unauthorized",),
    ),
    403: Reply(
        "The request came from a web page of another site (or a foreign Host).", "Error", ("forbidden",)
    ),
    500: Reply(
        "mqd failed at this one request (kept nothing of it), or stored data is damaged.",
        "Error",
        ("internal_error", "data_corrupt"),
    ),
    503: Reply(
        "mqd is stopping, too many receivers wait (or streams are open), or the store is unreachable "
        "or failed; retry after Retry-After.",
        "Error",
        ("shutting_down", "too_many_waiters", "too_many_streams", "store_unavailable", "store_failed"),
    ),
}

# Schemas made of others, and request bodies that are not worth a name of their own.
SCHEMAS["Stored"] = {"oneOf": [_ref("Sent"), _ref("SentBatch")]}
SCHEMAS["Received"] = {"anyOf": [_ref("LeasedMessage"), _ref("Message"), _ref("Messages")]}
SCHEMAS["Release"] = _object(
    {n: f.schema() for n, f in RELEASE_FIELDS.items()}, [], additionalProperties=False
)
SCHEMAS["Extend"] = _object({n: f.schema() for n, f in EXTEND_FIELDS.items()}, additionalProperties=False)
SCHEMAS["Empty"] = _object({}, [], additionalProperties=False)
REQUEST_BODIES = {"Send": {"oneOf": [_ref("NewMessage"), _ref("Batch")]}}
