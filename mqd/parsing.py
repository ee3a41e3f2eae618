"""Turning requests into domain values: JSON bodies, query parameters, queue names, messages.

Everything a client sends is checked here, once; what does not fit becomes InvalidArgument with
a sentence that names the field and says what it should be (or, for a body that is not JSON at
all, 415), which the API turns into the reply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from . import protocol, wire
from .errors import InvalidArgument
from .store.base import NewMessage, QueueSettings


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or None when there is none. A body with an explicit non-JSON
    content type is refused (415): a browser form must never be read as a message."""
    if not request.body_exists:
        return None
    if hdrs.CONTENT_TYPE in request.headers and not is_json_type(request.content_type):
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
    reject_unknown(body, allowed, "field")
    return body


def reject_unknown(given: Mapping[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidArgument(f"Unknown {kind} '{unknown[0]}'; expected: {expected}.")


def number(value: Any, name: str, low: float, high: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"'{name}' must be a number from {low:g} to {high:g}.")
    if integer and value != int(value):
        raise InvalidArgument(f"'{name}' must be a whole number from {low:g} to {high:g}.")
    if not low <= value <= high:
        raise InvalidArgument(f"'{name}' must be from {low:g} to {high:g}, not {value:g}.")
    return int(value) if integer else float(value)


def query_number(
    request: web.Request, name: str, low: float, high: float, *, integer: bool = False
) -> float | int | None:
    """The query parameter as a number within [low, high], or None if it is absent."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise InvalidArgument(f"Query parameter '{name}' must be {kind} from {low:g} to {high:g}.") from None
    return number(value, f"{name}", low, high, integer=integer)


def check_query(request: web.Request, allowed: set[str]) -> None:
    """Refuse unknown (misspelt) and repeated query parameters."""
    if not request.query_string:
        return
    reject_unknown(request.query, allowed, "query parameter")
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise InvalidArgument(f"Query parameter '{name}' is given more than once.")


def queue_name(value: Any) -> str:
    if not isinstance(value, str) or not protocol.is_valid_queue_name(value):
        shown = value if isinstance(value, str) else wire.dumps(value)
        raise InvalidArgument(f"Invalid queue name {shown!r}: use {protocol.QUEUE_NAME_RULE}.")
    return value


def idempotency_key(value: Any, source: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= protocol.MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidArgument(
            f"{source} must be a string of 1 to {protocol.MAX_IDEMPOTENCY_KEY_LENGTH} characters."
        )
    return value


MESSAGE_FIELDS = frozenset({"content", "delay", "key"})


def new_messages(items: list[Any]) -> list[NewMessage]:
    """A batch's items as messages. Items that are ``{"content": "<a string>"}`` alone, the
    usual batch, take a short path with nothing to check but their shape; the rest go through
    ``new_message``."""
    messages = []
    for index, item in enumerate(items):
        if type(item) is dict and len(item) == 1 and type(item.get("content")) is str:
            messages.append(NewMessage._make((wire.encode_string(item["content"]), 0.0, None)))
        else:
            messages.append(new_message(item, ItemName(index)))
    return messages


def new_message(item: Any, where: str, header_key: str | None = None) -> NewMessage:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where} must be a JSON object with 'content'.")
    if not item.keys() <= MESSAGE_FIELDS:
        reject_unknown(item, MESSAGE_FIELDS, f"field in {where}")
    if "content" not in item:
        raise InvalidArgument(f"{where} has no 'content'.")
    try:
        content = wire.encode_content(item["content"])
    except ValueError as exc:
        raise InvalidArgument(f"Cannot store the content of {where}: {exc}.") from None
    if len(item) == 1:
        return NewMessage(content, 0.0, header_key)  # the common case: no delay, no key of its own
    delay = number(item.get("delay", 0), "delay", 0, protocol.MAX_DELAY_SECONDS)
    key = idempotency_key(item["key"], f"'key' of {where}") if "key" in item else header_key
    return NewMessage(content, delay, key)


class ItemName:
    """ "messages[i]", spelled out only if an error message needs it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"messages[{self.index}]"

    def __format__(self, spec: str) -> str:
        return str(self)


def settings(body: dict[str, Any]) -> QueueSettings:
    max_attempts = dead_letter_queue = None
    if "max_attempts" in body:
        max_attempts = number(body["max_attempts"], "max_attempts", 1, 1000, integer=True)
    if "dead_letter_queue" in body:
        dead_letter_queue = queue_name(body["dead_letter_queue"])
    dedup_window = body.get("dedup_window", protocol.DEFAULT_DEDUP_WINDOW_SECONDS)
    dedup_window = number(dedup_window, "dedup_window", 0, protocol.MAX_DEDUP_WINDOW_SECONDS)
    return QueueSettings(max_attempts, dead_letter_queue, dedup_window)
