"""Checking the SQLite store before trusting it (at every start, and in full with --verify).

SQLite does not notice every damaged byte: a truncated write-ahead log, or one with a flipped bit,
is cut at the first bad frame and the committed transactions after it vanish without an error.
So the store keeps, outside the database and its log, a durable record of the highest message id
it ever acknowledged (high_water.py). At start-up the database must reach at least that id; if it
does not, acknowledged messages are gone and mqd refuses to start, naming the file, instead of
serving a queue that silently lost them.

The checks run on a read-only connection: a rejected store is left exactly as it was found (a
read-write connection would checkpoint the surviving part of a damaged log into the database and
delete the log on close). Nothing here ever deletes, truncates or overwrites a data file, except
``accept_loss`` (``mqd --repair``), which first copies the damaged files aside.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path

from ..errors import DataCorrupt
from ..logs import counted, moment
from ..model import content_checksum
from .high_water import HighWaterMark
from .sqlite_tables import APPLICATION_ID, read_mark

log = logging.getLogger("mqd.store")

TAIL_CHECKED_AT_START = 10_000  # newest messages whose checksums are verified at every start


def verify(database: Path, mark: HighWaterMark, *, full: bool = False) -> str:
    """Check the database before it is opened for writing; returns a summary, raises DataCorrupt.

    Checks: SQLite's own structural check, our application id, that every acknowledged id is
    still there (the high-water mark), and the checksums of the newest messages (of all of them
    with ``full``).
    """
    recorded = mark.read()
    if database.with_name(database.name + "-journal").exists():
        _roll_back_hot_journal(database)
    if not database.exists() or database.stat().st_size == 0:
        if recorded:
            raise DataCorrupt(
                f"{database} is missing or empty, but {mark.path} says messages up to {recorded} were "
                f"acknowledged. Restore a backup with mqd --restore (if you removed it on purpose, "
                f"remove {mark.path} too)."
            )
        return "new store"
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None)
    try:
        return _verify(connection, database, recorded, mark.path, full)
    except sqlite3.DatabaseError as exc:
        raise DataCorrupt(
            f"{database} is damaged or is not an mq database ({exc}); it was left untouched."
        ) from None
    finally:
        connection.close()


def _roll_back_hot_journal(database: Path) -> None:
    """A rollback journal beside the database is SQLite's own undo log of an interrupted
    transaction (only the one that creates the store runs outside the WAL); a read-only
    connection cannot apply it, so let SQLite do its standard recovery first."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        pass  # the read-only check that follows reports what is wrong
    finally:
        connection.close()


def _verify(
    connection: sqlite3.Connection, database: Path, recorded: int, mark_path: Path, full: bool
) -> str:
    if connection.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise DataCorrupt(f"{database} is not an mq database; it was left untouched.")
        if recorded:
            raise DataCorrupt(
                f"{database} holds no queues, but {mark_path} says messages up to {recorded} were "
                "acknowledged: its write-ahead log was lost. Restore a backup (mqd --restore FILE), "
                "or run mqd --repair."
            )
        return "new store"
    problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise DataCorrupt(f"{database} is damaged ({'; '.join(problems)}); it was left untouched.")
    highest = highest_id(connection)
    restored = read_mark(connection)  # a backup, restored: it knowingly ends before the mark
    if highest < recorded and restored is None:
        wal = database.with_name(database.name + "-wal")
        where = wal if wal.exists() else database
        raise DataCorrupt(
            f"{where}: messages up to {recorded} were acknowledged ({mark_path}) but the store ends at "
            f"{highest}; its write-ahead log was truncated, damaged or deleted. Restore a backup "
            "(mqd --restore FILE), "
            "or run mqd --repair to keep what is left (the damaged files are copied aside first)."
        )
    limit = "" if full else f"ORDER BY id DESC LIMIT {TAIL_CHECKED_AT_START}"
    checked = 0
    for message_id, checksum, content in connection.execute(
        f"SELECT id, checksum, content FROM messages {limit}"
    ):
        checked += 1
        if content_checksum(content) != checksum:
            raise DataCorrupt(
                f"{database}: message {message_id} is damaged (its checksum does not match); "
                "it was left untouched. Restore a backup (mqd --restore FILE), or run mqd --repair."
            )
    summary = f"ok: {counted(checked, 'message')} checked, ids up to {highest}, high-water mark {recorded}"
    if restored is not None:
        summary += f"; a backup taken at {moment(restored.taken_at)}, not yet started from"
    return summary


def highest_id(connection: sqlite3.Connection) -> int:
    """The highest message id the store ever held: AUTOINCREMENT's record, or the rows if newer."""
    row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    last = connection.execute("SELECT max(id) FROM messages").fetchone()[0]
    return max(row[0] if row else 0, last or 0)


def accept_loss(database: Path, mark: HighWaterMark) -> str:
    """``mqd --repair``: copy the damaged files aside, then let the store start from what is left.

    Messages whose checksums do not match are moved to a table of their own (damaged_messages),
    never deleted; the high-water mark is lowered to what the database holds.
    """
    aside = database.parent / f"damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copy2(source, aside / source.name)
    if mark.path.exists():
        shutil.copy2(mark.path, aside / mark.path.name)
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS damaged_messages AS SELECT * FROM messages WHERE 0")
        damaged = [
            row[0]
            for row in connection.execute("SELECT id, checksum, content FROM messages")
            if content_checksum(row[2]) != row[1]
        ]
        connection.execute("BEGIN IMMEDIATE")
        for message_id in damaged:
            connection.execute(
                "INSERT INTO damaged_messages SELECT * FROM messages WHERE id = ?", (message_id,)
            )
            connection.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        connection.execute(
            "UPDATE queues SET depth = (SELECT count(*) FROM messages WHERE messages.queue_id = queues.id)"
        )
        connection.execute("COMMIT")
        highest = highest_id(connection)
    finally:
        connection.close()
    mark.path.unlink(missing_ok=True)
    mark.open()
    mark.value = 0
    mark.advance(highest)
    mark.close()
    message = (
        f"repaired {database}: the damaged files were copied to {aside}; "
        f"{counted(len(damaged), 'damaged message')} moved to the table damaged_messages; "
        f"the store now ends at message {highest}"
    )
    log.warning("%s", message)
    return message
