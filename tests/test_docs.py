"""The README and the manual in docs/: their examples run as a new user would type them (against
a daemon on a free port), and the reference pages say what the code does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mqd import config, contract, protocol

from .helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def sh_blocks(page: Path, section: str) -> list[str]:
    """The ```sh blocks under the heading ``section`` of ``page`` (up to the next heading)."""
    text = page.read_text()
    match = re.search(rf"^#+ {re.escape(section)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"no section {section!r} in {page.name}"
    return re.findall(r"```sh\n(.*?)```", match.group(1), re.S)


@pytest.fixture
def shell_env(tmp_path):
    port = free_port()
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MQD_DATA_DIR": str(tmp_path / "data"),
        "MQD_PORT": str(port),
        "MQ_URL": f"http://127.0.0.1:{port}",
    }


@pytest.fixture
def started(shell_env):
    """mqd, started the README's way, stopped afterwards."""
    start = subprocess.run(["mqctl", "start"], env=shell_env, capture_output=True, text=True)
    assert start.returncode == 0, start.stderr
    yield shell_env
    subprocess.run(["mqctl", "stop", "--force"], env=shell_env, capture_output=True)


def run_script(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    script = script.replace("http://127.0.0.1:8000", env["MQ_URL"])
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the examples -------------------------------------------------------------------------------


def test_the_readme_tour_runs_as_written(started, tmp_path):
    (block,) = sh_blocks(README, "A short tour")
    result = run_script(block, started, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "first order\n" in out and '{"sku":42,"qty":1.50}\n1\n2\n3\n' in out
    assert "nothing came: exit 1" in out and '"content":"over HTTP"' in out


def test_the_readme_policies_run_as_written(started, tmp_path):
    (block,) = sh_blocks(README, "Queue policies")
    result = run_script(block, started, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "created queue 'jobs'" in result.stdout
    assert "created exchange 'events': jobs, audit" in result.stdout
    copies = [line.split("\t")[0] for line in result.stdout.splitlines() if "\t" in line]
    assert copies == ["audit", "jobs"]


def test_the_curl_tour_runs_as_written(started, tmp_path):
    (block,) = sh_blocks(DOCS / "api.md", "A tour with curl")
    result = run_script(block, started, tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"error"' not in result.stdout
    assert '{"sku":42,"qty":1}' in result.stdout and "204" in result.stdout


def test_every_mqctl_command_example_runs_as_written(shell_env, tmp_path):
    (block,) = sh_blocks(DOCS / "mqctl.md", "Every command by example")
    result = run_script(block, shell_env, tmp_path)
    try:
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "mqd started" in out and "created queue 'orders'" in out
        assert "first order\n" in out and '{"sku":42,"qty":1}\n' in out
        assert "got: a\nmulti-line\ngot: b\n" in out  # NUL-separated records kept their newline
        assert "nothing came: exit 1" in out
        assert "mqd stopped" in out
    finally:
        subprocess.run(["mqctl", "stop", "--force"], env=shell_env, capture_output=True)


def test_the_worker_pipeline_runs_as_written(started, tmp_path):
    (block,) = sh_blocks(DOCS / "mqctl.md", "A worker pipeline: at-least-once, with retries and dead letters")
    result = run_script(block, started, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "inbox/a.txt: 3 lines" in out and "inbox/b.txt: 5 lines" in out
    assert "inbox/missing.txt\n" in out  # peeked in the dead-letter queue
    assert "inbox/missing.txt: 2 lines" in out  # redriven and done
    assert "2 processed, 3 failed, 1 dead-lettered" in result.stderr
    assert "1 processed, 0 failed" in result.stderr


def test_the_scaling_out_commands_run_as_written(shell_env, tmp_path):
    from . import postgres

    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    (block,) = sh_blocks(DOCS / "scaling.md", "Scaling out: several mqd nodes on one PostgreSQL")
    url, schema = postgres.new_schema_url()
    script = "\n".join(line for line in block.splitlines() if "pip install" not in line)  # installed already
    script = script.replace("postgresql://postgres@127.0.0.1/test", url)
    script = script.replace("8101", str(free_port())).replace("8102", str(free_port()))
    try:
        result = run_script(script, shell_env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "sent on node A\n" in result.stdout
    finally:
        for node in ("node-a", "node-b"):
            subprocess.run(["mqctl", "stop", "--force", "--data-dir", str(tmp_path / node)], env=shell_env)
        postgres.drop_schema(schema)


# -- the reference pages say what the code does -------------------------------------------------


def test_every_mqctl_command_has_an_example():
    from mqctl.cli import cli

    examples = "\n".join(re.findall(r"```sh\n(.*?)```", (DOCS / "mqctl.md").read_text(), re.S))
    assert [name for name in cli.commands if not re.search(rf"\bmqctl {name}\b", examples)] == []


def api_sections() -> dict[str, str]:
    text = (DOCS / "api.md").read_text()
    return {
        m.group(1): m.group(2) for m in re.finditer(r"^### ([A-Z]+ \S+)\n(.*?)(?=^##|\Z)", text, re.S | re.M)
    }


@pytest.mark.parametrize("route", contract.ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_the_api_reference_lists_every_route_with_every_status_and_code(route):
    section = api_sections().get(f"{route.method} {route.path}")
    assert section is not None, f"docs/api.md has no section for {route.method} {route.path}"
    listed = {
        int(status) for row in re.findall(r"^\| ([0-9, ]+) \|", section, re.M) for status in row.split(",")
    }
    assert listed == set(route.replies), "the statuses listed differ from the contract's"
    for reply in route.replies.values():
        for code in reply.codes:
            assert f"`{code}`" in section, f"{code} is not said"


def test_the_api_reference_explains_every_error_code_with_its_status():
    text = (DOCS / "api.md").read_text()
    for code, meaning in protocol.ERROR_CODES.items():
        found = re.search(r"\((\d+)\)", meaning)
        status = found.group(1) if found else "–"  # a code of streams only
        assert re.search(rf"^\| `{code}` \| {status} \|", text, re.M), code


def test_the_operations_page_lists_every_setting():
    text = (DOCS / "operations.md").read_text()
    for name, (variable, _) in config.SETTINGS.items():
        flag = "--no-tcp" if name == "tcp" else f"--{name.replace('_', '-')}"
        assert f"`{flag}" in text and variable in text, name


def test_the_readme_stays_a_front_door():
    assert len(README.read_bytes()) < 12_000
    for link in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (ROOT / link).exists(), link


# -- the stream protocol's page ----------------------------------------------------------------------


def test_the_stream_page_lists_every_request_field_frame_and_close_code():
    from mqd import frames

    text = (DOCS / "streams.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z]+)` \| (.*)$", text, re.M)}
    for request in frames.REQUESTS.values():
        assert request.type in rows, request.type
        for field in request.fields:
            shown = f"**`{field}`**" if field in request.required else f"`{field}`"
            assert shown in rows[request.type], (request.type, field)
    for sent in frames.SENT:
        assert sent in rows, sent
    for code in frames.CLOSE_CODES:
        assert re.search(rf"^\| {code} \|", text, re.M), code
    for limit in (
        protocol.MAX_CREDIT,
        protocol.MAX_SUBSCRIPTIONS,
        protocol.STREAM_IN_FLIGHT,
        protocol.MAX_HELD,
    ):
        assert f"{limit:,}" in text or str(limit) in text, limit


async def test_the_stream_session_plays_as_written(tmp_path):
    """The page's session, sent frame by frame to a real mqd: every reply it shows comes, with the
    same type, seq, fields and code (ids, receipts and times may differ; a receipt the page shows
    is replaced by the one mqd gave)."""
    import aiohttp

    from .helpers import MqdProcess

    (block,) = re.findall(r"```frames\n(.*?)```", (DOCS / "streams.md").read_text(), re.S)
    daemon = MqdProcess(tmp_path / "data").start()
    try:
        daemon.call("POST", "/queues", {"name": "jobs"})
        async with aiohttp.ClientSession() as session, session.ws_connect(daemon.url + "/stream") as ws:
            receipts: dict[str, str] = {}
            for line in block.strip().splitlines():
                direction, text = line[0], line[2:]
                for written, given in receipts.items():
                    text = text.replace(written, given)
                if direction == ">":
                    await ws.send_str(text)
                    continue
                expected, got = json.loads(text), json.loads((await ws.receive(timeout=10)).data)
                assert got.keys() == expected.keys() and got["type"] == expected["type"], (expected, got)
                assert (got.get("seq"), got.get("code")) == (expected.get("seq"), expected.get("code"))
                for shown, actual in zip(expected.get("messages", []), got.get("messages", []), strict=True):
                    assert shown.keys() == actual.keys() and shown["content"] == actual["content"]
                    receipts[shown["receipt"]] = actual["receipt"]
    finally:
        daemon.stop()
