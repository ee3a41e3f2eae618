"""Receivers that vanish under load: long-polls whose clients leave at random moments, beside
producers and ordinary consumers in both delivery modes. A message that no client still there
received is never lost: it is either still in the queue or goes to someone else."""

from __future__ import annotations

import re
import threading
import time

from ..helpers import MqdProcess
from .checker import History, check
from .conftest import scaled
from .workload import ConsumeConsumer, LeaseConsumer, Producer, Target, Vanisher, drain

SECONDS = scaled(8, 120)


def test_receivers_that_vanish_lose_no_message(tmp_path, figures):
    daemon = MqdProcess(tmp_path / "data").start()
    target = Target(daemon.url)
    for queue in ("consume", "lease"):
        daemon.call("POST", "/queues", {"name": queue})
    histories = {"consume": History(), "lease": History()}
    stop_producing, stop_consuming = threading.Event(), threading.Event()
    producers = [
        Producer(target, queue, histories[queue], stop_producing, number=i)
        for i, queue in enumerate(["consume", "lease"] * 2)
    ]
    consumers = [ConsumeConsumer(target, "consume", histories["consume"], stop_consuming) for _ in range(2)]
    consumers += [LeaseConsumer(target, "lease", histories["lease"], stop_consuming) for _ in range(2)]
    vanishers = [
        Vanisher(target, queue, histories[queue], stop_consuming, lease=lease, seed=i)
        for i, (queue, lease) in enumerate([("consume", None), ("lease", 2)] * 3)
    ]
    workers = producers + consumers + vanishers
    for worker in workers:
        worker.start()
    try:
        time.sleep(SECONDS)
        stop_producing.set()
        for producer in producers:
            producer.join(30)
        drain(target, ["consume", "lease"], timeout=scaled(60, 900))  # vanishers go on meanwhile
    finally:
        stop_producing.set()
        stop_consuming.set()
        for worker in workers:
            worker.join(30)
        metrics = daemon.call("GET", "/metrics")[1]
        daemon.stop()

    assert [e for w in workers for e in w.errors] == []
    consume, lease = check(histories["consume"]), check(histories["lease"])
    returned = sum(int(n) for n in re.findall(r"^mq_messages_returned_total\{.*\} (\d+)$", metrics, re.M))
    figures.update(
        seconds=SECONDS,
        vanished_receivers=sum(v.vanished for v in vanishers),
        messages_put_back=returned,
        consume=consume.figures(),
        lease=lease.figures(),
    )
    assert consume.acknowledged > 100 and lease.acknowledged > 100, "too little traffic to prove anything"
    assert consume.lost == [] and lease.lost == [], "a message that no client received was lost"
    assert consume.unexpected == [] and lease.unexpected == []
    assert consume.duplicated == [], "a consume-mode message was delivered twice"
