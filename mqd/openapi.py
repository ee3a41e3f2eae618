"""The OpenAPI 3 description of the API, served at /openapi.json.

A test checks that every route of the application is described here and nothing else is, so
the document cannot drift from the code. Limits come from protocol.py, as the handlers' do.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import __version__, protocol

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": f"Queue name: {protocol.QUEUE_NAME_RULE}.",
    "schema": {"type": "string", "pattern": f"^{protocol.QUEUE_NAME_PATTERN.pattern}$"},
}
RECEIPT = {
    "name": "receipt",
    "in": "path",
    "required": True,
    "description": "The receipt of a lease, as returned by a receive with ?lease.",
    "schema": {"type": "string"},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


COUNT = _query(
    "count",
    {"type": "integer", "minimum": 1, "maximum": protocol.MAX_BATCH},
    'Up to this many messages, oldest first; the reply is then {"messages": [...]}.',
)


def _wait(max_wait: float) -> dict[str, Any]:
    return _query(
        "wait",
        {"type": "number", "minimum": 0, "maximum": max_wait},
        "Long-poll: wait up to this many seconds for a message before answering 204.",
    )


LEASE = _query(
    "lease",
    {"type": "number", "minimum": protocol.MIN_LEASE_SECONDS, "maximum": protocol.MAX_LEASE_SECONDS},
    "Lease the messages for this many seconds instead of removing them (at-least-once delivery).",
)

BAD = _error("Malformed JSON, an invalid field or query parameter.")
UNKNOWN_QUEUE = _error("The queue does not exist.")
UNKNOWN_RECEIPT = _error("The receipt is unknown or its lease has ended.")
TOO_LARGE = _error("The body is larger than the configured limit.")
NOT_JSON = _error("The body has a content type other than JSON.")
UNAVAILABLE = _error("mqd is shutting down, too many receivers wait, or the store failed.")
FULL = _error("The data directory's disk is too full to take more messages.")

MESSAGE_FIELDS = {
    "content": {"description": "Any JSON value."},
    "delay": {"type": "number", "minimum": 0, "maximum": protocol.MAX_DELAY_SECONDS},
    "key": {"type": "string", "minLength": 1, "maxLength": protocol.MAX_IDEMPOTENCY_KEY_LENGTH},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "One sentence saying what went wrong."}},
    },
    "QueueSettings": {
        "type": "object",
        "required": ["name"],
        "dependentRequired": {"max_attempts": ["dead_letter_queue"], "dead_letter_queue": ["max_attempts"]},
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": NAME["schema"]["pattern"]},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
            "dead_letter_queue": {"type": "string", "pattern": NAME["schema"]["pattern"]},
            "dedup_window": {"type": "number", "minimum": 0, "maximum": protocol.MAX_DEDUP_WINDOW_SECONDS},
        },
    },
    "Queue": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "created_at": {"type": "number"},
            "max_attempts": {"type": ["integer", "null"]},
            "dead_letter_queue": {"type": ["string", "null"]},
            "dedup_window": {"type": "number"},
            "messages": {"type": "integer", "description": "Messages in the queue, in every state."},
            "ready": {"type": "integer"},
            "leased": {"type": "integer"},
            "delayed": {"type": "integer"},
            "dead_lettered": {"type": "integer", "description": "Messages now in its dead-letter queue."},
            "oldest_ready_age_seconds": {"type": ["number", "null"]},
        },
    },
    "NewMessage": {
        "type": "object",
        "required": ["content"],
        "additionalProperties": False,
        "properties": MESSAGE_FIELDS,
    },
    "Batch": {
        "type": "object",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": protocol.MAX_BATCH,
                "items": {
                    "type": "object",
                    "required": ["content"],
                    "additionalProperties": False,
                    "properties": MESSAGE_FIELDS,
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "content", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "content": {"description": "The JSON value that was sent, exactly."},
            "attempts": {"type": "integer", "description": "How many times it has been delivered."},
            "enqueued_at": {"type": "number"},
            "receipt": {"type": "string", "description": "With ?lease: acknowledges, releases or extends."},
            "lease_expires_at": {"type": "number"},
        },
    },
    "Messages": {
        "type": "object",
        "required": ["messages"],
        "properties": {"messages": {"type": "array", "items": _ref("Message")}},
    },
}


def _paths(max_wait: float) -> dict[str, Any]:
    queue_only = [NAME]
    return {
        "/status": {
            "get": {
                "summary": "Health and totals of the daemon",
                "responses": {"200": _json({"type": "object"}, "Running: status, version, uptime, totals.")},
            }
        },
        "/queues": {
            "post": {
                "summary": "Declare a queue (idempotent)",
                "requestBody": _body(_ref("QueueSettings")),
                "responses": {
                    "201": _json(_ref("Queue"), "Created."),
                    "200": _json(_ref("Queue"), "It already existed with these settings."),
                    "400": BAD,
                    "409": _error(
                        "It exists with other settings, or its dead-letter queue is missing or itself."
                    ),
                    "413": TOO_LARGE,
                    "415": NOT_JSON,
                },
            },
            "get": {
                "summary": "Every queue with its counters",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"queues": {"type": "array", "items": _ref("Queue")}},
                        },
                        "The queues, by name.",
                    )
                },
            },
        },
        "/queues/{name}": {
            "parameters": queue_only,
            "get": {
                "summary": "A queue's settings and counters",
                "responses": {"200": _json(_ref("Queue"), "The queue."), "400": BAD, "404": UNKNOWN_QUEUE},
            },
            "delete": {
                "summary": "Delete a queue and its messages",
                "responses": {
                    "204": {"description": "Deleted."},
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                    "409": _error("It is another queue's dead-letter queue."),
                },
            },
        },
        "/queues/{name}/messages": {
            "parameters": queue_only,
            "post": {
                "summary": "Send one message, or a batch (all or nothing); answered once durable",
                "parameters": [
                    {
                        "name": protocol.IDEMPOTENCY_KEY_HEADER,
                        "in": "header",
                        "required": False,
                        "description": "A repeat within the queue's dedup window returns the first id "
                        "and enqueues nothing.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": protocol.MAX_IDEMPOTENCY_KEY_LENGTH,
                        },
                    }
                ],
                "requestBody": _body({"oneOf": [_ref("NewMessage"), _ref("Batch")]}),
                "responses": {
                    "201": _json({"type": "object"}, 'Stored: {"id"} or {"ids"}.'),
                    "200": _json({"type": "object"}, "A repeated idempotency key: the first send's id."),
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                    "413": TOO_LARGE,
                    "415": NOT_JSON,
                    "503": UNAVAILABLE,
                    "507": FULL,
                },
            },
            "get": {
                "summary": "Receive the oldest message(s): removed, or leased with ?lease",
                "parameters": [COUNT, _wait(max_wait), LEASE],
                "responses": {
                    "200": _json(
                        {"oneOf": [_ref("Message"), _ref("Messages")]}, "A message, or with ?count a list."
                    ),
                    "204": {"description": "Nothing ready (after waiting, with ?wait)."},
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                    "503": UNAVAILABLE,
                },
            },
            "delete": {
                "summary": "Purge: remove every message of the queue",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"purged": {"type": "integer"}}},
                        "How many were removed.",
                    ),
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                },
            },
        },
        "/queues/{name}/messages/{receipt}": {
            "parameters": [NAME, RECEIPT],
            "delete": {
                "summary": "Acknowledge a leased message: it is gone",
                "responses": {"204": {"description": "Acknowledged."}, "400": BAD, "404": UNKNOWN_RECEIPT},
            },
        },
        "/queues/{name}/messages/{receipt}/release": {
            "parameters": [NAME, RECEIPT],
            "post": {
                "summary": "End a lease early; the message is ready again (after an optional delay)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"delay": MESSAGE_FIELDS["delay"]},
                    },
                    required=False,
                ),
                "responses": {
                    "204": {"description": "Released."},
                    "400": BAD,
                    "404": UNKNOWN_RECEIPT,
                    "413": TOO_LARGE,
                    "415": NOT_JSON,
                },
            },
        },
        "/queues/{name}/messages/{receipt}/extend": {
            "parameters": [NAME, RECEIPT],
            "post": {
                "summary": "Make a lease end this many seconds from now",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["lease"],
                        "additionalProperties": False,
                        "properties": {"lease": LEASE["schema"]},
                    }
                ),
                "responses": {
                    "200": _json({"type": "object"}, "The receipt and its new expiry."),
                    "400": BAD,
                    "404": UNKNOWN_RECEIPT,
                    "413": TOO_LARGE,
                    "415": NOT_JSON,
                },
            },
        },
        "/queues/{name}/peek": {
            "parameters": queue_only,
            "get": {
                "summary": "The next ready messages, left in place",
                "parameters": [COUNT],
                "responses": {
                    "200": _json(_ref("Messages"), "The next messages."),
                    "204": {"description": "Nothing ready."},
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                },
            },
        },
        "/queues/{name}/redrive": {
            "parameters": queue_only,
            "post": {
                "summary": "Move dead letters back to the queues they came from",
                "responses": {
                    "200": _json({"type": "object"}, "How many moved, by destination queue."),
                    "400": BAD,
                    "404": UNKNOWN_QUEUE,
                    "413": TOO_LARGE,
                    "415": NOT_JSON,
                },
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: queue depths and traffic, requests, store commits",
                "responses": {
                    "200": {
                        "description": "The Prometheus text format, version 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


REFUSED = {
    "401": _error("An access token is configured and the request lacks it or has a wrong one."),
    "403": _error("The request carries a web browser's cross-site markers, or a foreign Host."),
}


def _with_refusals(paths: dict[str, Any]) -> dict[str, Any]:
    for item in paths.values():
        for method, operation in item.items():
            if method != "parameters":
                operation["responses"].update(REFUSED)
    return paths


def document(max_wait: float = protocol.MAX_WAIT_SECONDS) -> dict[str, Any]:
    """The document; ``max_wait`` is the daemon's configured cap on long-polls."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mq",
            "version": __version__,
            "description": 'Durable named FIFO queues over HTTP. Every error is {"error": "..."}.',
        },
        "paths": _with_refusals(_paths(max_wait)),
        "components": {"schemas": SCHEMAS},
    }


def add_route(app: web.Application, max_wait: float) -> None:
    text = json.dumps(document(max_wait), indent=1) + "\n"

    async def serve_document(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    app.router.add_get("/openapi.json", serve_document, allow_head=False)
