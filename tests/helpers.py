"""Running the real daemon and the real CLI as subprocesses, for tests that need whole processes;
and waiting for a broker's receivers to be in line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 15.0


class MqdProcess:
    """A real ``mqd`` on a free port (``--port 0``) with its own data directory.

    Readiness is the URL file mqd writes beside its pidfile once it listens, then a good answer
    from GET /status: the same way mqctl finds it.
    """

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.pidfile = self.data_dir / "mqd.pid"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-mqd.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mqd",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--pidfile",
            str(self.pidfile),
            *self.args,
        ]

    def start(self, wait: bool = True) -> MqdProcess:
        url_file = self.data_dir / "mqd.url"
        for stale in (url_file, self.pidfile):
            with contextlib.suppress(OSError):  # a read-only data directory, for one
                stale.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, env=self.env)
        if wait:
            self.wait_ready(url_file)
        return self

    def wait_ready(self, url_file: Path) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mqd exited with {self.process.returncode}:\n{self.log()}")
            if url_file.exists() and self.pidfile.exists():
                self.url = url_file.read_text().strip()
                try:
                    request("GET", self.url + "/status")  # any answer will do (401 wants a token)
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"mqd did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()

    # HTTP helpers against this daemon.
    def call(self, method: str, path: str, body=None, headers=None, timeout: float = 30):
        return request(method, self.url + path, body, headers, timeout)


def request(method: str, url: str, body=None, headers=None, timeout: float = 30):
    """(status, parsed JSON or None, headers) with the standard library only."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, _json_or_text(raw), dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, _json_or_text(raw), dict(error.headers)


def _json_or_text(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


MQCTL = str(Path(sys.executable).with_name("mqctl"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mq:
    """mqctl bound to one data directory and the daemon started from it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {"MQD_DATA_DIR": str(data_dir), "MQ_URL": f"http://127.0.0.1:{free_port()}"}

    def __call__(self, *args: str, input=None, timeout: float = 60, env: dict[str, str] | None = None):
        return mqctl(*args, env={**self.env, **(env or {})}, input=input, timeout=timeout)

    def start(self, *args: str, env: dict[str, str] | None = None):
        """mqctl start (on a free port unless ``args`` name one); MQ_URL follows the daemon."""
        result = self("start", "--port", "0", *args, env=env)
        assert result.returncode == 0, result.stderr
        self.env["MQ_URL"] = result.stdout.split(" at ")[-1].strip()
        return result

    @property
    def pid(self) -> int:
        return int((self.data_dir / "mqd.pid").read_text())


def as_from_a_terminal() -> None:
    """For a child the test will Ctrl-C: SIGINT as a terminal's shell gives it (a test run in the
    background of a shell without job control inherits SIGINT ignored, and Python then leaves it
    so: no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def mqctl(
    *args: str, env: dict[str, str] | None = None, input: bytes | str | None = None, timeout: float = 60
):
    """Run the real mqctl console script; returns the CompletedProcess (bytes when input is bytes)."""
    text = not isinstance(input, bytes)
    return subprocess.run(
        [MQCTL, *args],
        input=input,
        capture_output=True,
        text=text,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


async def until_waiting(broker, receivers: int, timeout: float = 10) -> None:
    """Until ``receivers`` are in line: each first tries the store (a round trip to PostgreSQL,
    through a pool of ten connections), so how long that takes is the machine's business."""
    deadline = asyncio.get_running_loop().time() + timeout
    while broker.waiting_receivers < receivers:
        assert asyncio.get_running_loop().time() < deadline, f"{broker.waiting_receivers} waiting"
        await asyncio.sleep(0.01)
