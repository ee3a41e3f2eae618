"""The pidfile mqd keeps while it serves, and the URL file beside it (see protocol.url_file_for).

Both are replaced atomically (write a temporary file, then rename), so a reader never sees half
a pid; the URL is written first, so whoever finds the pid also finds where to reach it. They are
removed on a clean exit only while they still name this process.
"""

from __future__ import annotations

import os
from pathlib import Path

from .protocol import url_file_for


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write(pidfile: Path, url: str) -> None:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    _replace(Path(url_file_for(str(pidfile))), url + "\n")
    _replace(pidfile, f"{os.getpid()}\n")


def remove(pidfile: Path) -> None:
    try:
        if pidfile.read_text().strip() != str(os.getpid()):
            return  # someone else's now
    except OSError:
        return
    for path in (Path(url_file_for(str(pidfile))), pidfile):
        path.unlink(missing_ok=True)
