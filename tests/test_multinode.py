"""Three real mqd processes on one PostgreSQL database: one queue, served by all of them."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest

from mq import ApiError, Client, MqError

MESSAGES = 20_000
BATCH = 100


@pytest.fixture
def nodes(postgres_nodes):
    return postgres_nodes


def produce(url: str, numbers: range) -> None:
    with Client(url) as client:
        for start in range(numbers.start, numbers.stop, BATCH):
            client.send_many(
                "q",
                [b'{"content":%d}' % n for n in range(start, min(start + BATCH, numbers.stop))],
                encoded=True,
            )


class Consumer(threading.Thread):
    """Receives from its node until told to stop; moves to the next node if its own dies."""

    def __init__(self, urls: list[str], lease: float | None, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.urls = itertools.cycle(urls)
        self.lease = lease
        self.stop = stop
        self.received: list[int] = []
        self.acked: list[int] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        client = Client(next(self.urls))
        try:
            while not self.stop.is_set():
                try:
                    self.step(client)
                except MqError as exc:
                    if isinstance(exc, ApiError) and exc.status < 500:
                        raise
                    client.close()
                    client = Client(next(self.urls))  # this node is gone: use another
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            client.close()

    def step(self, client: Client) -> None:
        for message in client.receive("q", count=20, wait=0.5, lease=self.lease):
            self.received.append(message["content"])
            if self.lease is not None:
                try:
                    client.ack("q", message["receipt"])
                    self.acked.append(message["content"])
                except ApiError as exc:
                    if exc.status != 404:  # 404: its lease ran out; it comes back
                        raise


def run_consumers(nodes, lease, kill_at: int | None = None) -> list[Consumer]:
    urls = [node.url for node in nodes]
    stop = threading.Event()
    consumers = [Consumer(urls[i % 3 :] + urls[: i % 3], lease, stop) for i in range(8)]
    producer = threading.Thread(target=produce, args=(urls[0], range(MESSAGES)))
    producer.start()
    for consumer in consumers:
        consumer.start()
    killed = False
    deadline = time.monotonic() + 180
    with Client(urls[0]) as watcher:
        while time.monotonic() < deadline:
            done = len({n for c in consumers for n in c.received})
            if kill_at is not None and not killed and done >= kill_at:
                nodes[2].kill()
                killed = True
            if not producer.is_alive() and done >= MESSAGES and watcher.queue("q")["messages"] == 0:
                break
            time.sleep(0.2)
    stop.set()
    producer.join(30)
    for consumer in consumers:
        consumer.join(30)
    assert [e for c in consumers for e in c.errors] == []
    return consumers


def test_three_nodes_deliver_each_message_exactly_once_in_consume_mode(nodes):
    nodes[0].call("POST", "/queues", {"name": "q"})
    consumers = run_consumers(nodes, lease=None)
    received = Counter(n for c in consumers for n in c.received)
    assert set(received) == set(range(MESSAGES)), "a message was lost"
    assert max(received.values()) == 1, "a message was delivered twice"
    assert sum(1 for c in consumers if c.received) >= 6, "the consumers did not all share the work"


def test_lease_mode_with_a_node_killed_mid_run_loses_nothing(nodes):
    """Every message is received (at least once) and, in the end, acknowledged: the queue is
    empty. An ack cut off by the kill may have committed unseen, so acks are not counted."""
    nodes[0].call("POST", "/queues", {"name": "q"})
    consumers = run_consumers(nodes, lease=2, kill_at=MESSAGES // 2)
    received = {n for c in consumers for n in c.received}
    assert received == set(range(MESSAGES)), f"{MESSAGES - len(received)} messages were lost"
    assert nodes[0].call("GET", "/queues/q")[1]["messages"] == 0, "messages were left unacknowledged"
