"""Turning requests into domain values: JSON bodies, query parameters, queue names, messages.

Everything a client sends is checked here, once, with the field definitions of contract.py; what
does not fit becomes InvalidArgument with a sentence that names the field, says what it should be
and what arrived (or, for a body that is not JSON at all, 415), which the API turns into the
reply. So nothing a store could not keep ever reaches one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from . import contract, jsontext, protocol
from .contract import quoted
from .errors import InvalidArgument
from .model import ExportedMessage, NewMessage, QueueSettings


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
    try:
        raw = await request.read()
    except web.RequestPayloadError:  # a Content-Encoding the body does not follow
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "")
        raise InvalidArgument(
            f"The request body does not match its Content-Encoding {quoted(encoding)}."
        ) from None
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
        raise InvalidArgument(f"Unknown {kind} {quoted(unknown[0])}; expected: {expected}.")


def check_query(request: web.Request, allowed: tuple[contract.Number, ...] = ()) -> None:
    """Refuse unknown (misspelt) and repeated query parameters."""
    if not request.query_string:
        return
    reject_unknown(request.query, {field.name for field in allowed}, "query parameter")
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise InvalidArgument(f"Query parameter '{name}' is given more than once.")


def query(request: web.Request, field: contract.Number) -> float | int | None:
    """The query parameter as a number within its field's range, or None if it is absent."""
    text = request.query.get(field.name)
    return None if text is None else field.parse_text(text)


def queue_name(value: Any) -> str:
    return contract.QUEUE_NAME.parse(value)


def settings(body: dict[str, Any]) -> QueueSettings:
    """A declaration's settings: those given, checked; the defaults for the others."""
    return QueueSettings(
        **changes({name: value for name, value in body.items() if name != "name"}, clear=False)
    )


def changes(body: dict[str, Any], *, clear: bool = True) -> dict[str, Any]:
    """The settings named in ``body``, checked. With ``clear`` (a change), null clears a limit
    and sets the others back to their defaults."""
    found: dict[str, Any] = {}
    for name, value in body.items():
        field = contract.SETTINGS_FIELDS[name]
        if value is None and clear:
            found[name] = None if name in contract.CLEARABLE else _DEFAULTS[name]
        else:
            found[name] = field.parse(value)
    return found


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(QueueSettings)}


def binding(body: dict[str, Any]) -> list[str]:
    """The queues of an exchange's binding, checked."""
    queues = body.get("queues")
    if not isinstance(queues, list) or not 1 <= len(queues) <= contract.MAX_BOUND_QUEUES:
        raise InvalidArgument(f"'queues' must be a list of 1 to {contract.MAX_BOUND_QUEUES} queue names.")
    return [queue_name(queue) for queue in queues]


SEND_FIELDS = {"content", "messages", *contract.MESSAGE_FIELDS}
MESSAGE_FIELDS = frozenset({"content", *contract.MESSAGE_FIELDS})


async def read_send(request: web.Request) -> tuple[list[NewMessage], bool]:
    """The messages of a send, and whether it was a batch. Each content is the JSON text the
    client wrote (see jsontext.py), never a value decoded and encoded again."""
    given = request.headers.getall(protocol.IDEMPOTENCY_KEY_HEADER, [])
    if len(given) > 1:
        raise InvalidArgument(f"The {protocol.IDEMPOTENCY_KEY_HEADER} header is given more than once.")
    header_key = (
        None if not given else contract.KEY.parse(given[0], f"The {protocol.IDEMPOTENCY_KEY_HEADER} header")
    )
    document = await read_document(request)
    body = object_of(document, SEND_FIELDS)
    return send_of(document[0], body, header_key)


def send_of(text: str, body: dict[str, Any], header_key: str | None = None) -> tuple[list[NewMessage], bool]:
    """The messages of a send body (one message, or ``messages``: a batch), and whether it was a
    batch; ``text`` is the JSON text ``body`` was decoded from (contents are taken from it as
    written). A stream's publish frame is such a body too, with the frame's own fields beside."""
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
            messages.append(NewMessage._make((content, 0.0, None, 0, None, None)))
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
    delay = contract.DELAY.parse(item.get("delay", 0))
    key = contract.KEY.parse(item["key"], f"'key' of {where}") if "key" in item else header_key
    priority = contract.PRIORITY.parse(item["priority"]) if "priority" in item else 0
    group = contract.GROUP.parse(item["group"], f"'group' of {where}") if "group" in item else None
    ttl = contract.TTL.parse(item["ttl"]) if "ttl" in item else None
    return NewMessage(content, delay, key, priority, group, ttl)


IMPORT_FIELDS = {"source", "messages"}
IMPORT_ITEM_FIELDS = frozenset({"content", *contract.EXPORTED_FIELDS})
REQUIRED_IMPORT_ITEM_FIELDS = ("queue", "content", "id", "attempts", "enqueued_at", "visible_at")


async def read_import(request: web.Request) -> tuple[str, list[ExportedMessage]]:
    """An import's source and messages, as an export gave them (contents as written)."""
    document = await read_document(request)
    body = object_of(document, IMPORT_FIELDS)
    if "source" not in body:
        raise InvalidArgument(
            "An import needs 'source': where the messages come from (mqctl export gives one)."
        )
    source = contract.SOURCE.parse(body["source"])
    items = body.get("messages")
    if not isinstance(items, list) or not 1 <= len(items) <= protocol.MAX_BATCH:
        raise InvalidArgument(f"'messages' must be a list of 1 to {protocol.MAX_BATCH} exported messages.")
    try:
        contents = jsontext.batch_contents(document[0])
    except jsontext.NestedTooDeeply as exc:
        raise InvalidArgument(f"Cannot store the content: {exc}.") from None
    fields = contract.EXPORTED_FIELDS
    messages: list[ExportedMessage] = []
    for index, (item, content) in enumerate(zip(items, contents, strict=True)):
        where = ItemName(index)
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where} must be a JSON object, as an export gives it.")
        reject_unknown(item, IMPORT_ITEM_FIELDS, f"field in {where}")
        missing = [name for name in REQUIRED_IMPORT_ITEM_FIELDS if name not in item]
        if missing or content is None:
            raise InvalidArgument(f"{where} has no '{(missing or ['content'])[0]}'.")
        message_id = fields["id"].parse(item["id"])
        origin = item.get("dead_letter_source")
        messages.append(
            ExportedMessage(
                fields["queue"].parse(item["queue"]),
                message_id,
                content,
                fields["attempts"].parse(item["attempts"]),
                fields["enqueued_at"].parse(item["enqueued_at"]),
                fields["visible_at"].parse(item["visible_at"]),
                None if origin is None else fields["dead_letter_source"].parse(origin),
                fields["priority"].parse(item.get("priority", 0)),
                _optional(
                    item, "group", functools.partial(fields["group"].parse, source=f"'group' of {where}")
                ),
                _optional(item, "expires_at", fields["expires_at"].parse),
            )
        )
    return source, messages


def _optional(item: dict[str, Any], name: str, parse) -> Any:
    value = item.get(name)
    return None if value is None else parse(value)


class ItemName:
    """ "messages[i]", spelled out only if an error message needs it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"messages[{self.index}]"

    def __format__(self, spec: str) -> str:
        return str(self)
