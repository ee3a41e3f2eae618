"""Medians, spreads and ratios; the targets of the performance issue, judged; all as Markdown."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable

from .systems import BY_NAME
from .workloads import Measurement

WORKLOADS = {
    "W1": "W1 — 1 producer, each send acknowledged",
    "W2": "W2 — 16 concurrent producers",
    "W3": "W3 — 16 concurrent consumers draining",
    "W4": "W4 — fastest enqueue (mqd: batches of 1,000)",
}

Results = dict[tuple[str, str], list[Measurement]]


def _median(runs: list[Measurement], field: str) -> float:
    return statistics.median(getattr(m, field) for m in runs)


def _spread(runs: list[Measurement]) -> str:
    rates = [m.rate for m in runs]
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


def workload_table(results: Results, workload: str) -> list[str]:
    rows = [(name, runs) for (w, name), runs in results.items() if w == workload]
    if not rows:
        return []
    mqd = results.get((workload, "mqd"))
    lines = [f"### {WORKLOADS[workload]}", ""]
    latency = workload == "W1"
    header = "| system | msg/s (median) | min–max | server CPU µs/msg |"
    header += " p50 ms | p99 ms |" if latency else ""
    header += " mqd ÷ it |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, runs in sorted(rows, key=lambda row: -_median(row[1], "rate")):
        ratio = f"{_median(mqd, 'rate') / _median(runs, 'rate'):.2f}×" if mqd else "–"
        figures = f"{_median(runs, 'rate'):,.0f} | {_spread(runs)} | {_median(runs, 'cpu_us'):,.0f}"
        line = f"| {BY_NAME[name].label} | {figures} |"
        if latency:
            line += f" {_median(runs, 'p50_ms'):.2f} | {_median(runs, 'p99_ms'):.2f} |"
        lines.append(line + f" {ratio} |")
    return [*lines, ""]


class Targets:
    """The issue's targets, each judged from figures of this run only."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def check(
        self, description: str, value: Callable[[], float] | None, goal: Callable[[float], bool], unit: str
    ) -> None:
        if value is None:
            self.lines.append(f"| {description} | not measured | – |")
            return
        try:
            figure = value()
        except (KeyError, ZeroDivisionError, statistics.StatisticsError):
            self.lines.append(f"| {description} | not measured (a system was missing) | – |")
            return
        verdict = "met" if goal(figure) else "**not met**"
        self.lines.append(f"| {description} | {figure:,.2f}{unit} | {verdict} |")


def targets(results: Results, extra: dict[str, float]) -> list[str]:
    def rate(workload: str, name: str) -> float:
        return _median(results[(workload, name)], "rate")

    def ratio(workload: str, a: str, b: str) -> Callable[[], float]:
        return lambda: rate(workload, a) / rate(workload, b)

    t = Targets()
    for workload in ("W2", "W3"):
        t.check(
            f"{workload}: mqd ÷ HTTP ceiling ≥ 0.8",
            ratio(workload, "mqd", "ceiling"),
            lambda v: v >= 0.8,
            "×",
        )
        t.check(
            f"{workload}: mqd ÷ RabbitMQ durable ≥ 1.5",
            ratio(workload, "mqd", "rabbitmq"),
            lambda v: v >= 1.5,
            "×",
        )
        t.check(
            f"{workload}: mqd ÷ beanstalkd durable ≥ 1.5",
            ratio(workload, "mqd", "beanstalkd"),
            lambda v: v >= 1.5,
            "×",
        )
        t.check(
            f"{workload}: mqd ÷ Redis durable (reported)",
            ratio(workload, "mqd", "redis"),
            lambda v: True,
            "×",
        )
    t.check("W4: mqd ≥ 200,000 msg/s", lambda: rate("W4", "mqd"), lambda v: v >= 200_000, " msg/s")
    t.check("W4: mqd ÷ RabbitMQ durable > 20", ratio("W4", "mqd", "rabbitmq"), lambda v: v > 20, "×")
    t.check("W4: mqd ÷ beanstalkd durable > 20", ratio("W4", "mqd", "beanstalkd"), lambda v: v > 20, "×")
    t.check("W4: mqd ÷ NATS JetStream > 4", ratio("W4", "mqd", "nats"), lambda v: v > 4, "×")
    t.check("W4: mqd ÷ Redis durable (reported)", ratio("W4", "mqd", "redis"), lambda v: True, "×")
    t.check("W1: mqd p99 < 2 ms", lambda: _median(results[("W1", "mqd")], "p99_ms"), lambda v: v < 2, " ms")
    stream = "mqd-stream"  # W1s-W3s are the W1-W3 of mqd on streams
    t.check("W2s: streams ÷ HTTP ceiling's W2 ≥ 3", ratio("W2", stream, "ceiling"), lambda v: v >= 3, "×")
    t.check("W2s: streams ÷ Redis durable W2 ≥ 1.0", ratio("W2", stream, "redis"), lambda v: v >= 1, "×")
    t.check(
        "W2s: streams ÷ beanstalkd durable W2 ≥ 1.5",
        ratio("W2", stream, "beanstalkd"),
        lambda v: v >= 1.5,
        "×",
    )
    t.check(
        "W3s: streams ÷ beanstalkd durable W3 ≥ 1.5",
        ratio("W3", stream, "beanstalkd"),
        lambda v: v >= 1.5,
        "×",
    )
    t.check("W3s: streams ÷ Redis durable W3 ≥ 1.0", ratio("W3", stream, "redis"), lambda v: v >= 1, "×")
    t.check(
        "W2s: server CPU ÷ Redis durable's W2 ≤ 2",
        lambda: _median(results[("W2", stream)], "cpu_us") / _median(results[("W2", "redis")], "cpu_us"),
        lambda v: v <= 2,
        "×",
    )
    t.check(
        "W1s: streams p99 < 1 ms", lambda: _median(results[("W1", stream)], "p99_ms"), lambda v: v < 1, " ms"
    )
    for key, description, goal, unit in (
        ("w6_w1_ratio", "W6: W1 at 1,000,000 waiting ÷ empty ≥ 0.85", lambda v: v >= 0.85, "×"),
        ("w6_w2_ratio", "W6: W2 at 1,000,000 waiting ÷ empty ≥ 0.85", lambda v: v >= 0.85, "×"),
        ("w6_w3_ratio", "W6: W3 at 1,000,000 waiting ÷ empty ≥ 0.85", lambda v: v >= 0.85, "×"),
        ("w6_rss_mib", "W6: mqd RSS at 1,000,000 waiting < 150 MB", lambda v: v * 1.048576 < 150, " MiB"),
        ("w5_ratio", 'W5: mqctl send ÷ python -c "import click" ≤ 1.25', lambda v: v <= 1.25, "×"),
        ("w7_send", "W7: mqctl send --lines ≥ 50,000 lines/s", lambda v: v >= 50_000, " lines/s"),
        ("w7_receive", "W7: mqctl receive --count ≥ 50,000 lines/s", lambda v: v >= 50_000, " lines/s"),
        ("w8_seconds", "W8: restart to ready with 1,000,000 waiting ≤ 2 s", lambda v: v <= 2, " s"),
        (
            "w4s",
            "W4s: one producer, 1,000 in flight on a stream ≥ 200,000 msg/s",
            lambda v: v >= 200_000,
            " msg/s",
        ),
        ("idle_streams_rss_mib", "1,000 idle streams: < 50 MiB more RSS", lambda v: v < 50, " MiB"),
        (
            "idle_streams_status_max_ms",
            "1,000 idle streams: GET /status < 10 ms (worst of 50)",
            lambda v: v < 10,
            " ms",
        ),
    ):
        t.check(description, (lambda key=key: extra[key]) if key in extra else None, goal, unit)
    return [
        "## Targets (mqd with --fsync always, ratios from this run)",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *t.lines,
        "",
    ]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {cores} cores, {cpu} · "
        f"Linux {platform.release()} · Python {platform.python_version()}"
    )


def scaling_table(scaling: dict[tuple[int, str], list[float]]) -> str:
    """W9: messages per second and PostgreSQL transactions per message, by number of nodes."""
    if not scaling:
        return ""
    lines = [
        "",
        "### W9 — mqd nodes sharing one PostgreSQL (16 producers, then 16 consumers, spread evenly)",
        "",
        "| nodes | W2 msg/s | W3 msg/s | PostgreSQL transactions per message (W2 / W3) "
        "| mqd CPU µs/msg, all nodes (W2 / W3) |",
        "|---|---|---|---|---|",
    ]
    for count in sorted({count for count, _ in scaling}):
        m = {key: statistics.median(values) for (c, key), values in scaling.items() if c == count}
        lines.append(
            f"| {count} | {m['W2']:,.0f} | {m['W3']:,.0f} | {m['W2 tx/msg']:.2f} / {m['W3 tx/msg']:.2f} "
            f"| {m['W2 cpu']:,.0f} / {m['W3 cpu']:,.0f} |"
        )
    return "\n".join(lines) + "\n"
