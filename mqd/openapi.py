"""The OpenAPI 3.1 description of the API, served at /openapi.json, written from contract.py.

Every operation has an operationId (its handler's name in api.py) and a tag, every reply its
schema, every error reply the codes it may carry; a leased receive links to the ack, extend and
release operations with its receipt, so generated clients and fuzzers can follow a lease through.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import __version__, contract, protocol

JSON = "application/json"
DESCRIPTION = (
    "Durable named FIFO queues over HTTP. Every error is "
    '{"error": "<a sentence>", "code": "<a stable code>"}: decide by the code. '
    "The full reference, every route with every status and code, is docs/api.md in mq's repository; "
    "GET /stream is a WebSocket whose frames and close codes are in docs/streams.md."
)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    if "{name}" in path:
        parameters.append(
            {"name": "name", "in": "path", "required": True, **_described(contract.QUEUE_NAME.schema())}
        )
    if "{receipt}" in path:
        parameters.append(
            {
                "name": "receipt",
                "in": "path",
                "required": True,
                "description": "The receipt of a lease, as a leased receive returned it.",
                "schema": {"type": "string", "pattern": f"^{contract.RECEIPT_PATTERN.pattern}$"},
            }
        )
    return parameters


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's description beside its schema, where OpenAPI wants it."""
    schema = dict(schema)
    description = schema.pop("description", "")
    return {"description": description, "schema": schema}


def _reply(reply: contract.Reply) -> dict[str, Any]:
    description = reply.description
    if reply.codes:
        description += " Codes: " + ", ".join(reply.codes) + "."
    answer: dict[str, Any] = {"description": description}
    if reply.media == "text/plain":
        answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif reply.schema is not None:
        answer["content"] = {JSON: {"schema": {"$ref": f"#/components/schemas/{reply.schema}"}}}
    elif reply.description == "OpenAPI 3.1.":
        answer["content"] = {JSON: {"schema": {"type": "object"}}}
    if reply.codes and set(reply.codes) & {
        "too_many_waiters",
        "shutting_down",
        "store_unavailable",
        "disk_full",
    }:
        answer["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return answer


# GET /stream is a WebSocket: OpenAPI describes requests and replies, not frames (the document's
# description points to docs/streams.md, which lists every frame).
HTTP_ROUTES = tuple(route for route in contract.ROUTES if not route.websocket)

LEASE_LINKS = {
    "ack": ("ackMessage", "Acknowledge this lease."),
    "extend": ("extendLease", "Extend this lease."),
    "release": ("releaseMessage", "Give the message back."),
}


def _operation(route: contract.Route, max_wait: float) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation,
        "tags": [route.tag],
        "summary": route.summary,
    }
    parameters = []
    for field in route.query:
        field = field.with_high(max_wait) if field is contract.WAIT else field
        parameters.append(
            {"name": field.name, "in": "query", "required": False, **_described(field.schema())}
        )
    if route.header_key:
        parameters.append(
            {
                "name": protocol.IDEMPOTENCY_KEY_HEADER,
                "in": "header",
                "required": False,
                **_described(contract.KEY.schema()),
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        schema = contract.REQUEST_BODIES.get(route.body, {"$ref": f"#/components/schemas/{route.body}"})
        operation["requestBody"] = {"required": route.body_required, "content": {JSON: {"schema": schema}}}
    replies = {**contract.EVERY_ROUTE, **route.replies}
    operation["responses"] = {str(status): _reply(reply) for status, reply in sorted(replies.items())}
    if route.operation == "receiveMessages":
        links = {}
        for name, (target, description) in LEASE_LINKS.items():
            for suffix, where, which in (
                ("", "#/receipt", "a receive of one message, with ?lease"),
                ("First", "#/messages/0/receipt", "the first of a receive with ?count and ?lease"),
            ):
                links[name + suffix] = {
                    "operationId": target,
                    "description": f"{description} ({which})",
                    "parameters": {"name": "$request.path.name", "receipt": f"$response.body{where}"},
                }
        operation["responses"]["200"]["links"] = links
    if route.operation == "createQueue":
        for status in ("200", "201"):
            operation["responses"][status]["links"] = {
                "send": {
                    "operationId": "sendMessages",
                    "description": "Send to the queue just declared.",
                    "parameters": {"name": "$response.body#/name"},
                },
                "lease": {
                    "operationId": "receiveMessages",
                    "description": "Lease a message of the queue just declared, for 30 seconds.",
                    "parameters": {"name": "$response.body#/name", "lease": 30},
                },
            }
    if route.operation == "sendMessages":
        operation["responses"]["201"]["links"] = {
            "lease": {
                "operationId": "receiveMessages",
                "description": "Lease a message of the queue just sent to, for 30 seconds.",
                "parameters": {"name": "$request.path.name", "lease": 30},
            }
        }
    return operation


def document(max_wait: float = protocol.MAX_WAIT_SECONDS) -> dict[str, Any]:
    """The document; ``max_wait`` is the daemon's configured cap on long-polls."""
    paths: dict[str, Any] = {}
    for route in HTTP_ROUTES:
        item = paths.setdefault(route.path, {})
        if "parameters" not in item and _path_parameters(route.path):
            item["parameters"] = _path_parameters(route.path)
        item[route.method.lower()] = _operation(route, max_wait)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mq", "version": __version__, "description": DESCRIPTION},
        "tags": [{"name": tag} for tag in dict.fromkeys(route.tag for route in HTTP_ROUTES)],
        "security": [{}, {"token": []}],
        "paths": paths,
        "components": {
            "schemas": contract.SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The access token mqd was given (MQD_TOKEN or --token-file), "
                    "when it has one.",
                }
            },
        },
    }


def add_route(app: web.Application, max_wait: float) -> None:
    text = json.dumps(document(max_wait), indent=1) + "\n"

    async def get_open_api(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    app.router.add_get("/openapi.json", get_open_api, allow_head=False, name="getOpenApi")
