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
from .workload import ConsumeConsumer, Producer, Target

ROUNDS = scaled(3, 20)


def power_cut_round(fs, data_dir, fsync: str, rng: random.Random) -> dict:
    """One round: work, cut the power, kill, remount, restart, drain; the checker's figures."""
    daemon = MqdProcess(data_dir, "--fsync", fsync, "--min-free-bytes", "0").start()
    daemon.call("POST", "/queues", {"name": "q"})
    target, history = Target(daemon.url), History()
    stop = threading.Event()
    workers = [Producer(target, "q", history, stop, number=i) for i in range(4)]
    workers.append(ConsumeConsumer(target, "q", history, stop))
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
    fs.unmount()
    fs.mount()
    try:
        daemon.start()
    except RuntimeError as exc:  # refused to start: counted, and shown, as a loss of everything
        return {**check(history).figures(), "lost": len(history.acknowledged), "refused": str(exc)[-300:]}
    try:
        while True:
            status, body, _ = daemon.call("GET", "/queues/q/messages?count=1000")
            if status != 200:  # 204: drained; 404: the queue itself was lost (without fsync)
                break
            for message in body["messages"]:
                history.deliver((message["content"]["p"], message["content"]["n"]), message["id"])
    finally:
        daemon.stop()
    verdict = check(history)
    interrupted = sum(w.interrupted for w in workers if isinstance(w, ConsumeConsumer))
    return {**verdict.figures(), "receives_interrupted": interrupted}


def run_rounds(loop_fs, tmp_path, fsync: str) -> list[dict]:
    fs = loop_fs(128)
    rng = random.Random(7 if fsync == "always" else 8)
    results = []
    for round_number in range(ROUNDS):
        data_dir = fs.mountpoint / "data"
        results.append(power_cut_round(fs, data_dir, fsync, rng))
        with contextlib.suppress(FileNotFoundError):  # a fresh store each round
            for path in data_dir.iterdir():
                path.unlink()
        assert round_number >= 0
    return results


def test_power_cuts_lose_nothing_acknowledged_with_fsync(loop_fs, tmp_path, figures):
    results = run_rounds(loop_fs, tmp_path, "always")
    figures.update(
        rounds=ROUNDS,
        acknowledged=sum(r["acknowledged"] for r in results),
        lost=sum(r["lost"] for r in results),
        unexpected=sum(r["unexpected"] for r in results),
        duplicated=sum(r["duplicated"] for r in results),
        receives_interrupted=sum(r["receives_interrupted"] for r in results),
    )
    assert all("refused" not in r for r in results), results
    assert figures["acknowledged"] > 100 * ROUNDS
    assert figures["unexpected"] == 0 and figures["duplicated"] == 0
    assert figures["lost"] <= figures["receives_interrupted"], results


def test_negative_control_without_fsync_loses_acknowledged_messages(loop_fs, tmp_path, figures):
    results = run_rounds(loop_fs, tmp_path, "off")
    figures.update(
        rounds=ROUNDS,
        acknowledged=sum(r["acknowledged"] for r in results),
        lost=sum(r["lost"] for r in results),
        rounds_refused_to_start=sum("refused" in r for r in results),
    )
    if figures["acknowledged"] == 0:
        pytest.fail("no traffic: the control proves nothing")
    assert figures["lost"] > 0, "with --fsync off a power cut should lose messages: the test cannot fail"
