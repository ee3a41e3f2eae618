"""The daemon's life from the command line: start, stop and find mqd through its pidfile.

mqd writes its own pidfile (and the URL file beside it) once it listens, and removes them when it
exits cleanly; this module only reads them. A pidfile is trusted only if its process really is
the mqd that owns that pidfile (its command line names it), so a stale pid now used by another
program is never signalled. ``start`` and ``stop`` hold a lock beside the pidfile, so two starts
at once launch one daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mqd.protocol import DEFAULT_DATA_DIR, url_file_for

from .client import ApiError, Client, ClientError

POLL_SECONDS = 0.02


class DaemonError(Exception):
    """A start or stop that did not work out; the message says what happened."""


class StartFailed(DaemonError):
    pass


class StopTimedOut(DaemonError):
    pass


@dataclasses.dataclass(frozen=True)
class Paths:
    data_dir: Path
    pidfile: Path
    log_file: Path

    @classmethod
    def resolve(cls, data_dir: str | None, pidfile: str | None = None, log_file: str | None = None) -> Paths:
        base = Path(data_dir or os.environ.get("MQD_DATA_DIR") or DEFAULT_DATA_DIR).absolute()
        return cls(
            data_dir=base,
            pidfile=Path(pidfile).absolute() if pidfile else base / "mqd.pid",
            log_file=Path(log_file).absolute() if log_file else base / "mqd.log",
        )

    @property
    def url_file(self) -> Path:
        return Path(url_file_for(str(self.pidfile)))

    @property
    def lock_file(self) -> Path:
        return self.pidfile.with_name(self.pidfile.name + ".lock")


@dataclasses.dataclass(frozen=True)
class Running:
    pid: int
    url: str | None


# -- finding the daemon -------------------------------------------------------------------------


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise DaemonError(f"cannot read {pidfile}: {exc.strerror}") from None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _command_line(pid: int) -> list[str] | None:
    """The process's arguments, or None if there is no such (living) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None  # a zombie has exited; nobody reaped it yet
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _is_mqd_of(pid: int, pidfile: Path) -> bool:
    """Whether ``pid`` is an mqd that was started with this pidfile."""
    if not Path("/proc/self").exists():  # no procfs (not Linux): the best check is that it lives
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    args = _command_line(pid)
    if not args:
        return False
    program = args[1:3] == ["-m", "mqd"] or any(Path(a).name == "mqd" for a in args[:2])
    given = None
    for i, arg in enumerate(args):
        if arg == "--pidfile" and i + 1 < len(args):
            given = args[i + 1]
        elif arg.startswith("--pidfile="):
            given = arg.split("=", 1)[1]
    if not program or given is None:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "/"
    return os.path.normpath(os.path.join(cwd, given)) == os.path.normpath(pidfile)


def find(paths: Paths, *, locked: bool = False) -> Running | None:
    """The running mqd this pidfile names, or None. A stale pidfile is removed, but only under
    the lock (``locked``: the caller holds it), so a start in progress never loses its own."""
    pid = _read_pid(paths.pidfile)
    if pid is None:
        return None
    if _is_mqd_of(pid, paths.pidfile):
        try:
            url = paths.url_file.read_text().strip() or None
        except OSError:
            url = None
        return Running(pid, url)
    if locked:
        _remove_pidfile(paths)
        return None
    with _try_lock(paths) as got_lock:
        if got_lock and _read_pid(paths.pidfile) == pid:
            _remove_pidfile(paths)
    return None


def _remove_pidfile(paths: Paths) -> None:
    for path in (paths.url_file, paths.pidfile):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _lock(paths: Paths) -> Iterator[None]:
    paths.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _try_lock(paths: Paths) -> Iterator[bool]:
    """The lock if nobody holds it (True), or nothing (False): never waits."""
    with contextlib.ExitStack() as stack:
        got = False
        try:
            handle = stack.enter_context(open(paths.lock_file, "a"))
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            got = True
        except OSError:
            pass
        yield got


# -- start and stop -----------------------------------------------------------------------------


def start(
    paths: Paths, settings: dict[str, object] | None = None, timeout: float = 10.0
) -> tuple[Running, bool]:
    """Start mqd in the background and wait until it answers; (daemon, whether we started it).
    ``settings`` become mqd's options (``{"port": 8001}`` -> ``--port 8001``; None: left out)."""
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        with _lock(paths):
            running = find(paths, locked=True)
            if running is not None:
                return running, False
            return _spawn(paths, settings or {}, timeout), True
    except OSError as exc:
        raise StartFailed(f"cannot prepare {exc.filename or paths.data_dir}: {exc.strerror}") from None


def _spawn(paths: Paths, settings: dict[str, object], timeout: float) -> Running:
    command = [
        sys.executable,
        "-m",
        "mqd",
        "--data-dir",
        str(paths.data_dir),
        "--pidfile",
        str(paths.pidfile),
    ]
    for name, value in settings.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log_file, "ab") as log:
        log_offset = log.tell()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _last_error(paths.log_file, log_offset) or f"it exited with status {process.returncode}"
            raise StartFailed(f"mqd failed to start: {reason} (log: {paths.log_file})")
        if _read_pid(paths.pidfile) == process.pid:
            url = paths.url_file.read_text().strip()
            if _answers(url):
                return Running(process.pid, url)
        time.sleep(POLL_SECONDS)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    raise StartFailed(
        f"mqd did not answer within {timeout:g} seconds and was stopped (log: {paths.log_file})"
    )


def _answers(url: str) -> bool:
    """Whether mqd answers HTTP at ``url`` at all (a 401 from one that wants a token counts)."""
    try:
        with Client(url) as client:
            client.status()
    except ApiError:
        return True
    except ClientError:
        return False
    return True


def _last_error(log_file: Path, offset: int) -> str | None:
    """The daemon's own error line from this start, without its timestamp."""
    try:
        with open(log_file, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line or " CRITICAL " in line:
            return line.split(": ", 1)[-1]
    meaningful = [line for line in lines if line.strip()]
    return meaningful[-1].removeprefix("mqd: error: ") if meaningful else None


def stop(paths: Paths, *, timeout: float = 10.0, force: bool = False) -> Running | None:
    """SIGTERM the daemon and wait for it to exit; None if it was not running."""
    with _lock(paths):
        running = find(paths, locked=True)
        if running is None:
            return None
        _signal(running.pid, signal.SIGTERM)
        if not _wait_gone(running.pid, paths.pidfile, timeout):
            if not force:
                raise StopTimedOut(
                    f"mqd (pid {running.pid}) did not stop within {timeout:g} seconds; "
                    "wait longer (--timeout) or kill it (--force)"
                )
            _signal(running.pid, signal.SIGKILL)
            _wait_gone(running.pid, paths.pidfile, 10)
        _remove_pidfile(paths)
        return running


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise DaemonError(f"not allowed to signal mqd (pid {pid}); run as its user") from None


def _wait_gone(pid: int, pidfile: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_mqd_of(pid, pidfile):
            return True
        time.sleep(POLL_SECONDS)
    return False
