"""Which mqd a command speaks of, and what that daemon says of itself.

A daemon is named by its data directory (``--data-dir``, ``--pidfile``, ``MQD_DATA_DIR``: the
mqd whose pidfile is there) or by its URL (``--url``, ``MQ_URL``: the mqd that answers there).
Flags come before environment variables, and at the same level the data directory comes first.
When the user names one, mqctl speaks of that one only; when nothing is named, it is the daemon
of ``./data`` if one runs from there, else whatever answers at the default URL (a daemon started
by systemd, say). Nothing here writes a file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mq import ApiError, Client, ConnectionFailed, Timeout
from mqd.protocol import DEFAULT_URL

from . import daemon
from .daemon import DaemonError, Paths

STATUS_TIMEOUT_SECONDS = 3


@dataclasses.dataclass(frozen=True)
class Named:
    """The daemon a command is about: by ``paths`` (its pidfile) or by ``url``."""

    paths: Paths | None = None
    url: str | None = None
    by_default: bool = False  # nothing was named: ./data, then the default URL


def named(
    data_dir: str | None,
    pidfile: str | None,
    url: str | None,
    *,
    data_dir_from_flag: bool,
    url_from_flag: bool,
    environ: Mapping[str, str] = os.environ,
) -> Named:
    """Apply the rule of the module's docstring to what the command was given."""
    if pidfile or (data_dir and data_dir_from_flag):
        return Named(paths=Paths.resolve(data_dir, pidfile))
    if url and url_from_flag:
        return Named(url=url)
    if data_dir or environ.get("MQD_DATA_DIR"):
        return Named(paths=Paths.resolve(data_dir or environ["MQD_DATA_DIR"]))
    if environ.get("MQ_URL"):
        return Named(url=environ["MQ_URL"])
    return Named(paths=Paths.resolve(None), url=DEFAULT_URL, by_default=True)


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``mqctl status`` found out."""

    running: bool
    answering: bool = False
    url: str | None = None
    pid: int | None = None
    state: dict[str, Any] = dataclasses.field(default_factory=dict)  # what its /status said
    problem: str | None = None  # why it is not running, or does not answer, in a sentence
    wants_token: bool = False

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"running": self.running, "answering": self.answering, "url": self.url}
        if self.pid is not None:
            found["pid"] = self.pid
        if self.problem:
            found["error"] = self.problem
        return {**found, **self.state}


def settled(target: Named) -> Named:
    """When nothing was named: the daemon of ./data if one runs from there, else the one at the
    default URL (by URL only)."""
    if target.by_default and target.paths is not None and daemon.find(target.paths) is None:
        return dataclasses.replace(target, paths=None)
    return target


def inquire(target: Named, token: str | None) -> Report:
    """Whether the named daemon runs and answers, and its /status if it does."""
    paths = settled(target).paths
    if paths is None:
        return _ask(target.url or DEFAULT_URL, token, None)
    running = daemon.find(paths)
    if running is None:
        stale = daemon.stale_pid(paths)
        reason = (
            f"its pidfile {paths.pidfile} names pid {stale}, which is not running mqd"
            if stale
            else (f"no pidfile in {paths.pidfile.parent}")
        )
        return Report(running=False, problem=reason)
    report = _ask(running.url or DEFAULT_URL, token, running.pid)
    if report.answering and report.state.get("pid") != running.pid:
        return Report(
            running=True,
            url=report.url,
            pid=running.pid,
            problem=f"pid {report.state.get('pid')}, another daemon, answers at {report.url}",
        )
    return report


def _ask(url: str, token: str | None, pid: int | None) -> Report:
    """Ask the daemon at ``url``; ``pid`` is what its pidfile says, if it was found by one."""
    with Client(url, token=token, timeout=STATUS_TIMEOUT_SECONDS) as client:
        try:
            state = client.status()
        except ConnectionFailed as exc:
            if pid is None:
                return Report(running=False, url=url, problem=f"nothing answers at {url}")
            return Report(
                running=True, url=url, pid=pid, problem=f"it does not answer at {url} ({exc.reason})"
            )
        except Timeout as exc:
            return Report(running=True, url=url, pid=pid, problem=str(exc))
        except ApiError as exc:
            if (
                exc.code in ("store_failed", "store_unavailable")
                and isinstance(exc.body, dict)
                and "pid" in exc.body
            ):
                return Report(
                    running=True, url=url, pid=exc.body.get("pid"), state=exc.body, problem=exc.message
                )
            return Report(
                running=True, url=url, pid=pid, problem=exc.message, wants_token=exc.code == "unauthorized"
            )
    return Report(running=True, answering=True, url=url, pid=state.get("pid"), state=state)


def local_daemon(url: str, token: str | None) -> Paths | int | None:
    """For stopping the daemon at ``url``: its paths if it runs from a pidfile, else its pid;
    None if nothing answers there. Refused (DaemonError) when it is not on this machine, or is
    run by systemd (which would only start it again)."""
    client = Client(url, token=token, timeout=STATUS_TIMEOUT_SECONDS)  # BadUrl first: a usage error
    if not is_local(url):
        raise DaemonError(f"mqd at {url} is not on this machine; stop it where it runs")
    with client:
        try:
            state = client.status()
        except ConnectionFailed:
            return None
        except ApiError as exc:
            if not isinstance(exc.body, dict) or "pid" not in exc.body:
                raise
            state = exc.body
    pid = state["pid"]
    if state.get("pidfile"):
        pidfile = Path(state["pidfile"])
        return Paths(Path(state.get("data_dir") or pidfile.parent), pidfile, pidfile.with_name("mqd.log"))
    if not daemon.is_mqd(pid):
        raise DaemonError(
            f"mqd at {url} says it is pid {pid}, which is no mqd here (another machine or container?)"
        )
    unit = daemon.systemd_unit(pid)
    if unit is not None:
        raise UnderSystemd(f"mqd (pid {pid}) at {url} runs as {unit}: stop it with systemctl stop {unit}")
    return pid


class UnderSystemd(DaemonError):
    """The daemon is a systemd service: stopping it is systemctl's job."""


def is_local(url: str) -> bool:
    """Whether a daemon at ``url`` runs on this machine: a unix socket, or a loopback address."""
    if url.startswith("unix:"):
        return True
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
