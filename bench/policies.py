"""The queue policies' figures, on mqd alone (SQLite, fsync always), each from this run only:

    python -m bench.policies [--before DIR] [--current DIR] [--rounds 11] [--seconds 2]
                             [--backlog 1000000] [--groups 1000] [--rate 1000] [--rate-seconds 10]
                             [--parts plain,grouped,rate] [--json FILE] [--smoke]

1. No policy set: W2 (16 producers) and W3 (16 consumers draining) as ``python -m bench`` runs
   them, on this tree's mqd and on the mqd of ``--before`` (a checkout of the commit before the
   policies: ``git archive 457cedf | tar -x -C DIR``), started in turn (current, before; then
   before, current; ...) for ``--rounds`` rounds: the ratios current ÷ before of the medians.
   ``--current DIR`` measures the mqd of another tree (e.g. an export of a commit) instead of
   this checkout's, for every part: a working tree being edited is not a fixed thing to measure.
2. Priorities and groups, from empty to ``--backlog`` waiting (W6's rule for a plain queue): a
   queue filled with messages of random priority (0-9) and group (one of ``--groups``), then 16
   producers sending such messages one at a time and 16 consumers leasing and acking, on one mqd
   per backlog (0, 100,000 and ``--backlog``), measured in turn so that the machine's noise falls
   on every size alike: the ratios at the largest backlog ÷ empty.
3. ``max_rate``: a queue with ``max_rate --rate``, filled, drained by 8 consumers asking for 100
   messages at a time with a long-poll; deliveries per second over the steady part (after the
   first second, which may hold the bucket's tenth of a second's burst).

Prints a Markdown table (progress on stderr); ``--json`` writes every figure, rounds included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from . import clients, report, servers, workloads
from .systems import BY_NAME, System

ROOT = Path(__file__).resolve().parent.parent
BEFORE_COMMIT = "457cedf"  # the commit before the policies
RATE_CONSUMERS = 8
RATE_COUNT = 100
RATE_WAIT = 5  # seconds a consumer's long-poll may wait
RATE_WARM_UP = 1.0  # seconds left out at the start of the max_rate run


# -- mqd from another tree ---------------------------------------------------------------------


def _mqd_from(tree: Path, name: str):
    """Start mqd as servers.mqd does, but from ``tree`` (PYTHONPATH first, ahead of this checkout's
    editable install), on the same interpreter and with the same options."""

    def start(directory: Path):
        port = servers.free_port()
        command = [sys.executable, "-m", "mqd", "--port", str(port), "--data-dir", str(directory)]
        command += ["--fsync", "always", "--log-level", "warning", "--min-free-bytes", "0"]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        return servers.process(name, command, port, cwd=directory, env=env)

    return start


def _system(tree: Path | None, name: str) -> System:
    """mqd (fsync always, HTTP adapter) from ``tree``, or from this checkout (None)."""
    if tree is None:
        return BY_NAME["mqd"]
    return System(name, f"mqd at {tree}", True, _mqd_from(tree, name), lambda s: clients.Http(s.url))


# -- 1. no policy: this tree against the one before -------------------------------------------


async def no_policy(current: System, before: Path, rounds: int, seconds: float) -> dict:
    """Each round starts both mqd afresh, then runs W2 on one and the other, then W3 on one and
    the other (the order turned every round), so that the two of a pair are seconds apart."""
    arms = {"current": current, "before": _system(before, "mqd-before")}
    runs: dict[str, dict[str, list[workloads.Measurement]]] = {"current": {}, "before": {}}
    backlog = None
    for round_ in range(rounds):
        order = ["current", "before"] if round_ % 2 == 0 else ["before", "current"]
        with contextlib.ExitStack() as stack:
            started = {}
            for name in order:
                directory = stack.enter_context(servers.temporary_directory(arms[name].name))
                started[name] = stack.enter_context(arms[name].start(directory))
                await workloads.prepare(arms[name], started[name])
            for name in order:
                w2 = await workloads.many_producers(arms[name], started[name], seconds)
                runs[name].setdefault("W2", []).append(w2)
            if backlog is None:  # W3's backlog as python -m bench sizes it, then the same for all
                backlog = int(min(40_000, max(500, runs["current"]["W2"][0].rate * seconds * 2)))
                print(f"  W3 backlog: {backlog:,} messages", file=sys.stderr)
            for name in order:
                await workloads.prepare(arms[name], started[name])  # empty again
                w3 = await workloads.many_consumers(arms[name], started[name], backlog, seconds * 3)
                runs[name].setdefault("W3", []).append(w3)
        print(
            f"  round {round_ + 1}/{rounds}: "
            + "  ".join(
                f"{name} W2 {runs[name]['W2'][-1].rate:,.0f} W3 {runs[name]['W3'][-1].rate:,.0f}"
                for name in order
            ),
            file=sys.stderr,
        )
    figures: dict = {"rounds": rounds, "seconds": seconds, "w3_backlog": backlog}
    for workload in ("W2", "W3"):
        now = [m.rate for m in runs["current"][workload]]
        then = [m.rate for m in runs["before"][workload]]
        figures[workload] = {
            "current_rates": [round(r) for r in now],
            "before_rates": [round(r) for r in then],
            "current_median": statistics.median(now),
            "before_median": statistics.median(then),
            "ratio": statistics.median(now) / statistics.median(then),
            "ratio_per_round": [round(a / b, 3) for a, b in zip(now, then, strict=True)],
            "current_cpu_us": statistics.median(m.cpu_us for m in runs["current"][workload]),
            "before_cpu_us": statistics.median(m.cpu_us for m in runs["before"][workload]),
        }
        figures[workload]["ratio_of_rounds_median"] = statistics.median(figures[workload]["ratio_per_round"])
    return figures


# -- 2. priorities and groups, empty and with a large backlog ----------------------------------


class Policied(clients.Http):
    """W2's and W3's HTTP adapter, every message sent with a random priority (0-9) and group;
    receives lease and ack (a group's next message is receivable once its head is acked)."""

    def __init__(self, url: str, groups: int, seed: int) -> None:
        super().__init__(url, lease=True)
        self.groups = groups
        self.random = random.Random(seed)

    def _item(self, payload: str) -> dict:
        return {
            "content": payload,
            "priority": self.random.randrange(10),
            "group": f"g{self.random.randrange(self.groups)}",
        }

    async def send(self, payload: str) -> None:
        async with self.session.post(
            f"{self.url}/queues/{clients.QUEUE}/messages", json=self._item(payload)
        ) as response:
            assert response.status == 201, response.status
            await response.read()

    async def send_batch(self, payloads: list[str]) -> None:
        body = {"messages": [self._item(p) for p in payloads]}
        async with self.session.post(f"{self.url}/queues/{clients.QUEUE}/messages", json=body) as response:
            assert response.status == 201, response.status
            await response.read()


def _policied_system(current: System, groups: int) -> System:
    seeds = iter(range(1, 1 << 30))
    return System(
        "mqd-policied",
        "mqd, priorities and groups, lease + ack",
        True,
        current.start,
        lambda s: Policied(s.url, groups, next(seeds)),
    )


async def _queue_state(url: str) -> dict:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/queues/{clients.QUEUE}") as response,
    ):
        return await response.json()


async def _metrics(url: str) -> dict[str, float]:
    """The store's commit figures from /metrics (sums and counts), to tell what a slow phase did."""
    wanted = ("mq_store_commit_duration_seconds_sum", "mq_store_commit_duration_seconds_count")
    found: dict[str, float] = {}
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            name, _, value = line.partition(" ")
            if name.split("{")[0] in wanted:
                found[name.split("{")[0]] = found.get(name.split("{")[0], 0) + float(value.split()[0])
    return found


async def _plain_fill(current: System, messages: int) -> float:
    """Messages per second filling a queue without policies, as W6 does (for comparison)."""
    with servers.temporary_directory("policies-plain") as directory, current.start(directory) as server:
        await workloads.prepare(current, server)
        started = time.perf_counter()
        await workloads.preload(current, server, messages)
        return messages / (time.perf_counter() - started)


async def grouped_backlog(current: System, backlog: int, groups: int, seconds: float, rounds: int) -> dict:
    system = _policied_system(current, groups)
    sizes = sorted({0, min(100_000, backlog), backlog})
    found: dict[int, dict[str, list]] = {size: {"send": [], "receive": []} for size in sizes}
    states: dict[int, dict] = {}
    with contextlib.ExitStack() as stack:
        started = {}
        for size in sizes:
            directory = stack.enter_context(servers.temporary_directory(f"policies-{size}"))
            server = stack.enter_context(system.start(directory))
            await workloads.prepare(system, server)
            filling = time.perf_counter()
            await workloads.preload(system, server, size)
            seconds_filling = time.perf_counter() - filling
            states[size] = {
                "fill_seconds": round(seconds_filling, 1),
                "fill_rate": round(size / seconds_filling) if size else None,
                "rss_mib_filled": round(servers.rss_bytes(server.pid) / 2**20, 1),
            }
            if size:
                print(
                    f"  filled {size:,} (priorities, {groups:,} groups) in {seconds_filling:.1f} s: "
                    f"{size / seconds_filling:,.0f} msg/s",
                    file=sys.stderr,
                )
            started[size] = server
        for round_ in range(rounds):
            order = sizes if round_ % 2 == 0 else list(reversed(sizes))
            for size in order:  # sends, each size in turn
                found[size]["send"].append(await workloads.many_producers(system, started[size], seconds))
            for size in order:  # then leased receives and acks, from the head
                waiting = (await _queue_state(started[size].url))["messages"]
                commits = await _metrics(started[size].url)
                measurement = await workloads.many_consumers(system, started[size], 0, seconds)
                after = await _metrics(started[size].url)
                found[size]["receive"].append(measurement)
                found[size].setdefault("waiting_before_receive", []).append(waiting)
                count = after.get("mq_store_commit_duration_seconds_count", 0) - commits.get(
                    "mq_store_commit_duration_seconds_count", 0
                )
                spent = after.get("mq_store_commit_duration_seconds_sum", 0) - commits.get(
                    "mq_store_commit_duration_seconds_sum", 0
                )
                found[size].setdefault("receive_commit_ms", []).append(
                    round(1000 * spent / count, 2) if count else None
                )
            print(
                f"  round {round_ + 1}/{rounds}: "
                + "  ".join(
                    f"{size:,}: send {found[size]['send'][-1].rate:,.0f} "
                    f"receive+ack {found[size]['receive'][-1].rate:,.0f}"
                    for size in sizes
                ),
                file=sys.stderr,
            )
        for size in sizes:
            state = await _queue_state(started[size].url)
            states[size].update(
                messages_at_end=state["messages"],
                ready_at_end=state["ready"],
                rss_mib_at_end=round(servers.rss_bytes(started[size].pid) / 2**20, 1),
            )
    figures: dict = {"groups": groups, "seconds": seconds, "rounds": rounds, "sizes": {}}
    middle = sizes[len(sizes) // 2]
    if middle:  # the same fill without priorities and groups, for comparison
        figures["plain_fill_size"] = middle
        figures["plain_fill_rate"] = round(await _plain_fill(current, middle))
    for size in sizes:
        entry = dict(states[size])
        for phase in ("send", "receive"):
            runs = found[size][phase]
            entry[phase] = {
                "rates": [round(m.rate) for m in runs],
                "median": statistics.median(m.rate for m in runs),
                "cpu_us": statistics.median(m.cpu_us for m in runs),
            }
        entry["waiting_before_receive"] = found[size]["waiting_before_receive"]
        entry["receive_commit_ms"] = found[size]["receive_commit_ms"]
        figures["sizes"][str(size)] = entry
    for phase in ("send", "receive"):
        figures[f"{phase}_ratio"] = (
            figures["sizes"][str(backlog)][phase]["median"] / figures["sizes"]["0"][phase]["median"]
        )
        figures[f"{phase}_ratio_per_round"] = [
            round(a.rate / b.rate, 3) for a, b in zip(found[backlog][phase], found[0][phase], strict=True)
        ]
    return figures


# -- 3. max_rate -------------------------------------------------------------------------------


async def rate_limited(current: System, rate: float, seconds: float, consumers: int) -> dict:
    messages = int(rate * seconds * 1.5) + 2000
    with servers.temporary_directory("policies-rate") as directory, current.start(directory) as server:
        url = f"{server.url}/queues/rated"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/queues", json={"name": "rated", "max_rate": rate}) as r:
                assert r.status == 201, (r.status, await r.text())
            for start in range(0, messages, workloads.BATCH):
                body = {"messages": [{"content": workloads.PAYLOAD}] * min(workloads.BATCH, messages - start)}
                async with session.post(f"{url}/messages", json=body) as r:
                    assert r.status == 201, r.status
        replies: list[tuple[float, int]] = []  # (when it arrived, messages in it)
        empty = 0

        async def consume(deadline: float) -> None:
            nonlocal empty
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                while time.perf_counter() < deadline:
                    async with session.get(
                        f"{url}/messages", params={"count": RATE_COUNT, "wait": RATE_WAIT}
                    ) as response:
                        if response.status == 204:
                            empty += 1
                            continue
                        assert response.status == 200, response.status
                        got = len((await response.json())["messages"])
                    replies.append((time.perf_counter(), got))

        cpu = servers.cpu_seconds(server)
        began = time.perf_counter()
        deadline = began + seconds
        await asyncio.gather(*(consume(deadline) for _ in range(consumers)))
        cpu = servers.cpu_seconds(server) - cpu
    steady = [(at, n) for at, n in replies if began + RATE_WARM_UP <= at <= deadline]
    per_second = [
        sum(n for at, n in replies if began + s <= at < began + s + 1) for s in range(int(seconds))
    ]
    delivered = sum(n for at, n in replies if at <= deadline)
    steady_rate = sum(n for _, n in steady) / (seconds - RATE_WARM_UP)
    return {
        "max_rate": rate,
        "consumers": consumers,
        "count": RATE_COUNT,
        "wait": RATE_WAIT,
        "seconds": seconds,
        "prefilled": messages,
        "delivered": delivered,
        "steady_rate": steady_rate,
        "steady_ratio": steady_rate / rate,
        "overall_rate": delivered / seconds,
        "per_second": per_second,
        "replies": len(replies),
        "messages_per_reply": statistics.mean(n for _, n in replies) if replies else 0,
        "empty_replies": empty,
        "server_cpu_share": cpu / (time.perf_counter() - began),
        "server_cpu_us_per_delivery": 1e6 * cpu / max(1, delivered),
    }


# -- the report --------------------------------------------------------------------------------


def table(figures: dict) -> str:
    lines = ["| figure | measured |", "|---|---|"]
    plain = figures.get("no_policy")
    if plain:
        for workload in ("W2", "W3"):
            f = plain[workload]
            lines.append(
                f"| {workload}, no policy: current ÷ before ({BEFORE_COMMIT}), medians of "
                f"{plain['rounds']} | {f['ratio']:.3f}× ({f['current_median']:,.0f} ÷ "
                f"{f['before_median']:,.0f} msg/s; median of the rounds' ratios "
                f"{f['ratio_of_rounds_median']:.3f}×, {min(f['ratio_per_round']):.2f}–"
                f"{max(f['ratio_per_round']):.2f}×; server CPU {f['current_cpu_us']:,.0f} ÷ "
                f"{f['before_cpu_us']:,.0f} µs/msg = {f['current_cpu_us'] / f['before_cpu_us']:.3f}×) |"
            )
    grouped = figures.get("grouped")
    if grouped:
        sizes = grouped["sizes"]
        largest = max(sizes, key=int)
        for phase, label in (("send", "send (16 producers)"), ("receive", "lease + ack (16 consumers)")):
            rates = ", ".join(f"{int(s):,}: {sizes[s][phase]['median']:,.0f}" for s in sizes)
            cpu = ", ".join(f"{sizes[s][phase]['cpu_us']:,.0f}" for s in sizes)
            lines.append(
                f"| priorities + {grouped['groups']:,} groups, {label}: {int(largest):,} waiting ÷ empty | "
                f"{grouped[f'{phase}_ratio']:.3f}× (msg/s {rates}; CPU µs/msg {cpu}) |"
            )
        filled = sizes[largest]
        plain_fill = (
            f"; without priorities and groups, {grouped['plain_fill_size']:,}: "
            f"{grouped['plain_fill_rate']:,} msg/s"
            if "plain_fill_rate" in grouped
            else ""
        )
        lines.append(
            f"| filling {int(largest):,} with priorities and groups (batches of 1,000, 4 senders) | "
            f"{filled['fill_rate']:,} msg/s{plain_fill}; RSS {filled['rss_mib_filled']} MiB |"
        )
    rated = figures.get("max_rate")
    if rated:
        lines.append(
            f"| max_rate {rated['max_rate']:,g}: deliveries per second, {rated['consumers']} consumers, "
            f"count={rated['count']}, wait={rated['wait']}, after the first second | "
            f"{rated['steady_rate']:,.0f}/s ({rated['steady_ratio']:.3f}×; each second: "
            f"{min(rated['per_second']):,}–{max(rated['per_second']):,}; "
            f"{rated['messages_per_reply']:.1f} per reply; server CPU "
            f"{rated['server_cpu_us_per_delivery']:,.0f} µs per delivery) |"
        )
    return "\n".join(lines)


def _tree_state(current: Path | None) -> dict:
    if current is not None:
        return {"current": str(current)}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"head": git("rev-parse", "--short", "HEAD"), "changed_files": git("status", "--short", "mqd")}


async def _main(options: argparse.Namespace) -> dict:
    figures: dict = {
        "machine": report.machine(),
        "tree": _tree_state(options.current),
        "options": vars(options),
    }
    started = time.monotonic()
    parts = set(options.parts.split(","))
    current = _system(options.current, "mqd-current")
    if "rate" in parts:
        print(f"max_rate {options.rate:g} for {options.rate_seconds:g} s", file=sys.stderr)
        figures["max_rate"] = await rate_limited(
            current, options.rate, options.rate_seconds, options.rate_consumers
        )
    if "plain" in parts:
        if options.before is None:
            print("skipping no-policy current ÷ before: no --before DIR", file=sys.stderr)
        else:
            trees = f"{options.current or 'this tree'} and {options.before}"
            print(f"no policy: W2 and W3, {trees}", file=sys.stderr)
            figures["no_policy"] = await no_policy(current, options.before, options.rounds, options.seconds)
    if "grouped" in parts:
        print(f"priorities and groups: empty to {options.backlog:,} waiting", file=sys.stderr)
        figures["grouped"] = await grouped_backlog(
            current, options.backlog, options.groups, options.seconds, options.grouped_rounds
        )
    figures["minutes"] = round((time.monotonic() - started) / 60, 1)
    return figures


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help=f"a checkout of {BEFORE_COMMIT}: compare W2, W3 with it")
    parser.add_argument(
        "--current", type=Path, help="measure the mqd of this tree instead of this checkout's (a snapshot)"
    )
    parser.add_argument("--rounds", type=int, default=11, help="current/before pairs of W2+W3 (default 11)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timed phase (default 2)")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="the large backlog (default 1e6)")
    parser.add_argument("--groups", type=int, default=1000, help="groups of the backlog's messages")
    parser.add_argument("--grouped-rounds", type=int, default=3, help="send + receive rounds per size")
    parser.add_argument("--rate", type=float, default=1000, help="the queue's max_rate (default 1,000)")
    parser.add_argument("--rate-seconds", type=float, default=10, help="length of the max_rate run")
    parser.add_argument("--rate-consumers", type=int, default=RATE_CONSUMERS, help="max_rate's consumers")
    parser.add_argument("--parts", default="plain,grouped,rate", help="of plain, grouped, rate (default all)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny counts, one round")
    options = parser.parse_args(argv)
    if options.smoke:
        options.rounds = options.grouped_rounds = 1
        options.seconds, options.backlog, options.rate_seconds = 0.3, 3000, 2
    return options


def main(argv: list[str] | None = None) -> None:
    options = _options(argv)
    figures = asyncio.run(_main(options))
    print(table(figures))
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
