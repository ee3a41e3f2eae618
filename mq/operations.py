"""Every HTTP operation of mqd, written once for both clients.

Each method builds a ``Call`` (the request, and how to read its reply) and hands it to
``self._call``: the synchronous ``Client`` carries it out and returns the result, the
``AsyncClient`` returns an awaitable of it. So ``client.send("jobs", 1)`` and ``await
aclient.send("jobs", 1)`` are one definition, as redis-py's twins are one shape.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .errors import ApiError, error_of
from .messages import Message, decode, encode


class Call(NamedTuple):
    method: str
    path: str
    read: Callable[[int, bytes], Any]  # (status, body) -> the result, for a status below 400
    body: bytes | None = None
    wait: float = 0.0  # seconds the request may wait at mqd (a long-poll), beyond the timeout


def quote(text: str) -> str:
    """Percent-encode a path segment."""
    return urllib.parse.quote(text, safe="")


def queue_path(name: str, rest: str = "") -> str:
    return "/queues/" + quote(name) + rest


def refusal(status: int, raw: bytes) -> ApiError:
    """The exception for mqd's error reply (its JSON, or whatever else came back)."""
    try:
        body = decode(raw) if raw else None
    except ValueError:
        body = None
    return error_of(status, body, f"mqd answered {status} {raw[:200]!r}")


def _json(status: int, body: bytes) -> Any:
    return decode(body) if body else None


def _nothing(status: int, body: bytes) -> None:
    return None


def message_body(
    content: Any = None,
    *,
    json_text: str | None = None,
    delay: float = 0,
    key: str | None = None,
    priority: int = 0,
    group: str | None = None,
    ttl: float | None = None,
) -> str:
    """A message as JSON text; ``json_text`` is content already written as JSON (kept as is)."""
    text = '{"content":' + (json_text if json_text is not None else encode(content))
    if delay:
        text += f',"delay":{float(delay)!r}'
    if key is not None:
        text += ',"key":' + json.dumps(key)
    if priority:
        text += f',"priority":{int(priority)}'
    if group is not None:
        text += ',"group":' + json.dumps(group)
    if ttl is not None:
        text += f',"ttl":{float(ttl)!r}'
    return text + "}"


SETTINGS = (
    "max_attempts",
    "dead_letter_queue",
    "dedup_window",
    "message_ttl",
    "max_messages",
    "max_bytes",
    "overflow",
    "max_in_flight",
    "max_rate",
)


class Operations:
    """The operations; a subclass supplies ``_call``."""

    def _call(self, call: Call) -> Any:
        raise NotImplementedError

    # -- the daemon ------------------------------------------------------------------------------

    def status(self):
        """mqd's health, identity and totals (GET /status)."""
        return self._call(Call("GET", "/status", _json))

    def metrics(self):
        """The Prometheus text of GET /metrics."""
        return self._call(Call("GET", "/metrics", lambda status, body: body.decode()))

    # -- queues ----------------------------------------------------------------------------------

    def create_queue(self, name: str, **settings: Any):
        """Declare a queue with any of ``SETTINGS`` (docs/api.md, docs/policies.md); (the queue,
        whether it was created now). Declaring it again with the same settings is harmless; with
        others, Conflict (change them with ``update_queue``)."""
        _check_settings(settings)
        body = {"name": name, **{k: v for k, v in settings.items() if v is not None}}
        return self._call(
            Call("POST", "/queues", lambda status, raw: (decode(raw), status == 201), _dumps(body))
        )

    def update_queue(self, name: str, **changes: Any):
        """Change some of a queue's settings (None clears a limit); the queue as it is now."""
        _check_settings(changes)
        return self._call(Call("PATCH", queue_path(name), _json, _dumps(changes)))

    def list_queues(self):
        """Every queue with its counts."""
        return self._call(Call("GET", "/queues", lambda status, raw: decode(raw)["queues"]))

    def queue(self, name: str):
        """A queue's settings and counts."""
        return self._call(Call("GET", queue_path(name), _json))

    def delete_queue(self, name: str):
        return self._call(Call("DELETE", queue_path(name), _nothing))

    def purge(self, name: str):
        """Remove every message of the queue; how many."""
        return self._call(
            Call("DELETE", queue_path(name, "/messages"), lambda status, raw: decode(raw)["purged"])
        )

    def redrive(self, name: str):
        """Move dead letters back where they came from: {"moved": n, "queues": {name: n}}."""
        return self._call(Call("POST", queue_path(name, "/redrive"), _json))

    # -- exchanges: one send, a copy in each queue bound -----------------------------------------

    def bind_exchange(self, name: str, queues: Iterable[str]):
        """Make exchange ``name`` deliver into exactly ``queues`` (declared if new); (the exchange,
        whether it was created now)."""
        body = _dumps({"queues": list(queues)})
        return self._call(
            Call("PUT", "/exchanges/" + quote(name), lambda status, raw: (decode(raw), status == 201), body)
        )

    def exchanges(self):
        """Every exchange: [{"name": ..., "queues": [...]}]."""
        return self._call(Call("GET", "/exchanges", lambda status, raw: decode(raw)["exchanges"]))

    def delete_exchange(self, name: str):
        return self._call(Call("DELETE", "/exchanges/" + quote(name), _nothing))

    def publish(self, exchange: str, content: Any = None, **options: Any):
        """Send one message into every queue of ``exchange``, in one commit (all or nothing);
        its ids by queue. Options as for ``send``."""
        body = message_body(content, **options).encode()

        def ids(status: int, raw: bytes) -> dict[str, int]:
            return {queue: sent["ids"][0] for queue, sent in decode(raw)["queues"].items()}

        return self._call(Call("POST", "/exchanges/" + quote(exchange) + "/messages", ids, body))

    # -- moving messages between daemons ---------------------------------------------------------

    def export(self, after: int = 0, count: int = 1000):
        """A page of every message of every queue, in every state, by id: (the messages as
        dicts, the ``after`` of the next page or None). mqctl export writes them out."""
        return self._call(
            Call(
                "GET",
                f"/export?after={int(after)}&count={int(count)}",
                lambda status, raw: (lambda page: (page["messages"], page["next_after"]))(decode(raw)),
            )
        )

    def import_messages(self, source: str, messages: list[dict]):
        """Store exported messages again, each under a new id; those ``source`` has stored in
        their queue already are skipped: {"imported": n, "skipped": m}."""
        items = ",".join(encode(message, writable=True) for message in messages)
        body = '{"source":' + json.dumps(source) + ',"messages":[' + items + "]}"
        return self._call(Call("POST", "/import", _json, body.encode()))

    # -- messages --------------------------------------------------------------------------------

    def send(
        self,
        queue: str,
        content: Any = None,
        *,
        json_text: str | None = None,
        delay: float = 0,
        key: str | None = None,
        priority: int = 0,
        group: str | None = None,
        ttl: float | None = None,
    ):
        """Send one message (any JSON value; or ``json_text``, its JSON as written, kept as is);
        its id once it is durable. With ``key``, a repeat within the queue's dedup window stores
        nothing and returns the first one's id. ``priority`` (0-9), ``group`` and ``ttl``: see
        docs/policies.md."""
        body = message_body(
            content, json_text=json_text, delay=delay, key=key, priority=priority, group=group, ttl=ttl
        ).encode()
        return self._call(
            Call("POST", queue_path(queue, "/messages"), lambda status, raw: decode(raw)["id"], body)
        )

    def send_many(self, queue: str, contents: Iterable[Any], *, encoded: bool = False):
        """Send a batch, all or nothing (up to 1000); their ids in order. With ``encoded``, each
        item is already a message's JSON (bytes, as ``message_body`` writes it)."""
        items = list(contents) if encoded else [message_body(c).encode() for c in contents]
        body = b'{"messages":[' + b",".join(items) + b"]}"
        return self._call(
            Call("POST", queue_path(queue, "/messages"), lambda status, raw: decode(raw)["ids"], body)
        )

    def receive(self, queue: str, *, count: int | None = None, wait: float = 0, lease: float | None = None):
        """Up to ``count`` messages (one without it), oldest first, waiting up to ``wait`` seconds
        for the first; removed, or leased for ``lease`` seconds (then ack, release or extend
        each). [] when there was none."""
        query = [f"count={count}"] if count is not None else []
        if wait:
            query.append(f"wait={float(wait)!r}")
        if lease is not None:
            query.append(f"lease={float(lease)!r}")
        path = queue_path(queue, "/messages") + ("?" + "&".join(query) if query else "")

        def read(status: int, raw: bytes) -> list[Message]:
            if status == 204:
                return []
            body = decode(raw)
            return [self._message(queue, m) for m in (body["messages"] if count is not None else [body])]

        return self._call(Call("GET", path, read, wait=wait))

    def peek(self, queue: str, count: int = 1):
        """The next ready messages, left in place."""

        def read(status: int, raw: bytes) -> list[Message]:
            return [] if status == 204 else [Message(queue, m) for m in decode(raw)["messages"]]

        return self._call(Call("GET", queue_path(queue, f"/peek?count={count}"), read))

    def ack(self, queue: str, receipt: str):
        """Acknowledge a leased message: it is gone. ReceiptNotFound if its lease has ended."""
        return self._call(Call("DELETE", queue_path(queue, "/messages/" + quote(receipt)), _nothing))

    def release(self, queue: str, receipt: str, delay: float = 0):
        """End a lease early: the message is ready again (after ``delay`` seconds)."""
        body = _dumps({"delay": delay}) if delay else None
        return self._call(
            Call("POST", queue_path(queue, f"/messages/{quote(receipt)}/release"), _nothing, body)
        )

    def extend(self, queue: str, receipt: str, lease: float):
        """Make a lease end ``lease`` seconds from now; the new expiry."""
        path = queue_path(queue, f"/messages/{quote(receipt)}/extend")
        return self._call(
            Call("POST", path, lambda status, raw: decode(raw)["lease_expires_at"], _dumps({"lease": lease}))
        )

    def _message(self, queue: str, data: dict[str, Any]) -> Message:
        return Message(queue, data, self._settle)

    def _settle(self, how: str, message: Message, *args: Any):
        return getattr(self, how)(message.queue, message.receipt, *args)


def _check_settings(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown queue setting {unknown[0]!r}; expected one of {', '.join(SETTINGS)}")


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
