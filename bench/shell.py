"""Whole-process workloads: one shell command per message (W5), pipelines through mqctl (W7),
and mqd restarting with a backlog (W8)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .clients import QUEUE

MQCTL = str(Path(sys.executable).with_name("mqctl"))


def _time(command: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, env=env, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - started


def one_command(mqd_url: str, redis_port: int | None, repeats: int) -> dict[str, list[float]]:
    """W5: milliseconds for one shell command that enqueues one message, interleaved runs.

    mqd and mqctl are byte-compiled first, as pip does when it installs them: an editable
    checkout under PYTHONDONTWRITEBYTECODE would otherwise compile mqctl on every run."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "mqctl"), str(root / "mqd")], check=False
    )
    env = {**os.environ, "MQ_URL": mqd_url}
    commands: dict[str, list[str]] = {
        "mqctl send": [MQCTL, "send", QUEUE, "hello"],
        'python -c "import click"': [sys.executable, "-c", "import click"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "curl (to mqd)": [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--json",
            '{"content": "hello"}',
            f"{mqd_url}/queues/{QUEUE}/messages",
        ],
    }
    if redis_port is not None:
        commands["redis-cli LPUSH"] = ["redis-cli", "-p", str(redis_port), "LPUSH", QUEUE, "hello"]
    if shutil.which("rabbitmqadmin"):
        commands["rabbitmqadmin publish"] = [
            "rabbitmqadmin",
            "publish",
            "exchange=amq.default",
            f"routing_key={QUEUE}-cli",
            "payload=hello",
        ]
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            timings[name].append(1000 * _time(command, env))
    return timings


def pipelines(mqd_url: str, lines: int) -> dict[str, float]:
    """W7: lines per second through `mqctl send --lines` and back out through `receive --count`."""
    env = {**os.environ, "MQ_URL": mqd_url}
    data = "".join(f"{i}\n" for i in range(lines)).encode()
    sending = _time([MQCTL, "send", QUEUE, "--lines"], env, stdin=data)
    receiving = _time([MQCTL, "receive", QUEUE, "--count", str(lines)], env)
    return {"send --lines": lines / sending, "receive --count": lines / receiving}


def restart_to_ready(data_dir: Path) -> float:
    """W8: seconds from starting mqd on an existing store until it answers GET /status."""
    port = _free_port()
    started = time.perf_counter()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mqd",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                if child.poll() is not None:
                    raise RuntimeError("mqd exited while starting") from None
                time.sleep(0.01)
    finally:
        child.terminate()
        child.wait(30)


def _free_port() -> int:
    from .servers import free_port

    return free_port()


def median(values: list[float]) -> float:
    return statistics.median(values)
