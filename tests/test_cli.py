"""The real mqctl against a real mqd, both as subprocesses; CliRunner only for argument checks."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mqctl.cli import cli

from .helpers import MQCTL, as_from_a_terminal

EXIT_EMPTY, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NO_ANSWER, EXIT_NOT_FOUND = 1, 2, 3, 4, 5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


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


def test_follow_prints_messages_sent_after_it_started_and_ends_quietly_on_ctrl_c_with_130(running):
    env = {**os.environ, **running.env}
    follower = subprocess.Popen(
        [MQCTL, "receive", "q", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    time.sleep(0.5)
    for word in ("one", "two", "three"):
        running("send", "q", word)
    lines = [follower.stdout.readline() for _ in range(3)]
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=10)
    assert lines == ["one\n", "two\n", "three\n"]
    assert follower.returncode == 130 and err == ""
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


def complete(running, words: str, env=None) -> list[str]:
    """What bash completion offers for the last word of ``words``."""
    cwords = words.split(" ")
    result = running(
        env={
            **(env or {}),
            "_MQCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(cwords) - 1),
            "MQ_URL": "http://127.0.0.1:9",  # nothing there: only the command line's --url is asked
        }
    )
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_completion_asks_the_daemon_the_command_line_names(running):
    url = running.env["MQ_URL"]
    running("create", "alpha")
    assert complete(running, f"mqctl --url {url} info ") == ["alpha", "q"]
    assert complete(running, f"mqctl info --url {url} a") == ["alpha"]
    assert complete(running, f"mqctl --url {url} create x --dead-letter-queue a") == ["alpha"]


def test_completion_in_a_real_bash_keeps_the_url_whole(running):
    """Bash splits words at ':' before click sees them: an interactive bash on a terminal, the
    completion script sourced as the docs say, then TAB after --url http://127.0.0.1:PORT."""
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    running("create", "alpha")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: an interactive bash whose mqctl is ours, asking nothing of MQ_URL
        os.environ.update(PATH=f"{Path(MQCTL).parent}:{os.environ['PATH']}", PS1="$ ")
        os.environ.pop("MQ_URL", None)
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
    try:
        typed = TerminalReader(terminal)
        os.write(terminal, b'eval "$(_MQCTL_COMPLETE=bash_source mqctl)"; echo sourced\n')
        typed.until("sourced\r\n")
        os.write(terminal, f"mqctl --url {running.env['MQ_URL']} info al\t".encode())
        assert "info alpha" in typed.until("info alpha")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(terminal)


class TerminalReader:
    """What a terminal shows, read until a text appears (or ten seconds pass)."""

    def __init__(self, terminal: int) -> None:
        self.terminal = terminal
        self.seen = ""

    def until(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.terminal], [], [], 0.1)
            if ready:
                self.seen += os.read(self.terminal, 65536).decode(errors="replace")
        return self.seen


def test_counts_are_worded_right(running):
    running("create", "dead")
    running("create", "work", "--max-attempts", "1", "--dead-letter-queue", "dead")
    running("send", "work", "once")
    receipt = json.loads(running("receive", "work", "--lease", "30", "--json").stdout)["receipt"]
    running("release", "work", receipt)
    assert running("receive", "work", "--lease", "30").returncode == 1  # dead-lettered
    assert running("redrive", "dead").stdout == "moved 1 message back\n"
    running("send", "q", "one")
    assert running("purge", "q").stdout == "purged 1 message from 'q'\n"
