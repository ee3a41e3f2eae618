"""Receiving from the shell: printing messages as they come, and --follow, which loses nothing.

No click here: the CLI decides what to do; this module does it against the client and stdout.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from mq import Client, MqError
from mqd.protocol import MAX_BATCH

from . import output

FOLLOW_WAIT_SECONDS = 20
FOLLOW_LEASE_SECONDS = 30

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
    hand, each is leased, printed, flushed, then acknowledged: a closed pipe or Ctrl-C gives back
    at once what was not printed (Ctrl-C is raised again afterwards), so nothing is lost."""
    received = 0
    auto_ack = lease is None
    batch: list[dict[str, Any]] = []
    printed: dict[str, Any] | None = None  # shown, not yet acknowledged
    try:
        while limit is None or received < limit:
            want = min(100, limit - received) if limit else 100
            batch = [
                message.data
                for message in client.receive(
                    queue, count=want, wait=FOLLOW_WAIT_SECONDS, lease=lease or FOLLOW_LEASE_SECONDS
                )
            ]
            while batch:
                message = batch[0]
                if auto_ack:
                    show({k: v for k, v in message.items() if k not in ("receipt", "lease_expires_at")})
                    sys.stdout.flush()
                    printed = batch.pop(0)
                    client.ack(queue, message["receipt"])
                    printed = None
                else:
                    show(message)
                    sys.stdout.flush()
                    batch.pop(0)
                received += 1
    except KeyboardInterrupt:
        if auto_ack:
            _settle_after_interrupt(client, queue, printed, batch)
        raise
    except BrokenPipeError:
        output.silence_stdout()
    if auto_ack:
        _give_back(client, queue, batch)
    return received


def _settle_after_interrupt(
    client: Client, queue: str, printed: dict[str, Any] | None, unprinted: list[dict[str, Any]]
) -> None:
    """After Ctrl-C: acknowledge what was printed, give back what was not (including a reply
    that was arriving as the receive was interrupted)."""
    reply = client.interrupted_reply
    client.interrupted_reply = None
    if reply is not None and reply.status == 200:
        unprinted = unprinted + (reply.json() or {}).get("messages", [])
    client.close()  # the connection an interrupted request was on is out of step
    if printed is not None:
        with contextlib.suppress(MqError):  # else its lease runs out and it comes back
            client.ack(queue, printed["receipt"])
    _give_back(client, queue, unprinted)


def _give_back(client: Client, queue: str, messages: list[dict[str, Any]]) -> None:
    """Release leased messages that were never printed, so others get them at once."""
    for message in messages:
        try:
            client.release(queue, message["receipt"])
        except MqError:
            return  # the lease runs out on its own
