"""The README's examples, run as a new user would type them (against a daemon on a free port)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def sh_blocks(section: str) -> list[str]:
    """The ```sh blocks under the README heading ``section`` (up to the next heading)."""
    text = README.read_text()
    match = re.search(rf"^#+ {re.escape(section)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"no section {section!r} in the README"
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


def run_script(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_mqctl_examples_run_as_written(shell_env, tmp_path):
    (block,) = sh_blocks("mqctl by example")
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


def test_the_curl_tour_runs_as_written(shell_env, tmp_path):
    (block,) = sh_blocks("A tour of the API with curl")
    start = subprocess.run(["mqctl", "start"], env=shell_env, capture_output=True, text=True)
    assert start.returncode == 0, start.stderr
    try:
        script = block.replace("http://127.0.0.1:8000", shell_env["MQ_URL"])
        result = run_script(script, shell_env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert '"error"' not in result.stdout
        assert '{"sku":42,"qty":1}' in result.stdout and "204" in result.stdout
    finally:
        subprocess.run(["mqctl", "stop"], env=shell_env, capture_output=True)


def test_the_worker_pipeline_runs_as_written(shell_env, tmp_path):
    (block,) = sh_blocks("A worker pipeline: at-least-once, with retries and dead letters")
    start = subprocess.run(["mqctl", "start"], env=shell_env, capture_output=True, text=True)
    assert start.returncode == 0, start.stderr
    try:
        result = run_script(block, shell_env, tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "inbox/a.txt: 3 lines" in out and "inbox/b.txt: 5 lines" in out
        assert "inbox/missing.txt\n" in out  # peeked in the dead-letter queue
        assert "inbox/missing.txt: 2 lines" in out  # redriven and done
        assert "2 processed, 3 failed, 1 dead-lettered" in result.stderr
        assert "1 processed, 0 failed" in result.stderr
    finally:
        subprocess.run(["mqctl", "stop"], env=shell_env, capture_output=True)


def test_every_mqctl_command_has_an_example_in_the_readme():
    from mqctl.cli import cli

    examples = "\n".join(re.findall(r"```sh\n(.*?)```", README.read_text(), re.S))
    missing = [name for name in cli.commands if not re.search(rf"\bmqctl {name}\b", examples)]
    assert missing == []


def test_the_scaling_out_commands_run_as_written(shell_env, tmp_path):
    from . import postgres

    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    (block,) = sh_blocks("Scaling out: several mqd nodes on one PostgreSQL")
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
