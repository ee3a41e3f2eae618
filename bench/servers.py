"""Starting and stopping the servers under test: each on loopback, on a free port, with its data
in a temporary directory, gone when the benchmark is done."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def cpu_seconds(server: Server) -> float:
    """User + system CPU the server's processes have used so far (all their threads)."""
    return sum(_cpu_seconds(pid) for pid in server.pids)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Server:
    """A running server: where it listens and which process to charge CPU to."""

    def __init__(self, name: str, port: int, pid: int, url: str = "", directory: Path | None = None) -> None:
        self.name, self.port, self.pid, self.url, self.directory = name, port, pid, url, directory
        self.pids = [pid]  # the processes whose CPU counts as the server's


@contextlib.contextmanager
def process(
    name: str, command: list[str], port: int, *, cwd: Path | None = None, env=None
) -> Iterator[Server]:
    log_path = Path(tempfile.gettempdir()) / f"bench-{name}-{port}.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=log, cwd=cwd, env=env, start_new_session=True)
    try:
        wait_for_port(port, child)
        yield Server(name, port, child.pid, f"http://127.0.0.1:{port}", cwd)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextlib.contextmanager
def temporary_directory(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mqd(fsync: str = "always", data_dir: Path | None = None, store: str | None = None):
    """mqd from this checkout, on the interpreter running the benchmark (``store``: PostgreSQL)."""
    port = free_port()
    directory = data_dir or Path(tempfile.mkdtemp(prefix="bench-mqd-"))
    command = [sys.executable, "-m", "mqd", "--port", str(port), "--data-dir", str(directory)]
    command += ["--fsync", fsync, "--log-level", "warning", "--min-free-bytes", "0"]
    if store is not None:
        command += ["--store", store]
    return process(f"mqd-{fsync}", command, port, cwd=directory)


def python_app(module: str, name: str, directory: Path):
    """One of the benchmark's own servers (bench/ceiling.py, bench/jsonfile.py)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return process(
        name, [sys.executable, "-m", module, str(port), str(directory)], port, cwd=directory, env=env
    )


def redis(directory: Path, durable: bool):
    port = free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(directory),
        *persistence,
    ]
    return process("redis", command, port, cwd=directory)


def beanstalkd(directory: Path, durable: bool):
    port = free_port()
    persistence = ["-b", str(directory), "-f", "0"] if durable else []
    return process(
        "beanstalkd", ["beanstalkd", "-l", "127.0.0.1", "-p", str(port), *persistence], port, cwd=directory
    )


def nats(directory: Path):
    port = free_port()
    command = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(directory)]
    return process("nats", command, port, cwd=directory)


@contextlib.contextmanager
def rabbitmq() -> Iterator[Server]:
    """The RabbitMQ already running here (a second Erlang node is a heavy thing to start)."""
    wait_for_port(5672, None, timeout=2)
    pid = int(subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True, check=True).stdout)
    yield Server("rabbitmq", 5672, pid, "amqp://guest:guest@127.0.0.1:5672/")


def available(program: str) -> bool:
    return shutil.which(program) is not None
