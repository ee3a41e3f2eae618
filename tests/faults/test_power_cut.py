"""Power cuts: the data directory on an ext4 loop device whose power is cut mid-workload.

A process kill cannot catch a missing fsync (the page cache survives it); cutting the file
system off with FS_IOC_SHUTDOWN and no log flush throws away everything not yet on its disk, as a
power cut would. The negative control runs the same rounds with --fsync off and must lose
acknowledged messages, which shows the test can fail.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import pytest

from ..helpers import MqdProcess
from .checker import History, check
from .conftest import scaled
from .workload import ConsumeConsumer, LeaseConsumer, Producer, Target

ROUNDS = scaled(3, 20)


QUEUES = ("consume", "lease")


def power_cut_round(fs, data_dir, fsync: str, rng: random.Random) -> dict:
    """One round: work, cut the power, kill, remount, restart, drain; the checker's figures for
    each queue. Producers alternate between a queue read without leases (a receive cut off by
    the power may take its message with it: at most once) and one read with leases (nothing
    acknowledged may be lost)."""
    daemon = MqdProcess(data_dir, "--fsync", fsync, "--min-free-bytes", "0").start()
    for queue in QUEUES:
        daemon.call("POST", "/queues", {"name": queue})
    target, histories = Target(daemon.url), {queue: History() for queue in QUEUES}
    stop = threading.Event()
    workers = [Producer(target, QUEUES[i % 2], histories[QUEUES[i % 2]], stop, number=i) for i in range(4)]
    workers.append(ConsumeConsumer(target, "consume", histories["consume"], stop))
    workers.append(LeaseConsumer(target, "lease", histories["lease"], stop))
    for worker in workers:
        worker.start()
    time.sleep(rng.uniform(0.5, 1.5))
    fs.cut_power()
    time.sleep(0.2)  # let requests run into the dead disk
    daemon.kill()
    stop.set()
    for worker in workers:
        worker.join(30)
    assert [e for w in workers for e in w.errors] == []
    in_flight = {
        "consume": sum(w.interrupted for w in workers if isinstance(w, ConsumeConsumer)),
        "lease": sum(w.interrupted for w in workers if isinstance(w, LeaseConsumer)),
    }
    fs.unmount()
    fs.mount()
    try:
        daemon.start()
    except RuntimeError as exc:  # refused to start: counted, and shown, as a loss of everything
        return {
            queue: {**check(histories[queue]).figures(), "lost": len(histories[queue].acknowledged)}
            for queue in QUEUES
        } | {"refused": str(exc)[-300:]}
    try:
        for queue in QUEUES:
            _drain(daemon, queue, histories[queue])
    finally:
        daemon.stop()
    return {queue: {**check(histories[queue]).figures(), "in_flight": in_flight[queue]} for queue in QUEUES}


def _drain(daemon: MqdProcess, queue: str, history: History, timeout: float = 60) -> None:
    """Receive everything left, waiting for leases cut off by the power to run out and return
    (what has not come back by ``timeout`` counts as lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = daemon.call("GET", f"/queues/{queue}/messages?count=1000")
        if status == 200:
            for message in body["messages"]:
                history.deliver((message["content"]["p"], message["content"]["n"]), message["id"])
            continue
        if status == 404:  # the queue itself was lost (without fsync)
            return
        _, info, _ = daemon.call("GET", f"/queues/{queue}")
        if info["messages"] == 0:
            return
        time.sleep(0.2)  # only leased messages are left; their leases run out within seconds


def run_rounds(loop_fs, tmp_path, fsync: str) -> list[dict]:
    fs = loop_fs(128)
    rng = random.Random(7 if fsync == "always" else 8)
    results = []
    for _ in range(ROUNDS):
        data_dir = fs.mountpoint / "data"
        results.append(power_cut_round(fs, data_dir, fsync, rng))
        with contextlib.suppress(FileNotFoundError):  # a fresh store each round
            for path in data_dir.iterdir():
                path.unlink()
    return results


def _total(results: list[dict], queue: str, figure: str) -> int:
    return sum(r[queue][figure] for r in results)


def test_power_cuts_lose_nothing_acknowledged_with_fsync(loop_fs, tmp_path, figures):
    results = run_rounds(loop_fs, tmp_path, "always")
    assert all("refused" not in r for r in results), results
    for queue in QUEUES:
        figures[queue] = {
            figure: _total(results, queue, figure)
            for figure in ("acknowledged", "lost", "unexpected", "duplicated", "in_flight")
        }
    figures["rounds"] = ROUNDS
    consume, lease = figures["consume"], figures["lease"]
    assert consume["acknowledged"] > 50 * ROUNDS and lease["acknowledged"] > 50 * ROUNDS
    assert lease["lost"] == 0, results
    assert consume["lost"] <= consume["in_flight"], results  # receives the cut cut off
    assert lease["duplicated"] <= lease["in_flight"], results  # leases the cut cut off
    assert consume["duplicated"] == 0
    assert consume["unexpected"] == 0 and lease["unexpected"] == 0


def test_negative_control_without_fsync_loses_acknowledged_messages(loop_fs, tmp_path, figures):
    results = run_rounds(loop_fs, tmp_path, "off")
    figures.update(
        rounds=ROUNDS,
        acknowledged=sum(_total(results, queue, "acknowledged") for queue in QUEUES),
        lost=sum(_total(results, queue, "lost") for queue in QUEUES),
        rounds_refused_to_start=sum("refused" in r for r in results),
    )
    if figures["acknowledged"] == 0:
        pytest.fail("no traffic: the control proves nothing")
    assert figures["lost"] > 0, "with --fsync off a power cut should lose messages: the test cannot fail"
