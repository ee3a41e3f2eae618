"""The README's examples, run as a new user would type them (against a daemon on a free port)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def sh_blocks(section: str) -> list[str]:
    """The ```sh blocks under the README heading ``section`` (up to the next heading of its level)."""
    text = README.read_text()
    match = re.search(rf"^(#+) {re.escape(section)}\n(.*?)(?=^\1 |\Z)", text, re.S | re.M)
    assert match, f"no section {section!r} in the README"
    return re.findall(r"```sh\n(.*?)```", match.group(2), re.S)


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
