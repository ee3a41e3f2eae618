"""Hostile input: schemathesis generates requests from /openapi.json (valid and invalid ones)
against a real mqd, with every check; nothing may fail, answer 5xx, or leave a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import MqdProcess
from .conftest import scaled

EXAMPLES = scaled(15, 200)


def schemathesis() -> str:
    command = Path(sys.executable).with_name("st")
    if not command.exists() and shutil.which("st") is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return str(command if command.exists() else shutil.which("st"))


def test_schemathesis_finds_no_failure_no_server_error_and_no_traceback(tmp_path, figures):
    st = schemathesis()
    # Long-polls capped at half a second: fuzzing 60-second waits would only measure patience.
    daemon = MqdProcess(tmp_path / "data", "--max-wait", "0.5").start()
    try:
        result = subprocess.run(
            [
                st,
                "run",
                f"{daemon.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--workers",
                "1",
                "--seed",
                "20261124",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,  # schemathesis keeps a cache in its working directory: not in the repository
        )
    finally:
        daemon.stop()
    summary = [line for line in result.stdout.splitlines() if "generated" in line or "passed" in line]
    figures.update(examples_per_operation=EXAMPLES, summary=" | ".join(s.strip() for s in summary[-2:]))
    log = daemon.log()
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
