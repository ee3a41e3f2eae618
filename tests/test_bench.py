"""A tiny run of the benchmark, so it cannot rot (timings are printed, never judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.__main__ import KEPT_MARKER

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_smoke_run_reports_mqd_and_the_ceiling(tmp_path):
    output = tmp_path / "performance.md"
    analysis = f"{KEPT_MARKER}\n## Why\nThe reasons behind the figures.\n"
    output.write_text(f"# figures of an earlier run\n\n{analysis}")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    for heading in ("## Targets", "### W1", "### W2", "### W3", "### W4", "### W5–W8"):
        assert heading in report
    assert "| mqd (fsync always) |" in report and "| aiohttp from memory (ceiling) |" in report
    assert "w8_seconds" in report and "w7_send" in report and "w5_ratio" in report
    assert report.endswith(analysis) and "earlier run" not in report  # new figures, the analysis kept
