"""Receiving from the shell: printing messages as they come, and --follow, which loses nothing.

No click here: the CLI decides what to do; this module does it against the client and stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from mq import Client, MqError
from mqd.protocol import MAX_BATCH

from . import output

FOLLOW_WAIT_SECONDS = 20
FOLLOW_LEASE_SECONDS = 30
FOLLOW_PREFETCH = 10  # messages mqd may push ahead of printing (given back when mqctl stops)

Printer = Callable[[dict[str, Any]], None]


def printer(as_json: bool, null: bool) -> Printer:
    """Prints a message's content (or, with ``as_json``, the whole message) and a terminator."""
    end = "\0" if null else "\n"

    def show(message: dict[str, Any]) -> None:
        text = output.json_line(message) if as_json else output.content_text(message["content"])
        sys.stdout.buffer.write((text + end).encode("utf-8", "backslashreplace"))

    return show


def receive(
    client: Client, queue: str, count: int | None, wait: float, lease: float | None, show: Printer
) -> int:
    """Up to ``count`` messages (one without), waiting ``wait`` seconds for the first; how many."""
    remaining = count or 1
    received = 0
    while remaining > 0:
        batch = client.receive(
            queue,
            count=min(remaining, MAX_BATCH) if count else None,
            wait=wait if not received else 0,
            lease=lease,
        )
        batch = [message.data for message in batch]
        if not batch:
            break
        for message in batch:
            show(message)
        received += len(batch)
        remaining -= len(batch)
    sys.stdout.flush()
    return received


def follow(client: Client, queue: str, limit: int | None, lease: float | None, show: Printer) -> int:
    """Print messages as they come until interrupted; how many. Unless ``lease`` asks to ack by
    hand, they come on a stream: each is leased, printed, flushed, then acknowledged; when mqctl
    stops (Ctrl-C, a closed pipe, ``--count`` reached) the stream closes and mqd gives back at
    once what it held for us but we did not print. Nothing is lost."""
    if lease is not None:
        return _follow_acking_by_hand(client, queue, limit, lease, show)
    received = 0
    prefetch = FOLLOW_PREFETCH if limit is None else min(limit, FOLLOW_PREFETCH)
    printed = None  # shown, not yet acknowledged
    with client.consume(queue, prefetch=prefetch, lease=FOLLOW_LEASE_SECONDS) as consumer:
        try:
            while limit is None or received < limit:
                message = consumer.get()
                show({k: v for k, v in message.data.items() if k not in ("receipt", "lease_expires_at")})
                sys.stdout.flush()
                printed = message
                _ack_printed(message)
                printed = None
                received += 1
        except KeyboardInterrupt:
            if printed is not None:
                _ack_printed(printed)
            raise
        except BrokenPipeError:
            output.silence_stdout()  # not printed whole: not acknowledged, given back on close
    return received


def _ack_printed(message) -> None:
    try:
        message.ack()
    except MqError as exc:  # its lease ran out while stdout was blocked: it will come again
        sys.stderr.write(f"mqctl: message {message.id} was printed but could not be acknowledged ({exc})\n")


def _follow_acking_by_hand(client: Client, queue: str, limit: int | None, lease: float, show: Printer) -> int:
    """--follow --lease S: print each leased message with its receipt, for the user to settle."""
    received = 0
    try:
        while limit is None or received < limit:
            want = min(100, limit - received) if limit else 100
            for message in client.receive(queue, count=want, wait=FOLLOW_WAIT_SECONDS, lease=lease):
                show(message.data)
                sys.stdout.flush()
                received += 1
    except BrokenPipeError:
        output.silence_stdout()
    return received
