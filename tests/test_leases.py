"""At-least-once delivery on a real daemon: leases, acks, retries, dead letters, delays, keys."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from mq import ApiError, Client


@pytest.fixture
def client(mqd):
    daemon = mqd()
    with Client(daemon.url) as client:
        client.create_queue("q")
        yield client


def test_an_expired_lease_brings_the_message_back_with_one_more_attempt(client):
    client.send("q", "job")
    (first,) = client.receive("q", lease=1)
    assert client.receive("q") == []
    (again,) = client.receive("q", lease=30, wait=5)
    assert again["id"] == first["id"] and again["attempts"] == 2
    with pytest.raises(ApiError) as stale:
        client.ack("q", first["receipt"])  # the old receipt cannot touch the new lease
    assert stale.value.status == 404
    client.ack("q", again["receipt"])
    assert client.queue("q")["messages"] == 0


def test_release_and_extend(client):
    client.send("q", "job")
    (leased,) = client.receive("q", lease=1)
    client.extend("q", leased["receipt"], 30)
    time.sleep(1.3)
    assert client.receive("q") == []  # extended past its first lease
    client.release("q", leased["receipt"], delay=0.5)
    assert client.receive("q") == []
    (back,) = client.receive("q", wait=5)
    assert back["id"] == leased["id"]


def test_dead_lettering_after_max_attempts_and_redrive(client):
    client.create_queue("dlq")
    client.create_queue("work", max_attempts=2, dead_letter_queue="dlq")
    client.send("work", "poison")
    for _ in range(2):
        (leased,) = client.receive("work", lease=30)
        client.release("work", leased["receipt"])
    assert client.receive("work", lease=30) == []
    info = client.queue("work")
    assert (info["messages"], info["dead_lettered"]) == (0, 1)
    assert [m["content"] for m in client.peek("dlq")] == ["poison"]
    assert client.redrive("dlq") == {"moved": 1, "queues": {"work": 1}}
    (home,) = client.receive("work", lease=30)
    assert home["content"] == "poison" and home["attempts"] == 1


def test_a_delayed_message_is_invisible_until_due_and_counted_as_delayed(client):
    client.send("q", "later", delay=1)
    assert client.queue("q")["delayed"] == 1
    assert client.receive("q") == []
    (message,) = client.receive("q", wait=5)
    assert message["content"] == "later"


def test_peek_neither_consumes_nor_leases(client):
    client.send("q", "a")
    assert [m["content"] for m in client.peek("q", 5)] == ["a"]
    assert client.queue("q")["ready"] == 1


def test_an_idempotent_retry_enqueues_nothing(client):
    first = client.send("q", "order 17", key="order-17")
    retry = client.send("q", "order 17", key="order-17")
    assert retry == first  # the first send's id: nothing new was stored
    assert client.queue("q")["messages"] == 1


def test_queue_info_reports_each_state_and_the_age_of_the_oldest(client):
    client.send("q", "ready")
    client.send("q", "leased")
    client.send("q", "delayed", delay=60)
    client.receive("q", lease=30)
    time.sleep(0.2)
    info = client.queue("q")
    assert (info["ready"], info["leased"], info["delayed"]) == (1, 1, 1)
    assert info["oldest_ready_age_seconds"] >= 0.2


def test_eight_consumers_with_random_failures_process_every_message(mqd):
    """10,000 messages, 8 leasing consumers that fail 10% of the time and sometimes outlive
    their lease: every message is processed, and a message is processed twice only where a
    lease really ran out (its ack came back 404)."""
    daemon = mqd()
    total = 10_000
    with Client(daemon.url) as setup:
        setup.create_queue("work")
        for start in range(0, total, 1000):
            setup.send_many("work", [b'{"content":%d}' % i for i in range(start, start + 1000)], encoded=True)

    processed: Counter[int] = Counter()
    lost_leases = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def consumer(seed: int) -> None:
        try:
            consume(seed)
        except BaseException as exc:
            errors.append(exc)

    def consume(seed: int) -> None:
        rng = random.Random(seed)
        with Client(daemon.url) as client:
            while True:
                batch = client.receive("work", count=10, lease=1, wait=2)
                if not batch:
                    return
                for message in batch:
                    if rng.random() < 0.1:
                        try:
                            client.release("work", message["receipt"])
                        except ApiError as exc:
                            assert exc.status == 404  # its lease had already run out
                        continue
                    if rng.random() < 0.0005:
                        time.sleep(1.2)  # outlive the lease
                    try:
                        client.ack("work", message["receipt"])
                        with lock:
                            processed[message["content"]] += 1
                    except ApiError as exc:
                        assert exc.status == 404
                        with lock:
                            lost_leases[message["content"]] += 1
                            processed[message["content"]] += 1

    threads = [threading.Thread(target=consumer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    assert set(processed) == set(range(total)), "a message was lost"
    for content, times in processed.items():
        assert times - 1 <= lost_leases[content], (
            f"message {content} was processed twice without a lease expiring"
        )
    with Client(daemon.url) as check:
        assert check.queue("work")["messages"] == 0
