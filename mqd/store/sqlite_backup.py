"""Backups of the SQLite store: made while mqd serves, restored by ``mqd --restore``, and accepted
once at start-up although they end before the high-water mark.

A backup is ``VACUUM INTO`` a file beside the database: one read transaction, so the copy is the
store as of one instant while the writer goes on (WAL readers never block it). The copy is then
marked (the table ``mq_backup``: when it was taken and the highest message id in it), checked in
full (every checksum) and fsynced before anyone reads it.

A restored backup ends before the high-water mark of the store it replaces: the messages
acknowledged after it was taken are gone, knowingly. At its first start the store sees the mark
of the backup, says so in one line, moves its id sequence past the high-water mark (an id is
never handed out twice) and removes the mark, in one transaction: from then on it is checked like
any store, and a truncated log is refused as before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import DataCorrupt, DataDirectoryError, StorageFull
from .base import Backup
from .high_water import HighWaterMark, fsync_directory
from .sqlite_tables import MARK_TABLE, BackupMark, read_mark
from .sqlite_verify import highest_id, verify

PARTIAL_PREFIX = "mq-backup-"  # copies being made in the data directory; removed at start-up
PARTIAL_SUFFIX = ".partial"


def make_backup(database: Path, clock: Callable[[], float], min_free_bytes: int) -> Backup:
    """Copy ``database`` as of ``clock()`` into a checked file beside it (blocking: run it in a
    thread). Room is needed for the copy and twice the reserve: sends must not run into the
    reserve (507) because a backup took the room they had."""
    directory = database.parent
    store_bytes = database.stat().st_size + _size(database.with_name(database.name + "-wal"))
    needed = store_bytes + 2 * min_free_bytes
    if shutil.disk_usage(directory).free < needed:
        raise StorageFull(
            f"The disk of {directory} has too little room for a backup (it needs about "
            f"{needed // (1024 * 1024)} MiB free: the size of the store, and twice the reserve)."
        )
    path = directory / f"{PARTIAL_PREFIX}{os.getpid()}-{time.monotonic_ns()}{PARTIAL_SUFFIX}"
    now = clock()
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None)
        try:
            source.execute("VACUUM INTO ?", (str(path),))
        finally:
            source.close()
        copy = sqlite3.connect(path, isolation_level=None)
        try:
            copy.execute("PRAGMA journal_mode=DELETE")
            highest = highest_id(copy)
            messages = copy.execute("SELECT count(*) FROM messages").fetchone()[0]
            copy.execute(f"CREATE TABLE {MARK_TABLE} (taken_at REAL NOT NULL, highest_id INTEGER NOT NULL)")
            copy.execute(f"INSERT INTO {MARK_TABLE} VALUES (?, ?)", (now, highest))
        finally:
            copy.close()
        check(path)
        digest = _fsync_and_digest(path)
        return Backup(path, now, highest, messages, path.stat().st_size, digest)
    except (sqlite3.OperationalError, OSError) as exc:
        _remove(path)
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or getattr(exc, "errno", 0) == errno.ENOSPC:
            raise StorageFull(f"The disk of {directory} filled up while the backup was made.") from None
        raise
    except BaseException:
        _remove(path)
        raise


def check(path: Path) -> BackupMark:
    """Every checksum of a backup file, and its mark; DataCorrupt if it is damaged or no backup."""
    summary = verify(path, HighWaterMark(path.with_name(path.name + ".no-mark")), full=True)
    if not summary.startswith("ok"):
        raise DataCorrupt(f"{path} holds no mq store.")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        mark = read_mark(connection)
    finally:
        connection.close()
    if mark is None:
        raise DataCorrupt(f"{path} is an mq store but not a backup made by mqd (mqctl backup).")
    return mark


def adopt(connection: sqlite3.Connection, recorded: int) -> BackupMark | None:
    """At start-up, on the writer's connection: a restored backup becomes an ordinary store whose
    ids go on past ``recorded`` (the high-water mark of the store it replaced)."""
    mark = read_mark(connection)
    if mark is None:
        return None
    connection.execute("BEGIN IMMEDIATE")
    try:
        next_from = max(highest_id(connection), recorded)
        connection.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
        connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (next_from,))
        connection.execute(f"DROP TABLE {MARK_TABLE}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return mark


def restore(backup: Path, database: Path) -> tuple[BackupMark, list[Path]]:
    """Put a checked backup in place of ``database`` (mqd stopped; the caller holds the data
    directory's lock). The files it replaces are renamed aside, never deleted: (mark, them)."""
    mark = check(backup)
    incoming = database.with_name(database.name + ".restoring")
    aside: list[tuple[Path, Path]] = []  # (where it was, where it went)
    try:
        shutil.copyfile(backup, incoming)  # first: a disk too full for the copy changes nothing
        _fsync_and_digest(incoming)
        stamp = _unused_stamp(database)
        for suffix in ("", "-wal", "-shm"):
            current = database.with_name(database.name + suffix)
            if current.exists():
                moved = current.with_name(f"{current.name}.replaced-{stamp}")
                current.rename(moved)
                aside.append((current, moved))
        incoming.rename(database)
        fsync_directory(database.parent)
    except BaseException as exc:  # an error, or Ctrl-C: put back what was moved
        if not database.exists():
            for current, moved in reversed(aside):
                with contextlib.suppress(OSError):
                    moved.rename(current)
        with contextlib.suppress(OSError):
            incoming.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataDirectoryError(
                f"Cannot restore into {database.parent}: {exc.strerror or exc}."
            ) from exc
        raise
    return mark, [moved for _, moved in aside]


def _unused_stamp(database: Path) -> str:
    """A suffix no file replaced earlier has: two restores in one second keep both."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate, number = stamp, 1
    while any(database.parent.glob(f"{database.name}*.replaced-{candidate}")):
        number += 1
        candidate = f"{stamp}-{number}"
    return candidate


def remove_partial_copies(directory: Path) -> None:
    """Copies a killed mqd was making (and SQLite's journal of one): never complete, never sent."""
    for partial in directory.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}*"):
        with contextlib.suppress(OSError):
            partial.unlink()


def _remove(copy: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        copy.with_name(copy.name + suffix).unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_and_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()
