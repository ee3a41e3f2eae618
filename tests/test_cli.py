"""The real mqctl against a real mqd, both as subprocesses; CliRunner only for argument checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mqctl.cli import cli

from .helpers import MQCTL, Mq

EXIT_EMPTY, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NO_ANSWER, EXIT_NOT_FOUND = 1, 2, 3, 4, 5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


# -- the daemon's life --------------------------------------------------------------------------


def test_start_status_stop_and_their_exit_codes(mq):
    assert mq("status").returncode == EXIT_NOT_RUNNING
    started = mq.start()
    assert f"(pid {mq.pid})" in started.stdout and "http://127.0.0.1:" in started.stdout
    status = mq("status")
    assert status.returncode == 0 and f"pid {mq.pid}" in status.stdout
    stopped = mq("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (mq.data_dir / "mqd.pid").exists()
    assert mq("status").returncode == EXIT_NOT_RUNNING
    again = mq("stop")
    assert again.returncode == 0 and "not running" in again.stdout


def test_the_daemon_outlives_mqctl_and_logs_to_the_data_directory(mq):
    mq.start()
    assert alive(mq.pid)
    assert os.getsid(mq.pid) == mq.pid  # its own session: detached from our terminal
    assert "listening on" in (mq.data_dir / "mqd.log").read_text()


def test_status_json_describes_the_daemon(running):
    result = running("status", "--json")
    import json

    state = json.loads(result.stdout)
    assert state["running"] and state["answering"] and state["pid"] == running.pid
    assert state["queues"] == 1 and state["messages"] == 0


def test_starting_twice_says_so_and_succeeds(mq):
    mq.start()
    first_pid = mq.pid
    again = mq("start", "--port", "0")
    assert again.returncode == 0 and "already running" in again.stdout
    assert mq.pid == first_pid


def test_two_concurrent_starts_start_one_daemon(mq):
    env = {**os.environ, **mq.env}
    starts = [
        subprocess.Popen([MQCTL, "start", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30)[0] for p in starts]
    assert [p.returncode for p in starts] == [0, 0]
    assert sorted("already running" in out for out in outputs) == [False, True]
    pids = {out.split("(pid ")[1].split(")")[0] for out in outputs}
    assert pids == {str(mq.pid)}


def test_a_pidfile_of_a_dead_process_is_cleaned(mq):
    mq.data_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (mq.data_dir / "mqd.pid").write_text(f"{dead.pid}\n")
    assert mq("status").returncode == EXIT_NOT_RUNNING
    assert not (mq.data_dir / "mqd.pid").exists()


def test_a_pidfile_naming_another_program_never_gets_it_signalled(mq):
    mq.data_dir.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (mq.data_dir / "mqd.pid").write_text(f"{stranger.pid}\n")
        assert mq("status").returncode == EXIT_NOT_RUNNING
        (mq.data_dir / "mqd.pid").write_text(f"{stranger.pid}\n")
        stop = mq("stop")
        assert stop.returncode == 0 and "not running" in stop.stdout
        assert stranger.poll() is None, "mqctl signalled a process that is not its mqd"
        mq.start()  # and a start is not fooled either
        assert mq.pid != stranger.pid
    finally:
        stranger.kill()


def test_a_busy_port_fails_the_start_with_the_daemons_own_error(mq):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        result = mq("start", "--port", str(port))
        assert result.returncode != 0
        assert time.monotonic() - started < 5
    assert "address is already in use" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (mq.data_dir / "mqd.pid").exists()


def test_an_unusable_data_directory_fails_the_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    mq = Mq(blocker / "data")
    result = mq("start", "--port", "0")
    assert result.returncode != 0
    assert str(blocker) in result.stderr and "Traceback" not in result.stderr


def test_stop_gives_up_after_its_timeout_unless_forced(mq):
    mq.start()
    pid = mq.pid
    os.kill(pid, signal.SIGSTOP)  # a daemon that cannot act on SIGTERM
    try:
        slow = mq("stop", "--timeout", "0.5")
        assert slow.returncode == EXIT_NO_ANSWER and "did not stop" in slow.stderr
        assert mq("status").returncode == EXIT_NO_ANSWER  # running, but not answering
        forced = mq("stop", "--timeout", "0.5", "--force")
        assert forced.returncode == 0
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_restart_gives_a_new_daemon_with_the_same_data(running):
    old = running.pid
    running("send", "q", "kept")
    result = running("restart")
    assert result.returncode == 0 and running.pid != old
    running.env["MQ_URL"] = result.stdout.split(" at ")[-1].strip()
    assert running("receive", "q").stdout == "kept\n"


# -- operations ---------------------------------------------------------------------------------


def test_send_and_receive_one_message(running):
    sent = running("send", "q", "hello world")
    assert sent.returncode == 0 and sent.stdout.strip().isdigit()
    received = running("receive", "q")
    assert (received.returncode, received.stdout) == (0, "hello world\n")


def test_send_reads_standard_input_as_one_message(running):
    running("send", "q", input="line one\nline two\n")
    assert running("receive", "q").stdout == "line one\nline two\n"


def test_an_empty_queue_exits_1_and_prints_nothing(running):
    result = running("receive", "q")
    assert (result.returncode, result.stdout) == (EXIT_EMPTY, "")


def test_ten_thousand_lines_round_trip_in_order(running):
    lines = "".join(f"{i}\n" for i in range(1, 10001))
    assert running("send", "q", "--lines", input=lines).returncode == 0
    result = running("receive", "q", "--count", "10000")
    assert result.returncode == 0 and result.stdout == lines
    assert running("receive", "q").returncode == EXIT_EMPTY


def test_nul_separated_messages_round_trip_with_newlines_inside(running):
    records = b"first\nwith newline\0second\0\xc3\xa9 third\0"
    assert running("send", "q", "-0", input=records).returncode == 0
    result = running("receive", "q", "--count", "10", "-0", input=b"")
    assert result.stdout == records


def test_json_content_and_json_output(running):
    running("send", "q", "--json", '{"n": 1, "tags": ["a"]}')
    import json

    line = running("receive", "q", "--json").stdout
    message = json.loads(line)
    assert message["content"] == {"n": 1, "tags": ["a"]} and message["attempts"] == 1
    running("send", "q", "--json", "[1, 2]")
    assert running("receive", "q").stdout == "[1,2]\n"


def test_wait_returns_a_message_sent_while_waiting(running):
    env = {**os.environ, **running.env}
    waiting = subprocess.Popen(
        [MQCTL, "receive", "q", "--wait", "10"], env=env, stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    running("send", "q", "late")
    out, _ = waiting.communicate(timeout=15)
    assert (waiting.returncode, out) == (0, "late\n")


def test_follow_prints_messages_sent_after_it_started_and_ends_quietly_on_ctrl_c(running):
    env = {**os.environ, **running.env}
    follower = subprocess.Popen(
        [MQCTL, "receive", "q", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    for word in ("one", "two", "three"):
        running("send", "q", word)
    lines = [follower.stdout.readline() for _ in range(3)]
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=10)
    assert lines == ["one\n", "two\n", "three\n"]
    assert follower.returncode == 0 and err == ""
    assert running("receive", "q").returncode == EXIT_EMPTY  # printed ones were acknowledged


def test_follow_into_a_closed_pipe_loses_nothing(running):
    for word in ("one", "two", "three"):
        running("send", "q", word)
    env = {**os.environ, **running.env}
    pipeline = subprocess.run(
        f"'{MQCTL}' receive q --follow | head -n 1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pipeline.stdout == "one\n" and "Traceback" not in pipeline.stderr
    rest = running("receive", "q", "--count", "10")
    assert rest.stdout in ("two\nthree\n", "three\n")  # "two" may have been printed into the closing pipe
    assert rest.stdout.endswith("three\n")


def test_lease_and_ack_from_the_shell(running):
    running("send", "q", "job")
    import json

    leased = json.loads(running("receive", "q", "--lease", "30", "--json").stdout)
    assert running("receive", "q").returncode == EXIT_EMPTY
    assert running("ack", "q", leased["receipt"]).returncode == 0
    stale = running("ack", "q", leased["receipt"])
    assert stale.returncode == EXIT_NOT_FOUND and "Receipt" in stale.stderr


def test_list_info_purge_delete(running):
    running("send", "q", "x")
    assert running("list").stdout.split("\t")[:2] == ["q", "1"]
    info = dict(line.split("\t") for line in running("info", "q").stdout.splitlines())
    assert info["ready"] == "1"
    assert "purged 1" in running("purge", "q").stdout
    assert running("delete", "q").returncode == 0
    assert running("list").stdout == ""


def test_a_stopped_daemon_is_one_helpful_line_and_exit_3(mq):
    result = mq("send", "q", "x")
    assert result.returncode == EXIT_NOT_RUNNING
    assert result.stderr.strip() == (
        f"mqctl: mqd is not running at {mq.env['MQ_URL']} (connection refused) — start it with: mqctl start"
    )


def test_a_missing_queue_is_one_helpful_line_and_exit_5(running):
    result = running("receive", "nope")
    assert result.returncode == EXIT_NOT_FOUND
    assert result.stderr.strip() == "mqctl: queue 'nope' does not exist — create it with: mqctl create nope"


def test_invalid_input_is_refused_without_a_traceback(running):
    result = running("send", "q", "--lines", input=b"ok\n\xff\xfe\n")
    assert result.returncode == 6 and b"line 2" in result.stderr and b"Traceback" not in result.stderr
    bad_name = running("create", ".hidden")
    assert bad_name.returncode == 6 and "Invalid queue name" in bad_name.stderr


# -- argument handling (fast, in-process) ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["send", "q", "message", "--lines"],
        ["send", "q", "--lines", "--key", "k"],
        ["receive", "q", "--count", "0"],
        ["receive", "q", "--wait", "61"],
        ["receive", "q", "--lease", "0"],
        ["extend", "q", "1.ab"],
        ["start", "--port", "70000"],
        ["no-such-command"],
    ],
)
def test_bad_arguments_are_usage_errors(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_USAGE


def test_every_subcommand_has_help():
    for name in cli.commands:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_top_shows_depths_and_rates(running):
    running("send", "q", "--lines", input="a\nb\nc\n")
    result = running("top", "--iterations", "2", "--interval", "0.2")
    assert result.returncode == 0
    first, second = [block.splitlines() for block in result.stdout.strip().split("\n\n")]
    assert first[0].split("\t")[:2] == ["q", "3"]
    assert first[0].split("\t")[-3:] == ["-", "-", "-"]  # no rates before a second look
    assert second[0].split("\t")[-3:] == ["0", "0", "0"]  # nothing moved in between
