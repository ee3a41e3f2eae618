"""The HTTP API: parse each request, call the broker, shape the reply.

Requests are read and checked by parsing.py. Every error leaves through ``response_for_error``
(called by the application's one middleware), the one place where domain errors become statuses
and every failure becomes ``{"error": "<one sentence>"}``; a handler never builds an error
response itself, and nothing a client sends can produce a traceback or a 500.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from . import __version__, parsing, protocol, wire
from .broker import Broker
from .errors import (
    DataCorrupt,
    DataDirectoryError,
    Forbidden,
    InternalError,
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
    InternalError: 500,
}
EXTRA_HEADERS: dict[type[MqError], dict[str, str]] = {
    TooManyWaiters: {hdrs.RETRY_AFTER: "1"},
    ShuttingDown: {hdrs.RETRY_AFTER: "5"},
    StorageUnavailable: {hdrs.RETRY_AFTER: "1"},
    StorageFull: {hdrs.RETRY_AFTER: "5"},
    Unauthorized: {hdrs.WWW_AUTHENTICATE: 'Bearer realm="mq"'},
}


# 5xx answers that refuse work for a while (retry later) rather than report a fault of mqd's own;
# a failed store was logged CRITICAL once, when it failed.
REFUSALS = {TooManyWaiters, ShuttingDown, StorageUnavailable, StorageFull, StorageFailed}

JSON_HEADERS = {hdrs.CONTENT_TYPE: "application/json; charset=utf-8"}


# -- errors -------------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_reply({"error": message}, status, headers)


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
        if type(exc) in REFUSALS:  # the disk's or the moment's, not mqd's own failure
            log.warning("%s %s refused: %s", request.method, request.path, exc)
        elif status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, str(exc), EXTRA_HEADERS.get(type(exc)))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k in (hdrs.ALLOW, hdrs.RETRY_AFTER)}
        return error_response(exc.status, _describe_http_error(request, exc), headers)
    if isinstance(exc, web.HTTPException):
        raise exc  # a redirect or success raised as an exception: not an error
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, "mqd failed to handle this request; the error is in its log.")


def json_reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON reply, ended by a newline so that a shell prompt after curl starts on its own line."""
    text = body if isinstance(body, str) else wire.dumps(body)
    all_headers = JSON_HEADERS if headers is None else {**JSON_HEADERS, **headers}
    return web.Response(status=status, body=(text + "\n").encode(), headers=all_headers)


def _broker(request: web.Request) -> Broker:
    return request.app[BROKER]


def _name(request: web.Request) -> str:
    return parsing.queue_name(request.match_info["name"])


async def _receipt(request: web.Request) -> tuple[str, str]:
    """The queue and the receipt of the path. A receipt that cannot be one mqd handed out is
    unknown without asking the store, but an unknown queue still says so first."""
    name = _name(request)
    receipt = request.match_info["receipt"]
    if not parsing.looks_like_receipt(receipt):
        await _broker(request).get_queue(name)
        raise ReceiptNotFound(receipt)
    return name, receipt


# -- queues -------------------------------------------------------------------------------------


async def create_queue(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    body = await parsing.read_object(request, {"name", "max_attempts", "dead_letter_queue", "dedup_window"})
    if "name" not in body:
        raise InvalidArgument("The queue needs a 'name'.")
    name = parsing.queue_name(body["name"])
    _, created = await _broker(request).create_queue(name, parsing.settings(body))
    stats = await _broker(request).queue_stats(name)
    return json_reply(wire.queue_dict(stats, time.time()), 201 if created else 200)


async def list_queues(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    now = time.time()
    return json_reply({"queues": [wire.queue_dict(s, now) for s in await _broker(request).list_queues()]})


async def get_queue(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    stats = await _broker(request).queue_stats(_name(request))
    return json_reply(wire.queue_dict(stats, time.time()))


async def delete_queue(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    await _broker(request).delete_queue(_name(request))
    return web.Response(status=204)


async def purge_queue(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    return json_reply({"purged": await _broker(request).purge(_name(request))})


async def redrive(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    await parsing.read_object(request, set(), required=False)
    moved = await _broker(request).redrive(_name(request))
    return json_reply({"moved": sum(moved.values()), "queues": moved})


# -- messages -----------------------------------------------------------------------------------


async def send(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    name = _name(request)
    messages, batch = await parsing.read_send(request)
    result = await _broker(request).send(name, messages)
    if batch:
        return json_reply(wire.ids_json(result.ids), 201)
    if result.duplicates[0]:
        return json_reply({"id": result.ids[0], "duplicate": True}, 200)
    return json_reply({"id": result.ids[0]}, 201)


async def receive(request: web.Request) -> web.StreamResponse:
    parsing.check_query(request, {"count", "wait", "lease"})
    name = _name(request)
    count = parsing.query_number(request, "count", 1, protocol.MAX_BATCH, integer=True)
    wait = parsing.query_number(request, "wait", 0, request.app[CONFIG].max_wait) or 0.0
    lease = parsing.query_number(request, "lease", protocol.MIN_LEASE_SECONDS, protocol.MAX_LEASE_SECONDS)
    broker = _broker(request)
    connected = functools.partial(_connected, request)
    deliveries = await broker.receive(name, count=count or 1, lease=lease, wait=wait, still_there=connected)
    if not deliveries:
        return web.Response(status=204)
    body = wire.delivery_json(deliveries[0]) if count is None else wire.deliveries_json(deliveries)
    return await _hand_over(request, json_reply(body), lambda: broker.give_back(name, deliveries))


def _connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _hand_over(
    request: web.Request, response: web.Response, give_back: Callable[[], None]
) -> web.Response:
    """Write a reply that carries messages; if the client is gone before it was written, call
    ``give_back`` so the messages go to someone who is still there."""
    try:
        if not _connected(request):
            raise ConnectionResetError("the client left")
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        give_back()
        if not _connected(request):
            return response  # aiohttp lets a reply to a closed connection go quietly
        raise
    return response


async def peek(request: web.Request) -> web.Response:
    parsing.check_query(request, {"count"})
    count = parsing.query_number(request, "count", 1, protocol.MAX_BATCH, integer=True) or 1
    deliveries = await _broker(request).peek(_name(request), count)
    if not deliveries:
        return web.Response(status=204)
    return json_reply(wire.deliveries_json(deliveries))


async def ack(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    name, receipt = await _receipt(request)
    await _broker(request).ack(name, receipt)
    return web.Response(status=204)


async def release(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    body = await parsing.read_object(request, {"delay"}, required=False)
    delay = parsing.number(body.get("delay", 0), "delay", 0, protocol.MAX_DELAY_SECONDS)
    name, receipt = await _receipt(request)
    await _broker(request).release(name, receipt, delay)
    return web.Response(status=204)


async def extend(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    body = await parsing.read_object(request, {"lease"})
    if "lease" not in body:
        raise InvalidArgument("Extending a lease needs 'lease' (seconds from now).")
    lease = parsing.number(body["lease"], "lease", protocol.MIN_LEASE_SECONDS, protocol.MAX_LEASE_SECONDS)
    name, receipt = await _receipt(request)
    expires_at = await _broker(request).extend(name, receipt, lease)
    return json_reply({"receipt": receipt, "lease_expires_at": expires_at})


# -- the daemon ---------------------------------------------------------------------------------


def identity(request: web.Request) -> dict[str, Any]:
    """Which daemon this is and what it serves: how mqctl tells it from another."""
    config = request.app[CONFIG]
    store = _broker(request).store
    return {
        "version": __version__,
        "pid": os.getpid(),
        "store": {"kind": store.kind, "location": store.location()},
        "data_dir": str(config.data_dir.absolute()),
        "pidfile": str(config.pidfile.absolute()) if config.pidfile is not None else None,
    }


async def status(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
    broker = _broker(request)
    config = request.app[CONFIG]
    failure = broker.store.failure()
    if failure is not None:  # unhealthy: say why, with a status a health check notices
        return json_reply({"status": "failed", "error": failure, **identity(request)}, 503)
    totals = await broker.totals()
    return json_reply(
        {
            "status": "ok",
            **identity(request),
            "uptime_seconds": round(time.time() - broker.started_at, 3),
            "queues": totals.queues,
            "messages": totals.messages,
            "waiting_receivers": broker.waiting_receivers,
            "fsync": config.fsync if broker.store.kind == "sqlite" else None,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    parsing.check_query(request, set())
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
