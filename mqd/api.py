"""The HTTP API: parse each request, call the broker, shape the reply.

The routes are contract.ROUTES; each handler here is named after its route's operationId
(createQueue: create_queue).
Requests are read and checked by parsing.py. Every error leaves through ``response_for_error``
(called by the application's one middleware), the one place where errors become statuses and
every failure becomes ``{"error": "<one sentence>", "code": "<a stable code>"}``; a handler never
builds an error response itself, and nothing a client sends can produce a traceback or a 500.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from . import __version__, contract, parsing, protocol, replies
from .appkeys import BROKER, CONFIG, METRICS
from .broker import Broker
from .errors import (
    DataCorrupt,
    DataDirectoryError,
    ExchangeNotFound,
    Forbidden,
    InternalError,
    InvalidArgument,
    MqError,
    NotSupported,
    QueueConflict,
    QueueFull,
    QueueNotFound,
    ReceiptNotFound,
    ShuttingDown,
    StorageFailed,
    StorageFull,
    StorageUnavailable,
    TooManyStreams,
    TooManyWaiters,
    Unauthorized,
)
from .model import parse_receipt

log = logging.getLogger("mqd.api")

STATUS_OF_ERROR: dict[type[MqError], int] = {
    InvalidArgument: 400,
    Unauthorized: 401,
    Forbidden: 403,
    QueueNotFound: 404,
    ExchangeNotFound: 404,
    ReceiptNotFound: 404,
    QueueConflict: 409,
    NotSupported: 409,
    QueueFull: 429,
    TooManyWaiters: 503,
    TooManyStreams: 503,
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
    TooManyStreams: {hdrs.RETRY_AFTER: "1"},
    ShuttingDown: {hdrs.RETRY_AFTER: "5"},
    StorageUnavailable: {hdrs.RETRY_AFTER: "1"},
    StorageFull: {hdrs.RETRY_AFTER: "5"},
    QueueFull: {hdrs.RETRY_AFTER: "1"},
    Unauthorized: {hdrs.WWW_AUTHENTICATE: 'Bearer realm="mq"'},
}
# aiohttp's own refusals, by status.
CODE_OF_STATUS = {
    404: "route_not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    426: "upgrade_required",
}
# 5xx answers that refuse work for a while (retry later) rather than report a fault of mqd's own;
# a failed store was logged CRITICAL once, when it failed.
REFUSALS = {TooManyWaiters, TooManyStreams, ShuttingDown, StorageUnavailable, StorageFull, StorageFailed}
JSON_HEADERS = {hdrs.CONTENT_TYPE: "application/json; charset=utf-8"}


# -- replies and errors -------------------------------------------------------------------------


def json_reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON reply, ended by a newline so that a shell prompt after curl starts on its own line."""
    text = body if isinstance(body, str) else replies.dumps(body)
    all_headers = JSON_HEADERS if headers is None else {**JSON_HEADERS, **headers}
    return web.Response(status=status, body=(text + "\n").encode(), headers=all_headers)


def error_response(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_reply({"error": message, "code": code}, status, headers)


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
    """The one place an exception becomes a reply: the status for its class, one sentence, and
    the error's code."""
    if isinstance(exc, MqError):
        kind = next(k for k in type(exc).__mro__ if k in STATUS_OF_ERROR or k is MqError)
        status = STATUS_OF_ERROR.get(kind, 500)
        if kind in REFUSALS:  # the disk's or the moment's, not mqd's own failure
            log.warning("%s %s refused: %s", request.method, request.path, exc)
        elif status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, str(exc), exc.code, EXTRA_HEADERS.get(kind))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k in (hdrs.ALLOW, hdrs.RETRY_AFTER)}
        code = CODE_OF_STATUS.get(exc.status, "invalid_request")
        return error_response(exc.status, _describe_http_error(request, exc), code, headers)
    if isinstance(exc, web.HTTPException):
        raise exc  # a redirect or success raised as an exception: not an error
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, str(InternalError()), InternalError.code)


def _broker(request: web.Request) -> Broker:
    return request.app[BROKER]


def _name(request: web.Request) -> str:
    return parsing.queue_name(request.match_info["name"])


async def _receipt(request: web.Request) -> tuple[str, str]:
    """The queue and the receipt of the path. A receipt that cannot be one mqd handed out is
    unknown without asking the store, but an unknown queue still says so first."""
    name = _name(request)
    receipt = request.match_info["receipt"]
    if parse_receipt(receipt) is None:
        await _broker(request).queue(name)
        raise ReceiptNotFound(receipt)
    return name, receipt


def _queue_reply(request: web.Request, stats, status: int = 200) -> web.Response:
    counters = _broker(request).counters_for(stats.queue.name)
    return json_reply(replies.queue_dict(stats, _broker(request).clock(), counters), status)


# -- queues -------------------------------------------------------------------------------------


async def create_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    body = await parsing.read_object(request, set(contract.QUEUE_FIELDS))
    if "name" not in body:
        raise InvalidArgument("The queue needs a 'name'.")
    name = parsing.queue_name(body["name"])
    _, created = await _broker(request).create_queue(name, parsing.settings(body))
    return _queue_reply(request, await _broker(request).queue_stats(name), 201 if created else 200)


async def update_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    name = _name(request)
    body = await parsing.read_object(request, set(contract.SETTINGS_FIELDS))
    if not body:
        raise InvalidArgument(f"Name the settings to change: {', '.join(contract.SETTINGS_FIELDS)}.")
    await _broker(request).update_queue(name, parsing.changes(body))
    return _queue_reply(request, await _broker(request).queue_stats(name))


# -- exchanges ----------------------------------------------------------------------------------


async def list_exchanges(request: web.Request) -> web.Response:
    parsing.check_query(request)
    found = await _broker(request).exchanges()
    return json_reply({"exchanges": [{"name": name, "queues": queues} for name, queues in found.items()]})


async def bind_exchange(request: web.Request) -> web.Response:
    parsing.check_query(request)
    name = _name(request)
    queues = parsing.binding(await parsing.read_object(request, {"queues"}))
    created = await _broker(request).bind(name, queues)
    return json_reply({"name": name, "queues": list(dict.fromkeys(queues))}, 201 if created else 200)


async def delete_exchange(request: web.Request) -> web.Response:
    parsing.check_query(request)
    await _broker(request).unbind(_name(request))
    return web.Response(status=204)


async def publish_messages(request: web.Request) -> web.Response:
    parsing.check_query(request)
    name = _name(request)
    messages, _ = await parsing.read_send(request)
    results = await _broker(request).publish(name, messages)
    body = ",".join(
        f"{replies.dumps(queue)}:{replies.ids_json(r.ids, r.duplicates)}" for queue, r in results.items()
    )
    return json_reply('{"queues":{' + body + "}}", 201)


async def list_queues(request: web.Request) -> web.Response:
    parsing.check_query(request)
    broker = _broker(request)
    now = broker.clock()
    queues = [
        replies.queue_dict(s, now, broker.counters_for(s.queue.name)) for s in await broker.list_queues()
    ]
    return json_reply({"queues": queues})


async def get_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    return _queue_reply(request, await _broker(request).queue_stats(_name(request)))


async def delete_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    await _broker(request).delete_queue(_name(request))
    return web.Response(status=204)


async def purge_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    return json_reply({"purged": await _broker(request).purge(_name(request))})


async def redrive_queue(request: web.Request) -> web.Response:
    parsing.check_query(request)
    await parsing.read_object(request, set(), required=False)
    moved = await _broker(request).redrive(_name(request))
    return json_reply({"moved": sum(moved.values()), "queues": moved})


# -- messages -----------------------------------------------------------------------------------


async def send_messages(request: web.Request) -> web.Response:
    parsing.check_query(request)
    name = _name(request)
    messages, batch = await parsing.read_send(request)
    result = await _broker(request).send(name, messages)
    if batch:
        return json_reply(replies.ids_json(result.ids, result.duplicates), 201)
    if result.duplicates[0]:
        return json_reply({"id": result.ids[0], "duplicate": True}, 200)
    return json_reply({"id": result.ids[0]}, 201)


async def receive_messages(request: web.Request) -> web.StreamResponse:
    parsing.check_query(request, (contract.COUNT, contract.WAIT, contract.LEASE))
    name = _name(request)
    count = parsing.query(request, contract.COUNT)
    wait = parsing.query(request, contract.WAIT.with_high(request.app[CONFIG].max_wait)) or 0.0
    lease = parsing.query(request, contract.LEASE)
    broker = _broker(request)
    connected = functools.partial(_connected, request)
    deliveries = await broker.receive(name, count=count or 1, lease=lease, wait=wait, still_there=connected)
    if not deliveries:
        return web.Response(status=204)
    body = replies.delivery_json(deliveries[0]) if count is None else replies.deliveries_json(deliveries)
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


async def peek_messages(request: web.Request) -> web.Response:
    parsing.check_query(request, (contract.COUNT,))
    count = parsing.query(request, contract.COUNT) or 1
    deliveries = await _broker(request).peek(_name(request), count)
    if not deliveries:
        return web.Response(status=204)
    return json_reply(replies.deliveries_json(deliveries))


async def export_messages(request: web.Request) -> web.Response:
    parsing.check_query(request, (contract.AFTER, contract.COUNT))
    after = parsing.query(request, contract.AFTER) or 0
    count = parsing.query(request, contract.COUNT) or protocol.MAX_BATCH
    messages, next_after = await _broker(request).export(after, count)
    return json_reply(replies.exported_json(messages, next_after))


async def import_messages(request: web.Request) -> web.Response:
    parsing.check_query(request)
    source, messages = await parsing.read_import(request)
    imported = await _broker(request).import_messages(source, messages)
    return json_reply({"imported": imported, "skipped": len(messages) - imported})


async def ack_message(request: web.Request) -> web.Response:
    parsing.check_query(request)
    name, receipt = await _receipt(request)
    await _broker(request).ack(name, receipt)
    return web.Response(status=204)


async def release_message(request: web.Request) -> web.Response:
    parsing.check_query(request)
    body = await parsing.read_object(request, set(contract.RELEASE_FIELDS), required=False)
    delay = contract.DELAY.parse(body.get("delay", 0))
    name, receipt = await _receipt(request)
    await _broker(request).release(name, receipt, delay)
    return web.Response(status=204)


async def extend_lease(request: web.Request) -> web.Response:
    parsing.check_query(request)
    body = await parsing.read_object(request, set(contract.EXTEND_FIELDS))
    if "lease" not in body:
        raise InvalidArgument("Extending a lease needs 'lease' (seconds from now).")
    lease = contract.LEASE.parse(body["lease"])
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


async def get_status(request: web.Request) -> web.Response:
    parsing.check_query(request)
    broker = _broker(request)
    config = request.app[CONFIG]
    failure = broker.store.failure()
    if failure is not None:  # unhealthy: say why, with a status a health check notices
        return _unhealthy(request, "failed", failure, StorageFailed.code)
    try:
        totals = await broker.totals()
    except (StorageFailed, StorageUnavailable) as exc:
        return _unhealthy(request, "unavailable", str(exc), exc.code)
    return json_reply(
        {
            "status": "ok",
            **identity(request),
            "uptime_seconds": round(broker.clock() - broker.started_at, 3),
            "queues": totals.queues,
            "messages": totals.messages,
            "waiting_receivers": broker.waiting_receivers,
            "fsync": config.fsync if broker.store.kind == "sqlite" else None,
            "commits": request.app[METRICS].commits(),
        }
    )


def _unhealthy(request: web.Request, status: str, error: str, code: str) -> web.Response:
    """/status's 503: the same identity as a 200, and why (the shape of contract's Failed)."""
    body = {"status": status, "error": error, "code": code, **identity(request)}
    return json_reply(body, 503, EXTRA_HEADERS[StorageUnavailable] if status == "unavailable" else None)


BACKUP_CHUNK_BYTES = 1 << 20


async def backup_store(request: web.Request) -> web.StreamResponse:
    """The store's copy, streamed from the file the store made; the file goes once it is sent,
    or the client has left."""
    parsing.check_query(request)
    backup = await _broker(request).backup()
    try:
        taken = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(backup.taken_at))
        digest = base64.b64encode(bytes.fromhex(backup.sha256)).decode()
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "application/vnd.sqlite3",
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="mq-backup-{taken}.sqlite3"',
                "Mq-Backup-Taken-At": repr(backup.taken_at),
                "Mq-Backup-Highest-Id": str(backup.highest_id),
                "Mq-Backup-Messages": str(backup.messages),
                "Repr-Digest": f"sha-256=:{digest}:",
            }
        )
        response.content_length = backup.size
        await response.prepare(request)
        with open(backup.path, "rb") as copy:
            while chunk := await asyncio.to_thread(copy.read, BACKUP_CHUNK_BYTES):
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    return response  # the client left: nobody to send the rest to
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(backup.path.unlink, missing_ok=True)


async def get_metrics(request: web.Request) -> web.Response:
    parsing.check_query(request)
    text = await request.app[METRICS].render(_broker(request))
    return web.Response(text=text, headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4; charset=utf-8"})


def handler_name(operation: str) -> str:
    """The handler of an operationId: createQueue -> create_queue."""
    return re.sub(r"(?<!^)([A-Z])", lambda match: "_" + match.group(1).lower(), operation)


def add_routes(app: web.Application) -> None:
    """Every route of the contract (but /openapi.json, which openapi.py serves); GET routes take
    no implicit HEAD (a HEAD must never consume)."""
    handlers = globals()
    for route in contract.ROUTES:
        if route.operation in ("getOpenApi", "openStream"):
            continue  # served by openapi.py and streams.py
        handler = handlers[handler_name(route.operation)]
        if route.method == "GET":
            app.router.add_get(route.path, handler, allow_head=False, name=route.operation)
        else:
            app.router.add_route(route.method, route.path, handler, name=route.operation)
