"""The high-water mark: a durable record, outside the database and its log, of the highest
message id the store ever acknowledged.

Written and fsynced after each commit that stored new messages, before their senders hear back,
so that a start-up check (sqlite_verify.py) can tell a database that lost acknowledged messages
(a truncated or damaged write-ahead log) from one that never had them.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from ..errors import DataCorrupt

HIGH_WATER_FILE = "mq.high-water"


class HighWaterMark:
    """``<id> <crc32 of id>`` in a small file, rewritten in place and fsynced."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self.value = 0

    def read(self) -> int:
        """The recorded id (0 if there is no record yet); DataCorrupt if the record is damaged."""
        try:
            text = self.path.read_text().strip("\0 \n")
        except FileNotFoundError:
            return 0
        if not text:
            return 0  # created, but the power went before its first record reached the disk
        number, _, check = text.partition(" ")
        if not number.isdigit() or check != str(zlib.crc32(number.encode())):
            raise DataCorrupt(
                f"{self.path} is damaged ({text[:40]!r}); mqd cannot tell which messages it acknowledged."
            )
        return int(number)

    def open(self) -> None:
        self.value = self.read()
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not existed and self.fsync:
            fsync_directory(self.path.parent)  # so the file itself survives a power cut

    def advance(self, value: int) -> None:
        """Record ``value`` durably (called after the commit that stored it, before replying)."""
        if value <= self.value or self._fd is None:
            return
        number = str(value)
        record = f"{number} {zlib.crc32(number.encode())}\n".encode().ljust(64)
        os.pwrite(self._fd, record, 0)  # one small write at offset 0: within one sector
        if self.fsync:
            os.fdatasync(self._fd)
        self.value = value

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def fsync_directory(path: Path) -> None:
    """Make a file's creation or renaming in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
