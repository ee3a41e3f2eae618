"""Writing the backup mqd sends (GET /backup) into a file that is there whole or not at all.

mqd checks its copy before sending it; the file here is checked against the length and the
SHA-256 digest mqd sent with it, fsynced, and only then renamed to the name asked for: until
then it is ``.<name>.partial-<pid>`` beside it, removed on any failure (a full disk, a transfer
cut short, Ctrl-C). Only a kill -9 leaves that hidden file; never a half-written one under the
name asked for.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator, Mapping

from .errors import BackupNotWritten


@dataclasses.dataclass(frozen=True)
class BackupInfo:
    path: str
    taken_at: float  # the instant the backup holds the store as of (seconds since the epoch)
    highest_id: int  # the highest message id in it
    messages: int
    size: int  # bytes


class BackupFile:
    """Use as a context manager: ``write`` the chunks, then ``finish`` with the reply's headers;
    leaving the block otherwise leaves no file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(path)
        self._directory = os.path.dirname(self.path)
        self._digest = hashlib.sha256()
        self._size = 0
        self._temporary: str | None = self._beside("partial")
        with self._disk():
            self._fd: int | None = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def __enter__(self) -> BackupFile:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            self._discard()

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._size += len(chunk)
        view = memoryview(chunk)
        with self._disk():
            while view:
                view = view[os.write(self._fd, view) :]

    def finish(self, headers: Mapping[str, str]) -> BackupInfo:
        """Check what arrived against what mqd said it sent, then give the file its name."""
        size = int(headers.get("content-length", -1))
        digest = base64.b64encode(self._digest.digest()).decode()
        if self._size != size or headers.get("repr-digest") != f"sha-256=:{digest}:":
            raise BackupNotWritten(
                f"the backup arrived damaged ({self._size} of {size} bytes, or another digest); "
                f"nothing was written to {self.path}"
            )
        with self._disk():
            os.fsync(self._fd)
            os.replace(self._temporary, self.path)
            self._temporary = None
        os.close(self._fd)
        self._fd = None
        directory = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return BackupInfo(
            self.path,
            float(headers["mq-backup-taken-at"]),
            int(headers["mq-backup-highest-id"]),
            int(headers["mq-backup-messages"]),
            self._size,
        )

    def _beside(self, purpose: str) -> str:
        return os.path.join(self._directory, f".{os.path.basename(self.path)}.{purpose}-{os.getpid()}")

    @contextlib.contextmanager
    def _disk(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise BackupNotWritten(f"cannot write the backup to {self.path}: {exc.strerror or exc}") from None

    def _discard(self) -> None:
        os.close(self._fd)
        self._fd = None
        if self._temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary)
