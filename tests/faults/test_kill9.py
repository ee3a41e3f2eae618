"""kill -9 under load: producers and consumers in both delivery modes, SIGKILLs at random moments,
a restart on the same data directory after each, then a drain and the checker's verdict."""

from __future__ import annotations

import random
import statistics
import threading
import time

from ..helpers import MqdProcess
from .checker import History, check
from .conftest import scaled
from .workload import ConsumeConsumer, LeaseConsumer, Producer, Target, drain

KILLS = scaled(5, 50)


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path, figures):
    daemon = MqdProcess(tmp_path / "data").start()
    port = daemon.url.rsplit(":", 1)[1]
    daemon.args = ["--port", port]  # restarts come back where the clients look
    target = Target(daemon.url)
    for queue in ("consume", "lease"):
        daemon.call("POST", "/queues", {"name": queue})
    histories = {"consume": History(), "lease": History()}
    stop_producing, stop_consuming = threading.Event(), threading.Event()
    producers = [
        Producer(
            target,
            ("consume", "lease")[i % 2],
            histories[("consume", "lease")[i % 2]],
            stop_producing,
            number=i,
        )
        for i in range(4)
    ]
    consumers = [ConsumeConsumer(target, "consume", histories["consume"], stop_consuming) for _ in range(2)]
    consumers += [LeaseConsumer(target, "lease", histories["lease"], stop_consuming) for _ in range(2)]
    for worker in producers + consumers:
        worker.start()

    rng = random.Random(20261124)
    restart_seconds = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            daemon.kill()
            started = time.monotonic()
            daemon.start()
            restart_seconds.append(time.monotonic() - started)
        stop_producing.set()
        for producer in producers:
            producer.join(30)
        drain(target, ["consume", "lease"])
    finally:
        stop_producing.set()
        stop_consuming.set()
        for worker in producers + consumers:
            worker.join(30)
        daemon.stop()

    assert [e for w in producers + consumers for e in w.errors] == []
    interrupted_receives = sum(c.interrupted for c in consumers if isinstance(c, ConsumeConsumer))
    interrupted_leases = sum(c.interrupted for c in consumers if isinstance(c, LeaseConsumer))
    consume, lease = check(histories["consume"]), check(histories["lease"])
    figures.update(
        kills=KILLS,
        consume=consume.figures(),
        lease=lease.figures(),
        receives_in_flight_at_kills=interrupted_receives,
        leases_in_flight_at_kills=interrupted_leases,
        restart_to_ready_p50_seconds=round(statistics.median(restart_seconds), 3),
        restart_to_ready_max_seconds=round(max(restart_seconds), 3),
    )
    assert consume.acknowledged > 100 and lease.acknowledged > 100, "too little traffic to prove anything"
    assert consume.unexpected == [] and lease.unexpected == []
    assert lease.lost == [], "an acknowledged message was lost in lease mode"
    assert len(consume.lost) <= interrupted_receives, (
        "consume-mode losses beyond the receives cut off by kills"
    )
    assert consume.duplicated == [], "a consume-mode message was delivered twice"
    assert len(lease.duplicated) <= interrupted_leases, (
        "lease-mode duplicates beyond the leases cut off by kills"
    )
    assert consume.fifo_inversions == 0 and lease.fifo_inversions == 0
