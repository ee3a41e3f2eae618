"""The daemon's life from the command line: start, stop, status and restart through the real
mqctl and mqd; which daemon a command speaks of; exit statuses as docs/mqctl.md's table says."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import postgres
from .helpers import MQCTL, Mq, MqdProcess, as_from_a_terminal, free_port, mqctl

EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_NO_ANSWER, EXIT_FAILED = 2, 3, 4, 7
EXIT_NOT_ALLOWED, EXIT_INTERRUPTED = 8, 130


def clean_env() -> dict[str, str]:
    """The environment of a shell that names no daemon."""
    names = ("MQ_URL", "MQD_DATA_DIR", "MQ_TOKEN", "MQD_TOKEN")
    return {k: v for k, v in os.environ.items() if k not in names}


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


def test_a_pidfile_of_a_dead_process_is_reported_then_cleaned_by_the_next_start(mq):
    mq.data_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (mq.data_dir / "mqd.pid").write_text(f"{dead.pid}\n")
    status = mq("status")
    assert status.returncode == EXIT_NOT_RUNNING and f"pid {dead.pid}" in status.stdout
    assert sorted(p.name for p in mq.data_dir.iterdir()) == ["mqd.pid"]  # status wrote nothing
    mq.start()
    assert mq.pid != dead.pid


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


# -- restart brings back the same daemon -----------------------------------------------------------


def test_restart_brings_back_the_daemon_as_it_was_started(mq):
    port = free_port()
    mq.start("--port", str(port), env={"MQD_FSYNC": "off", "MQD_MAX_WAITERS": "7"})
    restarted = mq("restart")  # another shell: neither the flag nor the variables are given again
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip().endswith(f"at http://127.0.0.1:{port}")
    state = json.loads(mq("status", "--json").stdout)
    assert state["fsync"] == "off" and state["url"] == f"http://127.0.0.1:{port}"


def test_options_given_to_restart_change_those_it_was_started_with(mq):
    mq.start(env={"MQD_FSYNC": "off"})
    port = free_port()
    restarted = mq("restart", "--port", str(port), env={"MQD_FSYNC": "always"})
    assert restarted.stdout.strip().endswith(f"at http://127.0.0.1:{port}")
    mq.env["MQ_URL"] = f"http://127.0.0.1:{port}"
    assert json.loads(mq("status", "--json").stdout)["fsync"] == "always"


def test_restart_of_a_postgresql_node_comes_back_on_postgresql(mq, tmp_path):
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    try:
        mq.start("--store", url)
        assert mq("create", "shared").returncode == 0
        mq.env["MQ_URL"] = mq("restart").stdout.split(" at ")[-1].strip()
        state = json.loads(mq("status", "--json").stdout)
        assert state["store"]["kind"] == "postgresql" and schema in state["store"]["location"]
        assert [q["name"] for q in json.loads(mq("list", "--json").stdout)] == ["shared"]
        assert url not in Path(f"/proc/{mq.pid}/cmdline").read_text()  # passwords stay off ps
    finally:
        mq("stop")
        postgres.drop_schema(schema)


def test_a_variable_set_at_restart_beats_the_flag_recorded_at_start(mq):
    mq.start("--port", str(free_port()))
    port = free_port()
    restarted = mq("restart", env={"MQD_PORT": str(port)})
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip().endswith(f"at http://127.0.0.1:{port}")


def test_a_daemon_started_with_a_token_is_not_restarted_without_one(mq):
    mq.start(env={"MQD_TOKEN": "s3cret"})
    refused = mq("restart")
    assert refused.returncode == EXIT_FAILED and "MQD_TOKEN" in refused.stderr
    assert mq("restart", env={"MQD_TOKEN": "s3cret"}).returncode == 0


# -- which daemon a command speaks of -------------------------------------------------------------


def test_stop_by_url_stops_that_daemon_from_anywhere_and_writes_nothing(mq, tmp_path):
    mq.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url, pid = mq.env["MQ_URL"], mq.pid
    result = subprocess.run(
        [MQCTL, "--url", url, "stop"], cwd=elsewhere, capture_output=True, text=True, env=clean_env()
    )
    assert result.returncode == 0 and f"stopped (pid {pid})" in result.stdout
    assert not alive(pid)
    assert list(elsewhere.iterdir()) == []


def test_status_by_url_speaks_of_that_url_only(mq):
    mq.start()
    result = mq("--url", f"http://127.0.0.1:{free_port()}", "status")
    assert result.returncode == EXIT_NOT_RUNNING and "nothing answers" in result.stdout


def test_status_of_a_data_directory_never_reports_another_daemon(mq, tmp_path):
    mq.start()  # a daemon runs; the other data directory has only a stale pidfile
    other = tmp_path / "other"
    other.mkdir()
    (other / "mqd.pid").write_text("999999\n")
    result = mq("status", "--data-dir", str(other))
    assert result.returncode == EXIT_NOT_RUNNING and "999999" in result.stdout


def test_status_and_stop_of_a_missing_data_directory_create_nothing(tmp_path):
    missing = tmp_path / "missing"
    status = mqctl("status", "--data-dir", str(missing), env=clean_env())
    stop = mqctl("stop", "--data-dir", str(missing), env=clean_env())
    assert (status.returncode, stop.returncode) == (EXIT_NOT_RUNNING, 0)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mqctl("stop", "--data-dir", str(empty), env=clean_env()).returncode == 0
    assert list(empty.iterdir()) == []  # no lock file either


def test_with_nothing_named_commands_speak_of_the_daemon_of_dot_data(tmp_path):
    """mqctl start --port N in a directory, then plain commands there: they find it (its URL is
    recorded beside its pidfile), as mqctl status does, without MQ_URL."""
    here = tmp_path / "project"
    here.mkdir()

    def run(*args):
        return subprocess.run([MQCTL, *args], cwd=here, capture_output=True, text=True, env=clean_env())

    started = run("start", "--port", str(free_port()))
    try:
        assert started.returncode == 0, started.stderr
        assert run("create", "q").returncode == 0
        assert run("send", "q", "found").returncode == 0
        assert run("receive", "q").stdout == "found\n"
    finally:
        assert run("stop").returncode == 0


def test_stop_with_nothing_named_stops_the_daemon_at_the_default_url(tmp_path):
    """No ./data daemon, no MQ_URL: stop speaks of the daemon at the default URL, as status does
    (here one started by mqctl from elsewhere)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("something already listens on 127.0.0.1:8000")
    elsewhere, there = tmp_path / "elsewhere", tmp_path / "there"
    elsewhere.mkdir()
    started = mqctl("start", "--data-dir", str(there), "--port", "8000", env=clean_env())
    assert started.returncode == 0, started.stderr
    pid = int((there / "mqd.pid").read_text())
    try:
        result = subprocess.run(
            [MQCTL, "stop"], cwd=elsewhere, capture_output=True, text=True, env=clean_env()
        )
        assert result.returncode == 0 and f"stopped (pid {pid})" in result.stdout
        assert not alive(pid) and list(elsewhere.iterdir()) == []
    finally:
        mqctl("stop", "--data-dir", str(there), env=clean_env())


def test_status_names_the_store_and_the_log_line_too(mq):
    mq.start()
    line = mq("status").stdout
    assert f"SQLite in {mq.data_dir}" in line
    assert f"store: SQLite in {mq.data_dir}" in (mq.data_dir / "mqd.log").read_text()


# -- exit statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["stop"], ["restart"], ["status"]])
def test_a_url_without_a_scheme_is_a_usage_error(mq, command):
    result = mq("--url", "127.0.0.1:8300", *command)
    assert result.returncode == EXIT_USAGE and "http://host:port" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["create"], ["send", "q", "--delay", "-1"], ["no-such-command"], ["start", "--store", "mysql://x"]],
    ids=["missing-argument", "bad-option", "no-command", "bad-store"],
)
def test_usage_errors_are_one_line_and_exit_2(mq, args):
    result = mq(*args)
    assert result.returncode == EXIT_USAGE
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("mqctl: "), result.stderr
    assert "MQD_" not in result.stderr  # it speaks of what the user typed


def test_a_daemon_that_wants_a_token_says_how_to_give_it(mq):
    mq.start(env={"MQD_TOKEN": "s3cret"})
    result = mq("list")
    assert result.returncode == EXIT_NOT_ALLOWED and "MQ_TOKEN" in result.stderr
    assert mq("status").returncode == EXIT_NOT_ALLOWED
    wrong = mq("list", env={"MQ_TOKEN": "guess"})
    assert wrong.returncode == EXIT_NOT_ALLOWED and "refused the access token" in wrong.stderr
    assert mq("list", env={"MQ_TOKEN": "s3cret"}).returncode == 0


def test_a_token_file_others_can_read_is_refused_as_mqd_refuses_it(running, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o644)
    result = running("--token-file", str(token_file), "list")
    assert result.returncode == EXIT_USAGE and "chmod 600" in result.stderr


def test_an_empty_standard_input_is_not_sent_as_a_message(running):
    result = running("send", "q", input="")
    assert result.returncode == EXIT_USAGE and "empty" in result.stderr
    assert running("info", "q", "--json").stdout.count('"messages":0') == 1
    assert running("send", "q", "").returncode == 0  # asked for: an empty argument


@pytest.mark.parametrize(
    "command",
    [["receive", "q", "--follow"], ["run", "q", "--", "true"], ["top"]],
    ids=["follow", "run", "top"],
)
def test_ctrl_c_exits_130(running, command):
    process = subprocess.Popen(
        [MQCTL, *command],
        env={**os.environ, **running.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=as_from_a_terminal,
    )
    deadline = time.monotonic() + 10  # until it waits for messages, or has drawn once
    while command[0] != "top" and json.loads(running("status", "--json").stdout)["waiting_receivers"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if command[0] == "top":
        process.stdout.readline()
    process.send_signal(signal.SIGINT)
    assert process.wait(15) == EXIT_INTERRUPTED


def test_ctrl_c_gives_back_at_once_what_follow_held(running):
    big = "x" * 20000
    running("send", "q", "--lines", input="".join(f"{i} {big}\n" for i in range(50)))
    reader, writer = os.pipe()  # nobody reads: the output blocks with messages still held
    try:
        process = subprocess.Popen(
            [MQCTL, "receive", "q", "--follow"],
            env={**os.environ, **running.env},
            stdout=writer,
            preexec_fn=as_from_a_terminal,
        )
        deadline = time.monotonic() + 10
        while json.loads(running("info", "q", "--json").stdout)["leased"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == EXIT_INTERRUPTED
    finally:
        os.close(writer)
        os.close(reader)
    info = json.loads(running("info", "q", "--json").stdout)
    assert info["leased"] == 0 and info["ready"] > 0  # given back, not leased to nobody for 30 s


# -- mqd --verify ---------------------------------------------------------------------------------


def test_verify_says_when_a_running_mqd_holds_the_store(mq):
    mq.start()
    result = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--data-dir", str(mq.data_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3 and "in use" in result.stderr


def test_verify_of_a_path_without_a_store_fails_and_creates_nothing(tmp_path):
    typo = tmp_path / "bakcup"
    result = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--data-dir", str(typo)], capture_output=True, text=True
    )
    assert result.returncode == 4 and "no mq store" in result.stderr
    assert not typo.exists()


def test_verify_of_one_message_says_so_in_the_singular(mq):
    mq.start()
    assert mq("create", "q").returncode == 0 and mq("send", "q", "x").returncode == 0
    mq("stop")
    result = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--data-dir", str(mq.data_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "1 message checked" in result.stdout


def test_verify_checks_the_postgresql_store_that_is_configured(tmp_path):
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    node = MqdProcess(tmp_path / "node", "--store", url).start()
    try:
        node.call("POST", "/queues", {"name": "q"})
        node.call("POST", "/queues/q/messages", {"messages": [{"content": i} for i in range(5)]})
        verify = [
            sys.executable,
            "-m",
            "mqd",
            "--verify",
            "--store",
            url,
            "--data-dir",
            str(tmp_path / "empty"),
        ]
        sound = subprocess.run(verify, capture_output=True, text=True)
        assert sound.returncode == 0 and "5 messages checked" in sound.stdout
        postgres.execute(f"UPDATE {schema}.messages SET content = '\"rotten\"' WHERE content = '3'")
        damaged = subprocess.run(verify, capture_output=True, text=True)
        assert damaged.returncode == 1 and "damaged" in damaged.stderr
    finally:
        node.stop()
        postgres.drop_schema(schema)
    missing = subprocess.run(verify, capture_output=True, text=True)  # the schema is gone: a typo
    assert missing.returncode == 4 and "no mq schema" in missing.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--store", "postgresql://nobody@127.0.0.1:1/none"],
        capture_output=True,
        text=True,
    )
    assert unreachable.returncode == 4 and "Cannot reach" in unreachable.stderr
