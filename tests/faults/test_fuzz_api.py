"""Hostile input: schemathesis generates requests from /openapi.json (valid and invalid ones)
against a real mqd, with every check; nothing may fail, answer 5xx, or leave a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
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


def test_schemathesis_follows_the_links_to_ack_extend_and_release_with_real_receipts(tmp_path, figures):
    """The stateful phase chains operations through the document's links (declare, send, lease,
    then ack, extend or release with the receipt the lease returned). ``use_after_free`` is left
    out: a purge (DELETE …/messages) empties a queue, after which a receive answers 204, as
    documented, where that check expects the route itself to be gone."""
    st = schemathesis()
    daemon = MqdProcess(tmp_path / "data", "--max-wait", "0.5").start()
    try:
        result = subprocess.run(
            [
                st,
                "run",
                f"{daemon.url}/openapi.json",
                "--phases",
                "stateful",
                "--max-time",
                str(scaled(30, 300)),
                "--exclude-checks",
                "use_after_free",
                "--seed",
                "20261202",
                "--no-color",
                "--report",
                "har",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
    finally:
        daemon.stop()
    # A receive's 200 is one message, or a list with ?count: schemathesis calls the links of the
    # other shape unresolvable. Those, and nothing else, may be reported.
    cases = result.stdout.split("Test Case ID:")[1:]
    unresolved = [case for case in cases if "Could not resolve parameter `receipt`" in case]
    assert result.returncode == 0 or len(unresolved) == len(cases) > 0, result.stdout[-4000:]
    settled = Counter()
    for har in (tmp_path / "report").glob("*.json"):
        for entry in json.loads(har.read_text())["log"]["entries"]:
            path = entry["request"]["url"].split("?")[0]
            if re.search(r"/messages/[^/]+(/release|/extend)?$", path) and entry["response"]["status"] < 300:
                settled[path.rsplit("/", 1)[-1] if path.endswith(("release", "extend")) else "ack"] += 1
    links = [line.strip() for line in result.stdout.splitlines() if "API Links" in line]
    figures.update(links=links[-1] if links else None, settled_with_real_receipts=dict(settled))
    assert settled["ack"] and settled["extend"] and settled["release"], settled
