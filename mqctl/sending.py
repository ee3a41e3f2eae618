"""Sending from the shell: standard input as records, published in batches on a stream without
reading it all first.

A batch leaves when it is full, or as soon as the input pauses: ``seq 1 100000 | mqctl send q
--lines`` sends full batches of 1,000, while ``tail -f log | mqctl send q --lines`` sends each
line as it comes instead of waiting for 999 more.
"""

from __future__ import annotations

import json
import os
import select
import sys
from collections import deque
from collections.abc import Callable, Iterator

from mqd.protocol import MAX_BATCH

from .output import counted

READ_SIZE = 1 << 16
MAX_BATCH_MESSAGES = MAX_BATCH
MAX_BATCH_BYTES = 512 * 1024  # well under the daemon's default 1 MiB body limit
BATCHES_IN_FLIGHT = 8  # sent and not yet confirmed: the stream's window


class InputError(Exception):
    """A record of standard input cannot be sent as it is."""


def records(fd: int, separator: bytes) -> Iterator[tuple[bytes, bool]]:
    """(record, whether more input is ready right now), one per separator-terminated record;
    a last record without a separator counts too."""
    pending = b""
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            if pending:
                yield pending, False
            return
        pending += chunk
        parts = pending.split(separator)
        pending = parts.pop()
        if parts:
            more = bool(pending) or _readable(fd)
            for part in parts[:-1]:
                yield part, True
            yield parts[-1], more


def _readable(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def encoder(as_json: bool, noun: str) -> Callable[[bytes, int], bytes]:
    """Turns record number n into the JSON of one batch item, ``{"content": ...}``."""

    def encode(record: bytes, number: int) -> bytes:
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"{noun} {number} of standard input is not UTF-8 text; send binary data base64-encoded"
            ) from None
        if not as_json:
            return b'{"content":' + json.dumps(text).encode() + b"}"
        problem = json_problem(text)
        if problem:
            raise InputError(f"{noun} {number} of standard input is not JSON ({problem})")
        return b'{"content":' + record + b"}"  # as written: mqd keeps its numbers exactly

    return encode


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def json_problem(text: str) -> str | None:
    """Why ``text`` is not exactly one JSON value (as mqd reads JSON), or None if it is."""
    try:
        json.loads(text, parse_constant=_reject_constant, parse_int=len, parse_float=len)
    except RecursionError:
        return "it is nested too deeply"
    except ValueError as exc:
        return str(exc)
    return None


def batches(fd: int, separator: bytes, as_json: bool) -> Iterator[list[bytes]]:
    """Encoded batch items, a batch at a time (see the module's docstring for when one leaves)."""
    encode = encoder(as_json, "line" if separator == b"\n" else "record")
    batch: list[bytes] = []
    size = 0
    for number, (record, more) in enumerate(records(fd, separator), start=1):
        item = encode(record, number)
        batch.append(item)
        size += len(item) + 1
        if len(batch) >= MAX_BATCH_MESSAGES or size >= MAX_BATCH_BYTES or not more:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_one_message(stdin) -> str:
    """All of standard input as one message, without its final newline (as ``$(...)`` does)."""
    if stdin.isatty():
        sys.stderr.write("mqctl: reading the message from standard input; end it with Ctrl-D\n")
    try:
        text = stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("standard input is not UTF-8 text; send binary data base64-encoded") from None
    return text[:-1] if text.endswith("\n") else text


def send_stream(client, queue: str, separator: bytes, as_json: bool, options: dict) -> int:
    """Send standard input as messages, a batch at a time on a stream, up to BATCHES_IN_FLIGHT
    unconfirmed; how many. If it fails half-way (mqd refuses a batch, or the stream breaks: the
    batches then in flight may or may not have been stored), says on stderr how many were
    confirmed before the error, then lets the error go on. ``options``: the fields every
    message gets (delay, priority, group, ttl)."""
    sent = 0
    suffix = "".join(f',"{name}":{json.dumps(value)}' for name, value in options.items()).encode() + b"}"
    suffix = suffix if options else None
    in_flight: deque = deque()
    try:
        with client.publisher(window=BATCHES_IN_FLIGHT) as publisher:
            for batch in batches(sys.stdin.fileno(), separator, as_json):
                if suffix:
                    batch = [item[:-1] + suffix for item in batch]
                in_flight.append(publisher.send_batch_nowait(queue, [item.decode() for item in batch]))
                while in_flight and (in_flight[0].done() or len(in_flight) > BATCHES_IN_FLIGHT):
                    sent += len(in_flight.popleft().result())
            while in_flight:
                sent += len(in_flight.popleft().result())
    except Exception:
        for future in in_flight:
            future.cancel()
        if sent:
            sys.stderr.write(f"mqctl: {counted(sent, 'message')} sent before this error\n")
        raise
    return sent
