"""``mqctl run``: the worker for scripted pipelines, against a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from .helpers import MQCTL, Mq


@pytest.fixture
def mq(tmp_path):
    mq = Mq(tmp_path / "data")
    mq.start()
    yield mq
    mq("stop", "--force")


def send_lines(mq: Mq, queue: str, *lines: str) -> None:
    assert mq("send", queue, "--lines", input="".join(f"{line}\n" for line in lines)).returncode == 0


def test_run_acks_what_the_command_did_and_passes_content_and_environment(mq, tmp_path):
    mq("create", "jobs")
    send_lines(mq, "jobs", "alpha", "beta", "gamma")
    log = tmp_path / "log"
    script = f'printf "%s %s %s %s\\n" "$(cat)" "$MQ_QUEUE" "$MQ_MESSAGE_ID" "$MQ_ATTEMPTS" >> {log}'
    result = mq("run", "jobs", "--drain", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["alpha", "beta", "gamma"]
    assert all(line.split()[1] == "jobs" and line.split()[3] == "1" for line in lines)
    assert "3 processed, 0 failed, 0 dead-lettered" in result.stderr
    assert mq("receive", "jobs").returncode == 1  # all acknowledged


def test_a_failing_command_is_retried_until_dead_lettered(mq, tmp_path):
    mq("create", "dlq")
    mq("create", "jobs", "--max-attempts", "3", "--dead-letter-queue", "dlq")
    send_lines(mq, "jobs", "poison")
    attempts = tmp_path / "attempts"
    result = mq("run", "jobs", "--drain", "--", "sh", "-c", f"echo $MQ_ATTEMPTS >> {attempts}; exit 1")
    assert result.returncode == 0
    assert attempts.read_text().split() == ["1", "2", "3"]
    assert "0 processed, 3 failed, 1 dead-lettered" in result.stderr
    assert mq("receive", "dlq").stdout == "poison\n"


def test_a_command_running_past_half_its_lease_keeps_the_message(mq, tmp_path):
    mq("create", "jobs")
    send_lines(mq, "jobs", "slow")
    runs = tmp_path / "runs"
    result = mq(
        "run",
        "jobs",
        "--drain",
        "--lease",
        "1",
        "--concurrency",
        "2",
        "--",
        "sh",
        "-c",
        f"echo $MQ_MESSAGE_ID >> {runs}; sleep 2.5",
    )
    assert result.returncode == 0
    assert len(runs.read_text().split()) == 1, "the lease ran out and the message was run twice"
    assert "1 processed" in result.stderr


def test_drain_on_an_empty_queue_exits_0_at_once(mq):
    mq("create", "jobs")
    started = time.monotonic()
    result = mq("run", "jobs", "--drain", "--", "true")
    assert result.returncode == 0 and time.monotonic() - started < 5
    assert "0 processed" in result.stderr


def test_sigterm_lets_the_running_command_finish_then_exits(mq, tmp_path):
    mq("create", "jobs")
    send_lines(mq, "jobs", "one", "two")
    done = tmp_path / "done"
    env = {**os.environ, **mq.env}
    worker = subprocess.Popen(
        [MQCTL, "run", "jobs", "--", "sh", "-c", f"sleep 1; cat >> {done}; echo >> {done}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the first command is running
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=20)
    assert worker.returncode == 0
    assert done.read_text() == "one\n"  # finished, and no new message was taken
    assert "1 processed" in err
    assert mq("receive", "jobs").stdout == "two\n"


def test_a_command_that_cannot_run_is_exit_127_and_loses_nothing(mq):
    mq("create", "jobs")
    send_lines(mq, "jobs", "kept")
    result = mq("run", "jobs", "--drain", "--", "/no/such/command")
    assert result.returncode == 127 and "cannot run /no/such/command" in result.stderr
    assert mq("receive", "jobs").stdout == "kept\n"


def test_run_on_a_missing_queue_says_so(mq):
    result = mq("run", "nope", "--drain", "--", "true")
    assert result.returncode == 5 and "queue 'nope' does not exist" in result.stderr


def test_a_killed_run_gives_its_messages_back_at_once(mq, tmp_path):
    """SIGKILL: no grace, no goodbye. Its stream closes with it, and mqd releases at once what it
    held (the running command's message and those pushed ahead), not after the 300 s lease."""
    mq("create", "jobs")
    send_lines(mq, "jobs", *(f"job {i}" for i in range(5)))
    started = tmp_path / "started"
    env = {**os.environ, **mq.env}
    worker = subprocess.Popen(
        [
            MQCTL,
            "run",
            "jobs",
            "--concurrency",
            "2",
            "--lease",
            "300",
            "--",
            "sh",
            "-c",
            f"touch {started}; sleep 60",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not started.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while json.loads(mq("info", "jobs", "--json").stdout)["ready"] < 5:
        assert time.monotonic() < deadline, "the messages stayed leased to a dead worker"
        time.sleep(0.05)
    assert json.loads(mq("info", "jobs", "--json").stdout)["leased"] == 0
