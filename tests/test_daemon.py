"""The real mqd process: start-up failures, graceful shutdown, restarts and kill -9."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from .helpers import MqdProcess, request


def run_mqd(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mqd", *args], capture_output=True, text=True, timeout=timeout
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line or "error" in line]


def test_restart_keeps_queues_messages_and_their_order(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": i} for i in range(100)]})
    daemon.call("GET", "/queues/q/messages?count=10")
    assert daemon.terminate() == 0
    daemon.start()
    status, body, _ = daemon.call("GET", "/queues/q/messages?count=1000")
    assert status == 200
    assert [m["content"] for m in body["messages"]] == list(range(10, 100))


def test_sigterm_answers_long_polls_and_exits_zero(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    answers = []
    poll = threading.Thread(target=lambda: answers.append(daemon.call("GET", "/queues/q/messages?wait=30")))
    poll.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert daemon.terminate() == 0
    poll.join(10)
    assert answers and answers[0][0] == 204
    assert time.monotonic() - started < 5
    assert "stopped" in daemon.log()
    assert not daemon.pidfile.exists()


def test_sigint_also_shuts_down_cleanly(mqd):
    daemon = mqd()
    daemon.process.send_signal(2)
    assert daemon.process.wait(10) == 0


def test_a_busy_port_is_one_clear_line_and_a_quick_failure(mqd, tmp_path):
    first = mqd()
    port = first.url.rsplit(":", 1)[1]
    started = time.monotonic()
    result = run_mqd("--port", port, "--data-dir", str(tmp_path / "other"))
    assert result.returncode != 0
    assert time.monotonic() - started < 3
    (line,) = error_lines(result.stderr)
    assert "already in use" in line and port in line
    assert "Traceback" not in result.stderr


def test_a_data_directory_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_mqd("--port", "0", "--data-dir", str(blocker / "data"))
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert str(blocker / "data") in line
    assert "Traceback" not in result.stderr


def test_a_second_daemon_on_the_same_data_directory_is_refused(mqd, data_dir):
    mqd()
    result = run_mqd("--port", "0", "--data-dir", str(data_dir))
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert "in use by another mqd" in line


def test_a_corrupt_database_stops_start_up_and_is_left_untouched(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "mq.sqlite3"
    database.write_bytes(b"definitely not sqlite " * 500)
    digest = hashlib.sha256(database.read_bytes()).hexdigest()
    result = run_mqd("--port", "0", "--data-dir", str(data_dir))
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert str(database) in line
    assert hashlib.sha256(database.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--port", "http"], "--port"), (["--fsync", "sometimes"], "--fsync"), (["--port", "70000"], "65535")],
)
def test_bad_options_are_one_line_and_exit_2(args, message):
    result = run_mqd(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_environment_settings_are_used_and_flags_win(mqd):
    daemon = mqd(env={"MQD_PORT": "1", "MQD_FSYNC": "off"})
    _, body, _ = daemon.call("GET", "/status")
    assert body["fsync"] == "off"  # from the environment
    assert not daemon.url.endswith(":1")  # --port 0 on the command line won over MQD_PORT


class Producer(threading.Thread):
    """Sends numbered messages one by one, remembering which ones were acknowledged."""

    def __init__(self, daemon: MqdProcess, number: int) -> None:
        super().__init__(daemon=True)
        self.daemon_process = daemon
        self.number = number
        self.acknowledged: list[int] = []
        self.attempted: list[int] = []

    def run(self) -> None:
        sequence = 0
        while True:
            self.attempted.append(sequence)
            try:
                status, _, _ = self.daemon_process.call(
                    "POST", "/queues/q/messages", {"content": {"p": self.number, "n": sequence}}, timeout=5
                )
            except OSError:
                return  # the daemon is gone: this last send is in doubt
            if status != 201:
                return
            self.acknowledged.append(sequence)
            sequence += 1


def test_kill_9_under_concurrent_producers_loses_no_acknowledged_message(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    producers = [Producer(daemon, number) for number in range(8)]
    for producer in producers:
        producer.start()
    deadline = time.monotonic() + 10
    while sum(len(p.acknowledged) for p in producers) < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.kill()
    for producer in producers:
        producer.join(10)
    acknowledged = sum(len(p.acknowledged) for p in producers)
    assert acknowledged > 100, "the producers barely ran; the test proves nothing"

    daemon.start()
    received: dict[int, list[int]] = {p.number: [] for p in producers}
    while True:
        status, body, _ = daemon.call("GET", "/queues/q/messages?count=1000")
        if status == 204:
            break
        for message in body["messages"]:
            received[message["content"]["p"]].append(message["content"]["n"])
    for producer in producers:
        got = received[producer.number]
        assert got == sorted(got), "per-producer FIFO order broken"
        assert len(got) == len(set(got)), "a message was delivered twice"
        assert set(producer.acknowledged) <= set(got), "an acknowledged message was lost"
        assert set(got) <= set(producer.attempted), "a message nobody sent appeared"


def test_a_consumed_message_is_not_delivered_again_after_kill_9(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": i} for i in range(20)]})
    _, body, _ = daemon.call("GET", "/queues/q/messages?count=5")
    assert [m["content"] for m in body["messages"]] == [0, 1, 2, 3, 4]
    daemon.kill()
    daemon.start()
    _, body, _ = daemon.call("GET", "/queues/q/messages?count=100")
    assert [m["content"] for m in body["messages"]] == list(range(5, 20))


def test_a_lease_survives_kill_9_and_the_message_returns_after_it(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    daemon.call("POST", "/queues/q/messages", {"content": "job"})
    _, leased, _ = daemon.call("GET", "/queues/q/messages?lease=1")
    daemon.kill()
    daemon.start()
    assert daemon.call("GET", "/queues/q/messages")[0] == 204  # still leased
    status, again, _ = daemon.call("GET", "/queues/q/messages?wait=5")
    assert status == 200 and again["id"] == leased["id"] and again["attempts"] == 2


def test_status_is_reachable_through_the_url_file(mqd):
    daemon = mqd()
    status, body, _ = request("GET", daemon.url + "/status")
    assert status == 200 and body["status"] == "ok"


# -- what a client sees of a real daemon -----------------------------------------------------------


def test_replies_end_with_a_newline_and_refusals_say_what_arrived(mqd):
    daemon = mqd()
    for method, path, body in [
        ("POST", "/queues", {"name": "q"}),
        ("GET", "/queues/q", None),
        ("GET", "/status", None),
        ("GET", "/queues/nope", None),
        ("POST", "/queues/q/messages", {"messages": [{"content": 1}]}),
    ]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            daemon.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
        assert raw.endswith(b"}\n"), (path, raw)
    status, body, _ = daemon.call(
        "POST", "/queues", {"name": "x", "max_attempts": "3", "dead_letter_queue": "q"}
    )
    assert status == 400 and 'not the string "3"' in body["error"]


def test_refusals_of_the_disk_are_logged_as_warnings_not_errors(mqd):
    daemon = mqd("--min-free-bytes", str(2**62))  # no disk has that much: every send is refused
    daemon.call("POST", "/queues", {"name": "q"})
    status, body, headers = daemon.call("POST", "/queues/q/messages", {"content": "x"})
    assert status == 507 and body["code"] == "disk_full" and headers["Retry-After"]
    log = daemon.log()
    assert " WARNING mqd.api: POST /queues/q/messages refused" in log
    assert " ERROR " not in log
