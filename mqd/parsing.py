"""Turning requests into domain values: JSON bodies, query parameters, queue names, messages.

Everything a client sends is checked here, once; what does not fit becomes InvalidArgument with
a sentence that names the field and says what it should be (or, for a body that is not JSON at
all, 415), which the API turns into the reply.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from . import jsontext, protocol
from .errors import InvalidArgument
from .store.base import NewMessage, QueueSettings


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_document(request: web.Request) -> tuple[str, Any] | None:
    """The request's JSON body as (its text, its value), or None when there is none. A body with
    an explicit non-JSON content type is refused (415): a browser form must never be read as a
    message."""
    if not request.body_exists:
        return None
    if hdrs.CONTENT_TYPE in request.headers and not is_json_type(request.content_type):
        raise web.HTTPUnsupportedMediaType(
            text=f"Bodies must be JSON (application/json), not {request.content_type}."
        )
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("The request body is not valid UTF-8 JSON.") from None
    if not text.strip():
        return None
    try:
        return text, jsontext.decode(text)
    except ValueError as exc:
        raise InvalidArgument(f"The request body is not valid JSON: {exc}.") from None


def object_of(
    document: tuple[str, Any] | None, allowed: set[str], *, required: bool = True
) -> dict[str, Any]:
    if document is None:
        if required:
            raise InvalidArgument("The request needs a JSON object body.")
        return {}
    body = document[1]
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    reject_unknown(body, allowed, "field")
    return body


async def read_object(request: web.Request, allowed: set[str], *, required: bool = True) -> dict[str, Any]:
    return object_of(await read_document(request), allowed, required=required)


def reject_unknown(given: Mapping[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidArgument(f"Unknown {kind} {_quoted(unknown[0])}; expected: {expected}.")


SHOWN_CHARACTERS = 40  # of a client's value quoted back in an error


def _quoted(text: str) -> str:
    """A client's string in an error sentence: quoted, escaped, and cut if long."""
    if len(text) > SHOWN_CHARACTERS:
        text = text[:SHOWN_CHARACTERS] + "…"
    return json.dumps(text, ensure_ascii=True)


def describe(value: Any) -> str:
    """What arrived, for an error sentence: 'the string "3"', 'null', 'a list'."""
    if isinstance(value, str):
        return f"the string {_quoted(value)}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if not _is_finite(value):
        return "a number out of range"
    return f"{value:g}"


def number(value: Any, name: str, low: float, high: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _is_finite(value):
        raise InvalidArgument(f"'{name}' must be a number from {low:g} to {high:g}, not {describe(value)}.")
    if integer and value != int(value):
        raise InvalidArgument(f"'{name}' must be a whole number from {low:g} to {high:g}, not {value:g}.")
    if not low <= value <= high:
        raise InvalidArgument(f"'{name}' must be from {low:g} to {high:g}, not {value:g}.")
    return int(value) if integer else float(value)


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


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
        raise InvalidArgument(
            f"Query parameter '{name}' must be {kind} from {low:g} to {high:g}, not {_quoted(text)}."
        ) from None
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
        raise InvalidArgument(f"Invalid queue name ({describe(value)}): use {protocol.QUEUE_NAME_RULE}.")
    return value


_RECEIPT = re.compile(r"[1-9][0-9]{0,17}\.[0-9a-f]{1,64}")  # "<message id>.<lease token>"


def looks_like_receipt(text: str) -> bool:
    """Whether ``text`` has the shape of a receipt mqd hands out (an id below 10**18, a token in
    hex), so nothing else reaches a store."""
    return _RECEIPT.fullmatch(text) is not None


def idempotency_key(value: Any, source: str) -> str:
    """A key every store can keep: valid Unicode (no lone surrogates, which UTF-8 cannot carry)
    and no NUL (which PostgreSQL's text cannot)."""
    if not isinstance(value, str) or not 1 <= len(value) <= protocol.MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidArgument(
            f"{source} must be a string of 1 to {protocol.MAX_IDEMPOTENCY_KEY_LENGTH} characters."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{source} must be valid Unicode text (it has a lone surrogate).") from None
    if "\0" in value:
        raise InvalidArgument(f"{source} must not contain NUL characters.")
    return value


MESSAGE_FIELDS = frozenset({"content", "delay", "key"})
SEND_FIELDS = {"content", "delay", "key", "messages"}


async def read_send(request: web.Request) -> tuple[list[NewMessage], bool]:
    """The messages of a send, and whether it was a batch. Each content is the JSON text the
    client wrote (see jsontext.py), never a value decoded and encoded again."""
    header = request.headers.get(protocol.IDEMPOTENCY_KEY_HEADER)
    header_key = (
        None if header is None else idempotency_key(header, f"The {protocol.IDEMPOTENCY_KEY_HEADER} header")
    )
    document = await read_document(request)
    body = object_of(document, SEND_FIELDS)
    text = document[0]
    try:
        if "messages" in body:
            if len(body) > 1:
                raise InvalidArgument("A batch has only 'messages'; put 'delay' and 'key' in each item.")
            items = body["messages"]
            if not isinstance(items, list) or not 1 <= len(items) <= protocol.MAX_BATCH:
                raise InvalidArgument(f"'messages' must be a list of 1 to {protocol.MAX_BATCH} messages.")
            return new_messages(items, jsontext.batch_contents(text)), True
        if "content" not in body:
            raise InvalidArgument("The body needs 'content' (one message) or 'messages' (a batch).")
        content = jsontext.member_text(text, "content")
    except jsontext.NestedTooDeeply as exc:
        raise InvalidArgument(f"Cannot store the content: {exc}.") from None
    return [new_message(body, content, "the message", header_key)], False


def new_messages(items: list[Any], contents: list[str | None]) -> list[NewMessage]:
    """A batch's items as messages. Items that are ``{"content": ...}`` alone, the usual batch,
    take a short path with nothing to check but their shape; the rest go through
    ``new_message``."""
    messages = []
    for index, (item, content) in enumerate(zip(items, contents, strict=True)):
        if type(item) is dict and len(item) == 1 and content is not None:
            messages.append(NewMessage._make((content, 0.0, None)))
        else:
            messages.append(new_message(item, content, ItemName(index)))
    return messages


def new_message(item: Any, content: str | None, where: str, header_key: str | None = None) -> NewMessage:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where} must be a JSON object with 'content'.")
    if not item.keys() <= MESSAGE_FIELDS:
        reject_unknown(item, MESSAGE_FIELDS, f"field in {where}")
    if "content" not in item or content is None:
        raise InvalidArgument(f"{where} has no 'content'.")
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
