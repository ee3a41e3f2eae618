"""mqd as a systemd service: the notify protocol on a real datagram socket, and the unit file."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import MqdProcess

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "mqd.service"


class NotifySocket:
    """What systemd listens on: a unix datagram socket, on a path or in the abstract namespace."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.address = address
        self.messages: list[dict[str, str]] = []

    def receive_until(self, key: str, timeout: float = 10) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                datagram = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in datagram.splitlines())
            self.messages.append(fields)
            if key in fields:
                return self.messages
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages}")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract-namespace"])
def test_mqd_notifies_ready_status_watchdog_and_stopping(tmp_path, abstract):
    address = f"@mq-test-{os.getpid()}-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify")
    notify = NotifySocket(address)
    daemon = MqdProcess(tmp_path / "data", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    daemon.start()
    try:
        ready = notify.receive_until("READY")[-1]
        assert ready["READY"] == "1" and ready["MAINPID"] == str(daemon.pid)
        assert re.fullmatch(r"\d+ queues, \d+ messages", ready["STATUS"])
        daemon.call("POST", "/queues", {"name": "q"})
        notify.receive_until("WATCHDOG")  # every 0.2 s: half of WATCHDOG_USEC
        notify.messages.clear()
        notify.receive_until("WATCHDOG")
        statuses = [m["STATUS"] for m in notify.messages if "STATUS" in m]
        assert statuses and statuses[-1] == "1 queue, 0 messages"
        assert daemon.terminate() == 0
        assert notify.receive_until("STOPPING")[-1]["STOPPING"] == "1"
    finally:
        daemon.stop()


def test_without_notify_socket_mqd_runs_as_usual(mqd):
    daemon = mqd(env={"NOTIFY_SOCKET": ""})
    assert daemon.call("GET", "/status")[0] == 200


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@needs_systemd_analyze
def test_the_unit_is_hardened_to_an_exposure_of_at_most_1_5():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True
    )
    score = float(re.search(r"Overall exposure level for mqd.service: ([\d.]+)", result.stdout).group(1))
    assert score <= 1.5, result.stdout


@needs_systemd_analyze
def test_the_unit_verifies(tmp_path):
    unit = tmp_path / "mqd.service"  # ExecStart pointed at this environment's mqd, which exists
    mqd = Path(sys.executable).with_name("mqd")
    unit.write_text(UNIT.read_text().replace("/opt/mq/bin/mqd", str(mqd)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "mqd.service" not in result.stderr, result.stderr


def test_the_unit_runs_mqd_as_a_notify_service_with_its_state_directory():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=mqd",
        "Restart=on-failure",
        "WatchdogSec=",
    ):
        assert re.search(rf"^{re.escape(line)}", text, re.M), line
