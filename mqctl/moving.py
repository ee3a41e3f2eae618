"""mqctl export and import: queues and their messages as JSON lines, from one mqd to another.

An export is a header (with a ``source`` id of its own), one line per queue (dead-letter queues
before the queues that name them), one line per message in id order (so each queue's order is
kept) with its attempts, its state (``visible_at``: 0 ready, later hidden until then) and, for a
dead letter, the queue it came from; and an end line with the counts, so that a file cut short
is noticed. An import declares the queues and stores the messages in batches; mqd remembers, per
source and queue, the last id it stored, so running the same import again, or again after it was
interrupted, stores nothing twice.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

from mq import Client
from mq.messages import decode, encode
from mqd import __version__

from .sending import InputError

FORMAT = 1
PAGE = 1000
BATCH_BYTES = 512 * 1024  # an import request stays well under mqd's 1 MiB body limit


class ExportError(InputError):
    """A file that is not an export, or one cut short (exit 6, as other input mqd cannot take)."""


def export(client: Client, out: IO[str], queues: Iterable[str] = ()) -> tuple[int, int]:
    """Write every queue (or those named) and its messages to ``out``: (queues, messages)."""
    listed = {queue["name"]: queue for queue in client.list_queues()}
    wanted = set(queues) or set(listed)
    if missing := wanted - set(listed):
        raise ExportError(f"no queue named {sorted(missing)[0]!r} to export")
    for name in list(wanted):  # a queue's dead-letter queue goes with it, and so on down the chain
        while (name := listed[name]["dead_letter_queue"]) is not None and name not in wanted:
            wanted.add(name)
    found = [queue for name, queue in listed.items() if name in wanted]
    header = {
        "mq_export": FORMAT,
        "source": str(uuid.uuid4()),
        "mqd": __version__,
        "exported_at": time.time(),
    }
    out.write(_line(header))
    for queue in _dead_letter_queues_first(found):
        settings = {key: queue[key] for key in ("max_attempts", "dead_letter_queue", "dedup_window")}
        out.write(_line({"queue": {"name": queue["name"], **settings}}))
    count = 0
    for message in _every_message(client):
        if message["queue"] in wanted:
            out.write(_line({"message": message}))
            count += 1
    out.write(_line({"mq_export_end": {"queues": len(found), "messages": count}}))
    return len(found), count


@contextlib.contextmanager
def written(path: str | None) -> Iterator[IO[str]]:
    """Standard output, or ``path``, which appears only once the export is complete (written
    beside it under a temporary name, then renamed)."""
    if path is None:
        yield sys.stdout
        return
    temporary = f"{path}.partial-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _line(record: dict[str, Any]) -> str:
    """One record as UTF-8 can hold it (any content mqd accepted), numbers as sent."""
    return encode(record, writable=True) + "\n"


def _every_message(client: Client) -> Iterator[dict[str, Any]]:
    after: int | None = 0
    while after is not None:
        page, after = client.export(after, PAGE)
        yield from page


def _dead_letter_queues_first(queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each queue after the dead-letter queue it names (a chain of them is declared in order)."""
    by_name = {queue["name"]: queue for queue in queues}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(queue: dict[str, Any]) -> None:
        if queue["name"] in placed:
            return
        placed.add(queue["name"])
        target = by_name.get(queue["dead_letter_queue"] or "")
        if target is not None:
            place(target)
        ordered.append(queue)

    for queue in queues:
        place(queue)
    return ordered


def import_(client: Client, lines: Iterable[str]) -> tuple[int, int, int]:
    """Load an export: (queues declared, messages stored, messages skipped as stored before)."""
    source = None
    queues = imported = skipped = 0
    batch: list[dict[str, Any]] = []
    size = 0
    ended = False

    def flush() -> None:
        nonlocal imported, skipped, batch, size
        if batch:
            result = client.import_messages(source, batch)
            imported += result["imported"]
            skipped += result["skipped"]
        batch, size = [], 0

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _record(number, line)
        if source is None:
            source = _source_of(record)
            continue
        if "message" in record:
            length = len(line.encode("utf-8", "surrogatepass"))
            if batch and (len(batch) == PAGE or size + length > BATCH_BYTES):
                flush()  # before the line that would take the request past mqd's body limit
            batch.append(record["message"])
            size += length
        elif "queue" in record:
            flush()
            queues += _declare(client, number, record["queue"])
        elif "mq_export_end" in record:
            ended = True
        else:
            raise ExportError(f"line {number} is neither a queue nor a message of an export")
    if source is None:
        raise ExportError("the file is empty: no export of mqctl export to import")
    flush()
    if not ended:
        raise ExportError(
            f"the export ends early (no end line): {imported} messages were imported from it; "
            "import the whole file again to complete it (nothing is stored twice)"
        )
    return queues, imported, skipped


def _record(number: int, line: str) -> dict[str, Any]:
    try:
        record = decode(line)
    except ValueError:
        raise ExportError(f"line {number} is not JSON: this is not a file of mqctl export") from None
    if not isinstance(record, dict):
        raise ExportError(f"line {number} is not a record of an export: this is not a file of mqctl export")
    return record


def _source_of(header: dict[str, Any]) -> str:
    if header.get("mq_export") != FORMAT or not isinstance(header.get("source"), str):
        raise ExportError("the first line is no export header: this is not a file of mqctl export")
    return header["source"]


def _declare(client: Client, number: int, settings: Any) -> int:
    try:
        client.create_queue(
            settings["name"],
            max_attempts=settings["max_attempts"],
            dead_letter_queue=settings["dead_letter_queue"],
            dedup_window=settings["dedup_window"],
        )
    except (KeyError, TypeError):
        raise ExportError(f"line {number} is a queue without its settings: the export is damaged") from None
    return 1
