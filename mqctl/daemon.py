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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mq import ApiError, Client, MqError
from mqd.protocol import DEFAULT_DATA_DIR, PIDFILE_NAME, url_file_for

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
            pidfile=Path(pidfile).absolute() if pidfile else base / PIDFILE_NAME,
            log_file=Path(log_file).absolute() if log_file else base / "mqd.log",
        )

    def with_log_file(self, log_file: str | None) -> Paths:
        return self if not log_file else dataclasses.replace(self, log_file=Path(log_file).absolute())

    @property
    def url_file(self) -> Path:
        return Path(url_file_for(str(self.pidfile)))

    @property
    def lock_file(self) -> Path:
        return self.pidfile.with_name(self.pidfile.name + ".lock")

    @property
    def settings_file(self) -> Path:
        """How mqctl start started mqd, so that restart brings back the same daemon."""
        return self.pidfile.with_name(self.pidfile.stem + ".settings.json")


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
    if not args or not _runs_mqd(args):
        return False
    given = None
    for i, arg in enumerate(args):
        if arg == "--pidfile" and i + 1 < len(args):
            given = args[i + 1]
        elif arg.startswith("--pidfile="):
            given = arg.split("=", 1)[1]
    if given is None:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "/"
    return os.path.normpath(os.path.join(cwd, given)) == os.path.normpath(pidfile)


def find(paths: Paths, *, locked: bool = False) -> Running | None:
    """The running mqd this pidfile names, or None. Reading only, unless ``locked`` (the caller
    holds the lock: start and stop), when a stale pidfile is removed."""
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


def stale_pid(paths: Paths) -> int | None:
    """The pid a pidfile names when that process is not its mqd (it exited, or the pid is
    another program's now)."""
    pid = _read_pid(paths.pidfile)
    return pid if pid is not None and not _is_mqd_of(pid, paths.pidfile) else None


def _runs_mqd(args: list[str]) -> bool:
    return args[1:3] == ["-m", "mqd"] or any(Path(a).name == "mqd" for a in args[:2])


def is_mqd(pid: int) -> bool:
    """Whether ``pid`` is an mqd process on this machine (whatever its pidfile)."""
    args = _command_line(pid)
    return bool(args) and _runs_mqd(args)


def systemd_unit(pid: int) -> str | None:
    """The systemd service ``pid`` runs in, if it is one (its cgroup names a .service that is not
    a user's session)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        unit = line.rsplit("/", 1)[-1]
        if unit.endswith(".service") and not unit.startswith(("user@", "session-")):
            return unit
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


# -- start and stop -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartSettings:
    """How mqd is started: its options, and the MQD_* environment it sees. The token is never
    recorded, only whether it came from the environment (so a restart without it is refused
    rather than starting an open daemon)."""

    options: dict[str, object]  # mqd's options: {"port": 8001} -> --port 8001
    environment: dict[str, str]
    token_in_environment: bool = False
    log_file: str | None = None  # None: <data-dir>/mqd.log

    @classmethod
    def now(cls, options: dict[str, object], log_file: str | None = None) -> StartSettings:
        """The settings a start is given: these options, and the MQD_* environment of now."""
        environment = {k: v for k, v in os.environ.items() if k.startswith("MQD_") and k not in NOT_RECORDED}
        given = {k: v for k, v in options.items() if v is not None}
        log = str(Path(log_file).absolute()) if log_file else None
        return cls(given, environment, bool(os.environ.get("MQD_TOKEN")), log)

    def overridden(self, options: dict[str, object], log_file: str | None = None) -> StartSettings:
        """These settings changed by what a restart is given: its flags, and the MQD_* variables
        set now (a token missing now does not count: the daemon had one)."""
        now = StartSettings.now(options, log_file)
        # MQD_PORT set now beats a --port recorded then: each setting's latest word counts.
        kept = {k: v for k, v in self.options.items() if f"MQD_{k.upper()}" not in now.environment}
        return StartSettings(
            {**kept, **now.options},
            {**self.environment, **now.environment},
            self.token_in_environment or now.token_in_environment,
            now.log_file or self.log_file,
        )


NOT_RECORDED = {"MQD_TOKEN", "MQD_DATA_DIR", "MQD_PIDFILE"}  # a secret, and the daemon's identity


def recorded_settings(paths: Paths) -> StartSettings | None:
    """How mqctl start last started the mqd of these paths, if it did."""
    try:
        record = json.loads(paths.settings_file.read_text())
        return StartSettings(**record)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(paths: Paths, settings: StartSettings) -> None:
    """Write the settings beside the pidfile (mode 600: a store URL may carry a password)."""
    temporary = paths.settings_file.with_name(f".{paths.settings_file.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dataclasses.asdict(settings), handle, indent=1)
    os.replace(temporary, paths.settings_file)


def start(paths: Paths, settings: StartSettings, timeout: float = 10.0) -> tuple[Running, bool]:
    """Start mqd in the background and wait until it answers; (daemon, whether we started it)."""
    if settings.token_in_environment and not os.environ.get("MQD_TOKEN"):
        raise StartFailed(
            "mqd was started with MQD_TOKEN set; set it again to start it the same way "
            "(or start it afresh with mqctl stop and mqctl start)"
        )
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        with _lock(paths):
            running = find(paths, locked=True)
            if running is not None:
                return running, False
            _record(paths, settings)
            return _spawn(paths, settings, timeout), True
    except OSError as exc:
        raise StartFailed(f"cannot prepare {exc.filename or paths.data_dir}: {exc.strerror}") from None


def _spawn(paths: Paths, settings: StartSettings, timeout: float) -> Running:
    command = [
        sys.executable,
        "-m",
        "mqd",
        "--data-dir",
        str(paths.data_dir),
        "--pidfile",
        str(paths.pidfile),
    ]
    environment = {**os.environ, **settings.environment}
    for name, value in settings.options.items():
        if name == "store":  # in the environment, not the command line everyone can read
            environment["MQD_STORE"] = str(value)
        else:
            command += [f"--{name.replace('_', '-')}", str(value)]
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log_file, "ab") as log:
        log_offset = log.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=environment,
            start_new_session=True,
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
        f"mqd did not answer within {_seconds(timeout)} and was stopped (log: {paths.log_file})"
    )


def _answers(url: str) -> bool:
    """Whether mqd answers HTTP at ``url`` at all (a 401 from one that wants a token counts)."""
    try:
        with Client(url) as client:
            client.status()
    except ApiError:
        return True
    except MqError:
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
    """SIGTERM the daemon and wait for it to exit; None if it was not running. Nothing is
    created where there is no pidfile to begin with."""
    if not paths.pidfile.exists():
        return None
    with _lock(paths):
        running = find(paths, locked=True)
        if running is None:
            return None
        terminate(
            running.pid, timeout=timeout, force=force, alive=lambda: _is_mqd_of(running.pid, paths.pidfile)
        )
        _remove_pidfile(paths)
        return running


def terminate(pid: int, *, timeout: float, force: bool, alive=None) -> None:
    """SIGTERM ``pid`` and wait until it has exited; SIGKILL after ``timeout`` with ``force``."""
    still_there = alive or (lambda: is_mqd(pid))
    _signal(pid, signal.SIGTERM)
    if not _wait_gone(still_there, timeout):
        if not force:
            raise StopTimedOut(
                f"mqd (pid {pid}) did not stop within {_seconds(timeout)}; "
                "wait longer (--timeout) or kill it (--force)"
            )
        _signal(pid, signal.SIGKILL)
        _wait_gone(still_there, 10)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise DaemonError(f"not allowed to signal mqd (pid {pid}); run as its user") from None


def _wait_gone(alive, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(POLL_SECONDS)
    return False


def _seconds(seconds: float) -> str:
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")
