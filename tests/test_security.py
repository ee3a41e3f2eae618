"""Safe by default: protected mode, the access token, browser guards, the unix socket, limits."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from mq import ApiError, Client

from .helpers import mqctl

TOKEN = "s3cret-token-for-tests"


def run_mqd(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mqd", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **(env or {})},
    )


# -- protected mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_listening_beyond_loopback_without_a_token_is_refused(tmp_path, host):
    result = run_mqd("--host", host, "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "without an access token" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "mq.sqlite3").exists()


def test_insecure_allows_it_on_purpose(mqd):
    daemon = mqd("--host", "0.0.0.0", "--insecure")
    assert daemon.call("GET", "/status")[0] == 200


def test_a_token_allows_it(mqd):
    daemon = mqd("--host", "0.0.0.0", env={"MQD_TOKEN": TOKEN})
    assert daemon.call("GET", "/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_a_token_file_readable_by_others_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    result = run_mqd("--token-file", str(token_file), "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "chmod 600" in result.stderr


# -- the token ----------------------------------------------------------------------------------


@pytest.fixture
def guarded(mqd, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    daemon = mqd("--token-file", str(token_file))
    daemon.token_file = token_file
    return daemon


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_requests_without_the_right_token_are_401_with_json(guarded, headers):
    status, body, reply_headers = guarded.call("GET", "/status", headers=headers)
    assert status == 401 and "token" in body["error"]
    assert reply_headers["WWW-Authenticate"].startswith("Bearer")


def test_the_right_token_is_let_in(guarded):
    status, _, _ = guarded.call(
        "POST", "/queues", {"name": "q"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 201


def test_mqctl_sends_the_token_from_mq_token_or_a_token_file(guarded):
    env = {"MQ_URL": guarded.url}
    assert mqctl("list", env=env).returncode == 8  # not allowed: no token
    assert mqctl("create", "q", env={**env, "MQ_TOKEN": TOKEN}).returncode == 0
    result = mqctl("--token-file", str(guarded.token_file), "send", "q", "hi", env=env)
    assert result.returncode == 0, result.stderr


# -- browser guards -----------------------------------------------------------------------------


@pytest.fixture
def daemon(mqd):
    daemon = mqd()
    daemon.call("POST", "/queues", {"name": "q"})
    daemon.call("POST", "/queues/q/messages", {"content": "precious"})
    return daemon


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Host": "evil.example"},
        {"Host": "attacker.example:8000"},
        {"Host": "[::1"},
    ],
    ids=[
        "img-tag",
        "same-site",
        "foreign-origin",
        "null-origin",
        "rebound-host",
        "rebound-host-port",
        "unclosed-bracket",
    ],
)
def test_a_web_page_cannot_consume_a_message(daemon, headers):
    status, body, _ = daemon.call("GET", "/queues/q/messages", headers=headers)
    assert status == 403 and body["error"]
    assert daemon.call("GET", "/queues/q")[1]["messages"] == 1  # still there


def test_a_form_post_from_a_page_is_refused(daemon):
    headers = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    status, _, _ = daemon.call("POST", "/queues/q/messages", {"content": "spam"}, headers=headers)
    assert status == 403
    assert daemon.call("GET", "/queues/q")[1]["messages"] == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Host": "localhost"}, {"Host": "127.0.0.1:1"}, {"Host": "[::1]:8000"}, {"Sec-Fetch-Site": "none"}],
    ids=["plain", "localhost", "ip", "ipv6", "typed-into-the-address-bar"],
)
def test_local_clients_are_unaffected(daemon, headers):
    status, body, _ = daemon.call("GET", "/queues/q/peek", headers=headers)
    assert status == 200 and body["messages"][0]["content"] == "precious"


def test_the_daemons_own_origin_is_accepted(daemon):
    host = daemon.url.removeprefix("http://")
    assert daemon.call("GET", "/status", headers={"Origin": daemon.url, "Host": host})[0] == 200


# -- the unix socket ----------------------------------------------------------------------------


def test_the_unix_socket_is_mode_0660_and_mqctl_uses_it(mqd, tmp_path):
    path = tmp_path / "mqd.sock"
    mqd("--unix", str(path))
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    env = {"MQ_URL": f"unix:{path}"}
    assert mqctl("create", "q", env=env).returncode == 0
    assert mqctl("send", "q", "over a socket", env=env).returncode == 0
    assert mqctl("receive", "q", env=env).stdout == "over a socket\n"


def test_unix_only_listens_on_no_tcp_port(mqd, tmp_path):
    path = tmp_path / "mqd.sock"
    daemon = mqd("--unix", str(path), "--no-tcp", wait=False)
    deadline = time.monotonic() + 10
    while not (tmp_path / "data" / "mqd.url").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "data" / "mqd.url").read_text().strip() == f"unix:{path}"
    with Client(f"unix:{path}") as client:
        assert client.status()["status"] == "ok"
    assert "listening on unix:" in daemon.log()
    assert "http://" not in daemon.log()


# -- limits -------------------------------------------------------------------------------------


def test_long_poll_receivers_beyond_the_cap_get_503_with_retry_after(mqd):
    daemon = mqd("--max-waiters", "2")
    daemon.call("POST", "/queues", {"name": "q"})
    waiting = [
        threading.Thread(target=daemon.call, args=("GET", "/queues/q/messages?wait=5")) for _ in range(2)
    ]
    for thread in waiting:
        thread.start()
    time.sleep(0.5)
    status, body, headers = daemon.call("GET", "/queues/q/messages?wait=5")
    assert status == 503 and "waiting" in body["error"] and headers["Retry-After"] == "1"
    daemon.call("POST", "/queues/q/messages", {"messages": [{"content": 1}, {"content": 2}]})
    for thread in waiting:
        thread.join(10)
    assert daemon.call("GET", "/queues/q/messages?wait=0.1")[0] == 204  # the cap is free again


def test_too_many_headers_are_refused(mqd):
    daemon = mqd("--max-headers", "10")
    status, _, _ = daemon.call("GET", "/status", headers={f"X-Filler-{i}": "x" for i in range(20)})
    assert status == 400  # aiohttp's own reply, in plain text: its parser refused the request
    log = daemon.log()
    assert "Traceback" not in log and "WARNING mqd.http: refused a malformed HTTP request" in log
    assert daemon.call("GET", "/status")[0] == 200  # and the daemon carries on


def test_the_client_error_is_one_line_for_a_refused_request(guarded):
    with Client(guarded.url) as client, pytest.raises(ApiError) as refused:
        client.status()
    assert refused.value.status == 401
