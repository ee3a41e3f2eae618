"""python -m bench: run the workloads against mqd and every peer found here; print and save tables.

Each run starts every system afresh (its own temporary data), drives W1–W4 through the same
adapters, then runs mqd alone through the backlog, shell and restart workloads (W5–W8). Figures
are medians over the runs, with their spread; ratios are taken within this benchmark only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import nodes, observing, report, servers, shell, streams, workloads
from .systems import BY_NAME, SYSTEMS, System

SMOKE_SYSTEMS = ("mqd", "ceiling")
INSTALL_PEERS = Path(__file__).with_name("install-peers")
KEPT_MARKER = "<!-- analysis: written by hand, kept when python -m bench rewrites this file -->"


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="length of each timed workload (default 2)"
    )
    parser.add_argument(
        "--systems", help=f"comma-separated, of: {', '.join(BY_NAME)} (default: all available)"
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3,W4,W5,W6,W7,W8,W9,W10,W11", help="comma-separated (default all)"
    )
    parser.add_argument("--backlog", type=int, default=1_000_000, help="the large backlog of W6 and W8")
    parser.add_argument("--output", help="also write the report here (e.g. docs/performance.md)")
    parser.add_argument("--smoke", action="store_true", help="seconds: mqd and the ceiling, tiny counts")
    options = parser.parse_args(argv)
    if options.smoke:
        options.runs, options.seconds, options.backlog = 1, 0.3, 2000
        options.systems = options.systems or ",".join(SMOKE_SYSTEMS)
    return options


def _systems(names: str | None) -> list[System]:
    chosen = [BY_NAME[n] for n in names.split(",")] if names else list(SYSTEMS)
    present = []
    for system in chosen:
        reason = system.missing()
        if reason:
            print(f"skipping {system.label}: {reason}", file=sys.stderr)
        else:
            present.append(system)
    return present


async def _peer_workloads(system: System, wanted: set[str], seconds: float, results: report.Results) -> None:
    with servers.temporary_directory(system.name) as directory, system.start(directory) as server:
        await workloads.prepare(system, server)
        if "W1" in wanted:
            results.setdefault(("W1", system.name), []).append(
                await workloads.one_producer(system, server, seconds)
            )
        if "W2" in wanted:
            results.setdefault(("W2", system.name), []).append(
                await workloads.many_producers(system, server, seconds)
            )
        if "W3" in wanted:
            await workloads.prepare(system, server)  # empty again
            rate = (
                statistics.median(m.rate for m in results.get(("W2", system.name), []))
                if "W2" in wanted
                else 5000
            )
            backlog = int(min(40_000, max(500, rate * seconds * 2)))
            measurement = await workloads.many_consumers(system, server, backlog, seconds * 3)
            results.setdefault(("W3", system.name), []).append(measurement)
        if "W4" in wanted:
            results.setdefault(("W4", system.name), []).append(
                await workloads.fastest_enqueue(system, server, seconds)
            )


async def _backlog(seconds: float, backlog: int, wanted: set[str], extra: dict[str, list[float]]) -> None:
    """W6 and W8 on mqd: the same workloads with nothing, 100,000 and ``backlog`` messages waiting."""
    system = BY_NAME["mqd"]
    sizes = sorted({0, min(100_000, backlog), backlog})
    rates: dict[int, dict[str, float]] = {}
    for size in sizes:
        directory = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
        try:
            with system.start(directory) as server:
                await workloads.prepare(system, server)
                await workloads.preload(system, server, size)
                rss = servers.rss_bytes(server.pid)
                w1 = await workloads.one_producer(system, server, seconds)
                w2 = await workloads.many_producers(system, server, seconds)
                w3 = await workloads.many_consumers(
                    system, server, 0, seconds
                )  # from the head of the backlog
                rates[size] = {"W1": w1.rate, "W2": w2.rate, "W3": w3.rate}
                print(
                    f"  W6 backlog {size:>9,}: W1 {w1.rate:,.0f}  W2 {w2.rate:,.0f}  "
                    f"W3 {w3.rate:,.0f} msg/s, RSS {rss / 2**20:.0f} MiB",
                    file=sys.stderr,
                )
            if size == backlog:
                extra.setdefault("w6_rss_mib", []).append(rss / 2**20)
                if "W8" in wanted:
                    extra.setdefault("w8_seconds", []).append(shell.restart_to_ready(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    for workload in ("W1", "W2", "W3"):
        extra.setdefault(f"w6_{workload.lower()}_ratio", []).append(
            rates[backlog][workload] / rates[0][workload]
        )
        for size in sizes:
            extra.setdefault(f"w6_{workload.lower()}_at_{size}", []).append(rates[size][workload])


async def _mqd_alone(options: argparse.Namespace, wanted: set[str], extra: dict[str, list[float]]) -> None:
    if "W11" in wanted:  # the streams' own: one producer with 1,000 in flight; 1,000 idle streams
        system = BY_NAME["mqd"]
        with servers.temporary_directory("mqd-streams") as directory, system.start(directory) as server:
            extra.setdefault("w4s", []).append(await streams.window(server, options.seconds))
            extra.setdefault("w4s_without_keys", []).append(
                await streams.window(server, options.seconds, keys=False)
            )
            for key, value in (await streams.idle(server)).items():
                extra.setdefault(key, []).append(value)
    if wanted & {"W6", "W8"}:
        await _backlog(options.seconds, options.backlog, wanted, extra)
    if wanted & {"W5", "W7"}:
        system = BY_NAME["mqd"]
        with servers.temporary_directory("mqd-shell") as directory, system.start(directory) as server:
            await workloads.prepare(system, server)
            if "W5" in wanted:
                redis = None
                if servers.available("redis-server"):
                    redis = servers.redis(directory, durable=True)
                timings = await asyncio.to_thread(
                    _shell_timings, server.url, redis, 3 if options.smoke else 20
                )
                for name, values in timings.items():
                    extra.setdefault(f"w5 {name}", []).append(statistics.median(values))
                extra.setdefault("w5_ratio", []).append(
                    statistics.median(timings["mqctl send"])
                    / statistics.median(timings['python -c "import click"'])
                )
            if "W7" in wanted:
                lines = 2000 if options.smoke else 100_000
                figures = await asyncio.to_thread(shell.pipelines, server.url, lines)
                extra.setdefault("w7_send", []).append(figures["send --lines"])
                extra.setdefault("w7_receive", []).append(figures["receive --count"])


async def _nodes(run: int, options: argparse.Namespace, scaling: dict) -> None:
    """W9, when a PostgreSQL is there to share."""
    reason = await nodes.unavailable()
    if reason:
        print(f"skipping W9 (mqd nodes on PostgreSQL): {reason}", file=sys.stderr)
        return
    print(f"run {run}/{options.runs}: 1, 2 and 3 mqd nodes on PostgreSQL (W9)", file=sys.stderr)
    for count, figures in (await nodes.scaling(options.seconds)).items():
        for key, value in figures.items():
            scaling.setdefault((count, key), []).append(value)


def _shell_timings(mqd_url: str, redis, repeats: int) -> dict[str, list[float]]:
    if redis is None:
        return shell.one_command(mqd_url, None, repeats)
    with redis as server:
        return shell.one_command(mqd_url, server.port, repeats)


def _report(options, results: report.Results, extra: dict[str, list[float]], seconds_taken: float) -> str:
    medians = {key: statistics.median(values) for key, values in extra.items()}
    lines = [
        "# Performance",
        "",
        f"Measured {report.machine()}; {options.runs} run(s) of {options.seconds:g} s per workload, "
        f"medians with their spread; 100-byte messages; the load generator shares the machine. "
        f"The whole benchmark took {seconds_taken / 60:.0f} minutes. Produced by `python -m bench`.",
        "",
        *report.targets(results, medians),
    ]
    for workload in report.WORKLOADS:
        lines += report.workload_table(results, workload)
    if extra:
        lines += ["### W5–W8 — mqd alone", "", "| figure | median |", "|---|---|"]
        lines += [f"| {key} | {value:,.2f} |" for key, value in sorted(medians.items())]
        lines.append("")
    return "\n".join(lines)


async def _main(options: argparse.Namespace) -> int:
    wanted = set(options.workloads.split(","))
    if not options.smoke and not servers.available("beanstalkd") and INSTALL_PEERS.exists():
        subprocess.run([str(INSTALL_PEERS)], check=False)
    systems = _systems(options.systems)
    results: report.Results = {}
    extra: dict[str, list[float]] = {}
    scaling: dict[tuple[int, str], list[float]] = {}
    observed: dict[str, list[dict[str, float]]] = {}
    started = time.monotonic()
    for run in range(1, options.runs + 1):
        for system in systems:
            print(f"run {run}/{options.runs}: {system.label}", file=sys.stderr)
            await _peer_workloads(system, wanted & {"W1", "W2", "W3", "W4"}, options.seconds, results)
        if any(s.name == "mqd" for s in systems):
            print(f"run {run}/{options.runs}: mqd alone (W5–W8)", file=sys.stderr)
            await _mqd_alone(options, wanted, extra)
        if "W9" in wanted and not options.smoke:
            await _nodes(run, options, scaling)
        if "W10" in wanted:
            print(f"run {run}/{options.runs}: /status and /metrics under load (W10)", file=sys.stderr)
            for store, figures in (await observing.latencies(options.backlog, options.seconds * 2)).items():
                observed.setdefault(store, []).append(figures)
    text = _report(options, results, extra, time.monotonic() - started) + report.scaling_table(scaling)
    text += observing.table(observed, options.backlog)
    print(text)
    if options.output:
        _write_report(Path(options.output), text)
    return 0


def _write_report(path: Path, text: str) -> None:
    """Replace the figures in ``path`` but keep its hand-written analysis, which starts at
    ``KEPT_MARKER``: the reasons behind the figures outlive one run of them."""
    kept = ""
    if path.exists():
        _, marker, rest = path.read_text().partition(KEPT_MARKER)
        kept = marker + rest
    path.write_text(text + "\n" + ("\n" + kept if kept else ""))


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(_main(_options(argv))))


if __name__ == "__main__":
    main()
