"""The HTTP API: parse each request, call the broker, shape the reply.

Every error leaves through ``error_middleware``, the one place where domain errors become
statuses and every failure becomes ``{"error": "<one sentence>"}``; a handler never builds an
error response itself, and nothing a client sends can produce a traceback or a 500.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from . import __version__, protocol, wire
from .broker import Broker
from .errors import (
    DataCorrupt,
    DataDirectoryError,
    Forbidden,
    InvalidArgument,
    MqError,
    QueueConflict,
    QueueNotFound,
    ReceiptNotFound,
    ShuttingDown,
    StorageFailed,
    StorageFull,
    StorageUnavailable,
    TooManyWaiters,
    Unauthorized,
)
from .keys import BROKER, CONFIG, METRICS
from .store.base import NewMessage, QueueSettings

log = logging.getLogger("mqd.api")

STATUS_OF_ERROR: dict[type[MqError], int] = {
    InvalidArgument: 400,
    Unauthorized: 401,
    Forbidden: 403,
    QueueNotFound: 404,
    ReceiptNotFound: 404,
    QueueConflict: 409,
    TooManyWaiters: 503,
    ShuttingDown: 503,
    StorageFailed: 503,
    StorageUnavailable: 503,
    StorageFull: 507,
    DataCorrupt: 500,
    DataDirectoryError: 500,
}
EXTRA_HEADERS: dict[type[MqError], dict[str, str]] = {
    TooManyWaiters: {hdrs.RETRY_AFTER: "1"},
    ShuttingDown: {hdrs.RETRY_AFTER: "5"},
    StorageUnavailable: {hdrs.RETRY_AFTER: "1"},
    StorageFull: {hdrs.RETRY_AFTER: "5"},
    Unauthorized: {hdrs.WWW_AUTHENTICATE: 'Bearer realm="mq"'},
}


JSON_HEADERS = {hdrs.CONTENT_TYPE: "application/json; charset=utf-8"}


# -- errors -------------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=wire.dumps({"error": message}), content_type="application/json", headers=headers
    )


def _describe_http_error(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"Method {request.method} is not allowed on {request.path}; use {allowed}."
    if isinstance(exc, web.HTTPNotFound) and request.match_info.route.resource is None:
        return f"There is no route {request.path}; see GET /openapi.json."
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[CONFIG].max_body_bytes
        return f"The request body is larger than the limit of {limit} bytes."
    text = (exc.text or exc.reason or "").strip()
    if text and not text.startswith(f"{exc.status}:"):
        return text
    return f"{exc.reason}."


def response_for_error(request: web.Request, exc: Exception) -> web.Response:
    """The one place an exception becomes a reply: the status for its class, one sentence."""
    if isinstance(exc, MqError):
        status = STATUS_OF_ERROR.get(type(exc), 500)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, str(exc), EXTRA_HEADERS.get(type(exc)))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k in (hdrs.ALLOW, hdrs.RETRY_AFTER)}
        return error_response(exc.status, _describe_http_error(request, exc), headers)
    if isinstance(exc, web.HTTPException):
        raise exc  # a redirect or success raised as an exception: not an error
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, "mqd failed to handle this request; the error is in its log.")


# -- request parsing ----------------------------------------------------------------------------


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or None when there is none. A body with an explicit non-JSON
    content type is refused (415): a browser form must never be read as a message."""
    if not request.body_exists:
        return None
    if hdrs.CONTENT_TYPE in request.headers and not _is_json_type(request.content_type):
        raise web.HTTPUnsupportedMediaType(
            text=f"Bodies must be JSON (application/json), not {request.content_type}."
        )
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return wire.decode(raw)
    except UnicodeDecodeError:
        raise InvalidArgument("The request body is not valid UTF-8 JSON.") from None
    except ValueError as exc:
        raise InvalidArgument(f"The request body is not valid JSON: {exc}.") from None


async def read_object(request: web.Request, allowed: set[str], *, required: bool = True) -> dict[str, Any]:
    body = await read_json(request)
    if body is None:
        if required:
            raise InvalidArgument("The request needs a JSON object body.")
        return {}
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    _reject_unknown(body, allowed, "field")
    return body


def _reject_unknown(given: Mapping[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidArgument(f"Unknown {kind} '{unknown[0]}'; expected: {expected}.")


def _number(value: Any, name: str, low: float, high: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"'{name}' must be a number from {low:g} to {high:g}.")
    if integer and value != int(value):
        raise InvalidArgument(f"'{name}' must be a whole number from {low:g} to {high:g}.")
    if not low <= value <= high:
        raise InvalidArgument(f"'{name}' must be from {low:g} to {high:g}, not {value:g}.")
    return int(value) if integer else float(value)


def _query_number(request: web.Request, name: str, low: float, high: float, *, integer: bool = False):
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise InvalidArgument(f"Query parameter '{name}' must be {kind} from {low:g} to {high:g}.") from None
    return _number(value, f"{name}", low, high, integer=integer)


def _query(request: web.Request, allowed: set[str]) -> None:
    if not request.query_string:
        return
    _reject_unknown(request.query, allowed, "query parameter")
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise InvalidArgument(f"Query parameter '{name}' is given more than once.")


def _queue_name(value: Any) -> str:
    if not isinstance(value, str) or not protocol.is_valid_queue_name(value):
        shown = value if isinstance(value, str) else wire.dumps(value)
        raise InvalidArgument(f"Invalid queue name {shown!r}: use {protocol.QUEUE_NAME_RULE}.")
    return value


def _idempotency_key(value: Any, source: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= protocol.MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidArgument(
            f"{source} must be a string of 1 to {protocol.MAX_IDEMPOTENCY_KEY_LENGTH} characters."
        )
    return value


MESSAGE_FIELDS = frozenset({"content", "delay", "key"})


def _new_message(item: Any, where: str, header_key: str | None = None) -> NewMessage:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where} must be a JSON object with 'content'.")
    if not item.keys() <= MESSAGE_FIELDS:
        _reject_unknown(item, MESSAGE_FIELDS, f"field in {where}")
    if "content" not in item:
        raise InvalidArgument(f"{where} has no 'content'.")
    try:
        content = wire.encode_content(item["content"])
    except ValueError as exc:
        raise InvalidArgument(f"Cannot store the content of {where}: {exc}.") from None
    if len(item) == 1:
        return NewMessage(content, 0.0, header_key)  # the common case, kept short: batches are big
    delay = _number(item.get("delay", 0), "delay", 0, protocol.MAX_DELAY_SECONDS)
    key = _idempotency_key(item["key"], f"'key' of {where}") if "key" in item else header_key
    return NewMessage(content, delay, key)


class _Where:
    """ "messages[i]", spelled out only if an error message needs it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"messages[{self.index}]"

    def __format__(self, spec: str) -> str:
        return str(self)


def json_reply(body: Any, status: int = 200) -> web.Response:
    text = body if isinstance(body, str) else wire.dumps(body)
    return web.Response(status=status, body=text.encode(), headers=JSON_HEADERS)


def _broker(request: web.Request) -> Broker:
    return request.app[BROKER]


def _name(request: web.Request) -> str:
    return _queue_name(request.match_info["name"])


# -- queues -------------------------------------------------------------------------------------


def _settings(body: dict[str, Any]) -> QueueSettings:
    max_attempts = dead_letter_queue = None
    if "max_attempts" in body:
        max_attempts = _number(body["max_attempts"], "max_attempts", 1, 1000, integer=True)
    if "dead_letter_queue" in body:
        dead_letter_queue = _queue_name(body["dead_letter_queue"])
    dedup_window = body.get("dedup_window", protocol.DEFAULT_DEDUP_WINDOW_SECONDS)
    dedup_window = _number(dedup_window, "dedup_window", 0, protocol.MAX_DEDUP_WINDOW_SECONDS)
    return QueueSettings(max_attempts, dead_letter_queue, dedup_window)


async def create_queue(request: web.Request) -> web.Response:
    _query(request, set())
    body = await read_object(request, {"name", "max_attempts", "dead_letter_queue", "dedup_window"})
    if "name" not in body:
        raise InvalidArgument("The queue needs a 'name'.")
    name = _queue_name(body["name"])
    _, created = await _broker(request).create_queue(name, _settings(body))
    stats = await _broker(request).queue_stats(name)
    return json_reply(wire.queue_dict(stats, time.time()), 201 if created else 200)


async def list_queues(request: web.Request) -> web.Response:
    _query(request, set())
    now = time.time()
    return json_reply({"queues": [wire.queue_dict(s, now) for s in await _broker(request).list_queues()]})


async def get_queue(request: web.Request) -> web.Response:
    _query(request, set())
    stats = await _broker(request).queue_stats(_name(request))
    return json_reply(wire.queue_dict(stats, time.time()))


async def delete_queue(request: web.Request) -> web.Response:
    _query(request, set())
    await _broker(request).delete_queue(_name(request))
    return web.Response(status=204)


async def purge_queue(request: web.Request) -> web.Response:
    _query(request, set())
    return json_reply({"purged": await _broker(request).purge(_name(request))})


async def redrive(request: web.Request) -> web.Response:
    _query(request, set())
    await read_object(request, set(), required=False)
    moved = await _broker(request).redrive(_name(request))
    return json_reply({"moved": sum(moved.values()), "queues": moved})


# -- messages -----------------------------------------------------------------------------------


async def send(request: web.Request) -> web.Response:
    _query(request, set())
    name = _name(request)
    header = request.headers.get(protocol.IDEMPOTENCY_KEY_HEADER)
    header_key = (
        None if header is None else _idempotency_key(header, f"The {protocol.IDEMPOTENCY_KEY_HEADER} header")
    )
    body = await read_object(request, {"content", "delay", "key", "messages"})
    if "messages" in body:
        if len(body) > 1:
            raise InvalidArgument("A batch has only 'messages'; put 'delay' and 'key' in each item.")
        items = body["messages"]
        if not isinstance(items, list) or not 1 <= len(items) <= protocol.MAX_BATCH:
            raise InvalidArgument(f"'messages' must be a list of 1 to {protocol.MAX_BATCH} messages.")
        messages = [_new_message(item, _Where(i)) for i, item in enumerate(items)]
        result = await _broker(request).send(name, messages)
        return json_reply({"ids": result.ids}, 201)
    if "content" not in body:
        raise InvalidArgument("The body needs 'content' (one message) or 'messages' (a batch).")
    result = await _broker(request).send(name, [_new_message(body, "the message", header_key)])
    if result.duplicates[0]:
        return json_reply({"id": result.ids[0], "duplicate": True}, 200)
    return json_reply({"id": result.ids[0]}, 201)


async def receive(request: web.Request) -> web.Response:
    _query(request, {"count", "wait", "lease"})
    name = _name(request)
    count = _query_number(request, "count", 1, protocol.MAX_BATCH, integer=True)
    wait = _query_number(request, "wait", 0, request.app[CONFIG].max_wait) or 0.0
    lease = _query_number(request, "lease", protocol.MIN_LEASE_SECONDS, protocol.MAX_LEASE_SECONDS)
    deliveries = await _broker(request).receive(name, count=count or 1, lease=lease, wait=wait)
    if not deliveries:
        return web.Response(status=204)
    if count is None:
        return json_reply(wire.delivery_json(deliveries[0]))
    return json_reply(wire.deliveries_json(deliveries))


async def peek(request: web.Request) -> web.Response:
    _query(request, {"count"})
    count = _query_number(request, "count", 1, protocol.MAX_BATCH, integer=True) or 1
    deliveries = await _broker(request).peek(_name(request), count)
    if not deliveries:
        return web.Response(status=204)
    return json_reply(wire.deliveries_json(deliveries))


async def ack(request: web.Request) -> web.Response:
    _query(request, set())
    await _broker(request).ack(_name(request), request.match_info["receipt"])
    return web.Response(status=204)


async def release(request: web.Request) -> web.Response:
    _query(request, set())
    body = await read_object(request, {"delay"}, required=False)
    delay = _number(body.get("delay", 0), "delay", 0, protocol.MAX_DELAY_SECONDS)
    await _broker(request).release(_name(request), request.match_info["receipt"], delay)
    return web.Response(status=204)


async def extend(request: web.Request) -> web.Response:
    _query(request, set())
    body = await read_object(request, {"lease"})
    if "lease" not in body:
        raise InvalidArgument("Extending a lease needs 'lease' (seconds from now).")
    lease = _number(body["lease"], "lease", protocol.MIN_LEASE_SECONDS, protocol.MAX_LEASE_SECONDS)
    receipt = request.match_info["receipt"]
    expires_at = await _broker(request).extend(_name(request), receipt, lease)
    return json_reply({"receipt": receipt, "lease_expires_at": expires_at})


# -- the daemon ---------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    _query(request, set())
    broker = _broker(request)
    config = request.app[CONFIG]
    failure = broker.store.failure()
    if failure is not None:  # unhealthy: say why, with a status a health check notices
        return json_reply(
            {"status": "failed", "error": failure, "version": __version__, "pid": os.getpid()}, 503
        )
    totals = await broker.totals()
    return json_reply(
        {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - broker.started_at, 3),
            "queues": totals.queues,
            "messages": totals.messages,
            "waiting_receivers": broker.waiting_receivers,
            "fsync": config.fsync,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    _query(request, set())
    text = await request.app[METRICS].render(_broker(request))
    return web.Response(text=text, headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    """Every route of the API; GET routes take no implicit HEAD (a HEAD must never consume)."""
    router = app.router
    router.add_get("/status", status, allow_head=False)
    router.add_get("/metrics", metrics, allow_head=False)
    router.add_post("/queues", create_queue)
    router.add_get("/queues", list_queues, allow_head=False)
    router.add_get("/queues/{name}", get_queue, allow_head=False)
    router.add_delete("/queues/{name}", delete_queue)
    router.add_post("/queues/{name}/messages", send)
    router.add_get("/queues/{name}/messages", receive, allow_head=False)
    router.add_delete("/queues/{name}/messages", purge_queue)
    router.add_delete("/queues/{name}/messages/{receipt}", ack)
    router.add_post("/queues/{name}/messages/{receipt}/release", release)
    router.add_post("/queues/{name}/messages/{receipt}/extend", extend)
    router.add_get("/queues/{name}/peek", peek, allow_head=False)
    router.add_post("/queues/{name}/redrive", redrive)
