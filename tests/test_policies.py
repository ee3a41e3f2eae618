"""The queue policies on a real mqd, on both stores: priorities, groups, expiry, limits, caps,
and changing settings; each kept across a restart and a kill -9 (docs/policies.md)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mq import ApiError, Client

from . import postgres
from .helpers import MqdProcess


@pytest.fixture(params=["sqlite", "postgresql"])
def daemon(request, tmp_path):
    """A real mqd on SQLite in a temporary directory, or on a schema of its own in PostgreSQL;
    ``daemon.restart(kill=True)`` kills it with SIGKILL and starts it again on the same store."""
    args: tuple[str, ...] = ()
    schema = None
    if request.param == "postgresql":
        if postgres.unavailable():
            pytest.skip(postgres.unavailable())
        url, schema = postgres.new_schema_url()
        args = ("--store", url)
    process = Daemon(tmp_path / "data", *args).start()
    yield process
    process.stop()
    if schema:
        postgres.drop_schema(schema)


class Daemon(MqdProcess):
    def restart(self, *, kill: bool) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def client(self) -> Client:
        return Client(self.url)


def contents(messages) -> list:
    return [m["content"] for m in messages]


def test_higher_priorities_are_received_first_and_fifo_within_one(daemon):
    with daemon.client() as client:
        client.create_queue("q")
        for number, priority in enumerate([0, 5, 9, 5, 0, 9]):
            client.send("q", number, priority=priority)
        assert contents(client.receive("q", count=10)) == [2, 5, 1, 3, 0, 4]


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_priorities_survive_a_restart(daemon, kill):
    with daemon.client() as client:
        client.create_queue("q")
        client.send("q", "low")
        client.send("q", "high", priority=7)
    daemon.restart(kill=kill)
    with daemon.client() as client:
        (first,) = client.receive("q")
        assert (first["content"], first["priority"]) == ("high", 7)


def test_a_group_is_delivered_in_order_one_lease_at_a_time(daemon):
    with daemon.client() as client:
        client.create_queue("q")
        for number in range(3):
            client.send("q", f"a{number}", group="a")
        client.send("q", "b0", group="b")
        first = client.receive("q", count=10, lease=30)
        assert contents(first) == ["a0", "b0"]  # a1 waits for a0; b goes in parallel
        assert client.receive("q", count=10, lease=30) == []
        client.ack("q", first[0]["receipt"])
        (second,) = client.receive("q", count=10, lease=30)
        assert (second["content"], second["group"]) == ("a1", "a")
        client.release("q", second["receipt"])  # released: still a's turn for a1
        (again,) = client.receive("q", count=10, lease=30)
        assert again["content"] == "a1" and again["attempts"] == 2


def test_a_group_without_leases_is_received_in_order(daemon):
    with daemon.client() as client:
        client.create_queue("q")
        for number in range(5):
            client.send("q", number, group="g", priority=number % 2 * 9)
        assert contents(client.receive("q", count=10)) == [0, 1, 2, 3, 4]


def test_a_dead_lettered_group_message_frees_its_group(daemon):
    with daemon.client() as client:
        client.create_queue("dlq")
        client.create_queue("q", max_attempts=1, dead_letter_queue="dlq")
        client.send("q", "poison", group="g")
        client.send("q", "next", group="g")
        (poison,) = client.receive("q", lease=30)
        client.release("q", poison["receipt"])
        (following,) = client.receive("q", lease=30)  # poison went to the DLQ on the way
        assert following["content"] == "next"
        (dead,) = client.peek("dlq")
        assert dead["content"] == "poison" and dead.group is None


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_a_groups_turn_survives_a_restart(daemon, kill):
    with daemon.client() as client:
        client.create_queue("q")
        client.send("q", "first", group="g")
        client.send("q", "second", group="g")
        (first,) = client.receive("q", lease=60)
    daemon.restart(kill=kill)
    with daemon.client() as client:
        assert client.receive("q", lease=60) == []  # "first" is still leased: "second" waits
        client.ack("q", first["receipt"])
        (second,) = client.receive("q", lease=60)
        assert second["content"] == "second"


def test_an_expired_message_goes_to_the_dead_letter_queue_and_is_counted(daemon):
    with daemon.client() as client:
        client.create_queue("dlq")
        client.create_queue("q", max_attempts=5, dead_letter_queue="dlq")
        client.send("q", "stale", ttl=0.2)
        client.send("q", "fresh", ttl=600)
        time.sleep(0.4)
        assert contents(client.receive("q", count=10)) == ["fresh"]  # never delivered late
        assert contents(client.peek("dlq")) == ["stale"]
        counters = client.queue("q")["counters"]
        assert (counters["expired"], counters["dead_lettered"]) == (1, 1)


def test_an_expired_message_without_a_dead_letter_queue_is_dropped_by_the_sweep(daemon):
    with daemon.client() as client:
        client.create_queue("q", message_ttl=0.2)
        client.send("q", "default ttl")
        client.send("q", "own ttl", ttl=600)
        deadline = time.monotonic() + 10
        while client.queue("q")["messages"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # nobody receives: the once-a-second sweep removes it
        info = client.queue("q")
        assert (info["messages"], info["counters"]["expired"]) == (1, 1)
        assert contents(client.peek("q")) == ["own ttl"]


def test_a_delayed_messages_ttl_starts_when_it_becomes_visible(daemon):
    with daemon.client() as client:
        client.create_queue("q")
        client.send("q", "later", delay=0.5, ttl=30)
        time.sleep(0.6)
        assert contents(client.receive("q")) == ["later"]


def test_a_leased_message_does_not_expire(daemon):
    with daemon.client() as client:
        client.create_queue("q")
        client.send("q", "slow work", ttl=0.3)
        (leased,) = client.receive("q", lease=30)
        time.sleep(0.5)
        client.ack("q", leased["receipt"])  # still there to acknowledge
        assert client.queue("q")["counters"]["expired"] == 0


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_a_ttl_survives_a_restart(daemon, kill):
    with daemon.client() as client:
        client.create_queue("q")
        client.send("q", "short", ttl=1)
        client.send("q", "long", ttl=600)
    daemon.restart(kill=kill)
    time.sleep(1.1)
    with daemon.client() as client:
        assert contents(client.receive("q", count=10)) == ["long"]


def test_a_full_queue_refuses_a_send_with_429_and_stores_nothing_of_a_batch(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_messages=3)
        client.send_many("q", ["a", "b"])
        with pytest.raises(ApiError) as refused:
            client.send_many("q", ["c", "d"])  # one would fit; all or nothing
        assert (refused.value.status, refused.value.code) == (429, "queue_full")
        assert client.queue("q")["messages"] == 2
        client.send("q", "c")
        assert client.queue("q")["counters"]["refused"] == 1


def test_max_bytes_counts_the_content(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_bytes=10)
        client.send("q", "1234")  # "1234" with its quotes: 6 bytes
        with pytest.raises(ApiError) as refused:
            client.send("q", "12345")
        assert refused.value.code == "queue_full"
        client.receive("q")
        client.send("q", "12345")
        assert client.queue("q")["bytes"] == 7


def test_drop_oldest_makes_room_with_the_head_to_the_dead_letter_queue(daemon):
    with daemon.client() as client:
        client.create_queue("dlq")
        client.create_queue(
            "q", max_messages=2, overflow="drop_oldest", max_attempts=3, dead_letter_queue="dlq"
        )
        for number in range(4):
            client.send("q", number)
        assert contents(client.peek("q", count=10)) == [2, 3]
        assert contents(client.peek("dlq", count=10)) == [0, 1]
        assert client.queue("q")["counters"]["dropped"] == 2


def test_drop_oldest_refuses_when_nothing_ready_can_make_room(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_messages=1, overflow="drop_oldest")
        client.send("q", "leased")
        client.receive("q", lease=30)
        with pytest.raises(ApiError) as refused:
            client.send("q", "more")
        assert refused.value.code == "queue_full"


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_a_limit_survives_a_restart(daemon, kill):
    with daemon.client() as client:
        client.create_queue("q", max_messages=1)
        client.send("q", "only")
    daemon.restart(kill=kill)
    with daemon.client() as client:
        with pytest.raises(ApiError) as refused:
            client.send("q", "more")
        assert refused.value.code == "queue_full"


def test_max_in_flight_caps_leases_and_a_waiting_receiver_gets_the_freed_place(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_in_flight=2)
        client.send_many("q", list(range(5)))
        held = client.receive("q", count=5, lease=30)
        assert len(held) == 2
        assert client.receive("q", lease=30) == []
        client.ack("q", held[0]["receipt"])
        assert len(client.receive("q", count=5, lease=30, wait=5)) == 1


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_a_cap_survives_a_restart(daemon, kill):
    with daemon.client() as client:
        client.create_queue("q", max_in_flight=1)
        client.send_many("q", ["a", "b"])
        client.receive("q", lease=60)
    daemon.restart(kill=kill)
    with daemon.client() as client:
        assert client.receive("q", lease=60) == []


def test_max_rate_holds_receivers_back_until_a_token_comes(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_rate=0.5)  # a token every two seconds, one at most in store
        client.send_many("q", ["a", "b"])
        assert contents(client.receive("q", count=2)) == ["a"]
        assert client.receive("q") == []
        assert contents(client.receive("q", wait=10)) == ["b"]  # woken when the token comes


def test_settings_change_and_null_clears_a_limit(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_messages=1)
        client.send("q", "a")
        changed = client.update_queue("q", max_messages=None, max_rate=100.0)
        assert (changed["max_messages"], changed["max_rate"]) == (None, 100.0)
        client.send("q", "b")
        with pytest.raises(ApiError) as conflict:
            client.update_queue("q", max_attempts=3)  # without a dead-letter queue
        assert conflict.value.status == 409
        with pytest.raises(ApiError) as bad:
            client.update_queue("q", overflow="drop_newest")
        assert bad.value.status == 400


def test_a_declaration_with_other_policies_conflicts(daemon):
    with daemon.client() as client:
        client.create_queue("q", max_rate=10)
        assert client.create_queue("q", max_rate=10)[1] is False
        with pytest.raises(ApiError) as conflict:
            client.create_queue("q", max_rate=20)
        assert conflict.value.status == 409


# -- across three nodes on one PostgreSQL database ----------------------------------------------


@pytest.fixture
def nodes(postgres_nodes):
    return [Client(node.url) for node in postgres_nodes]


def test_max_in_flight_holds_across_nodes(nodes):
    nodes[0].create_queue("q", max_in_flight=3)
    nodes[0].send_many("q", list(range(20)))
    with ThreadPoolExecutor(len(nodes)) as pool:
        taken = list(pool.map(lambda client: client.receive("q", count=10, lease=60), nodes))
    assert sum(len(batch) for batch in taken) == 3
    assert all(client.receive("q", lease=60) == [] for client in nodes)
    nodes[2].ack("q", next(batch for batch in taken if batch)[0]["receipt"])
    assert len(nodes[1].receive("q", count=10, lease=60, wait=5)) == 1  # told by another node


def test_max_rate_holds_across_nodes(nodes):
    nodes[0].create_queue("q", max_rate=0.1)  # one token in store, the next in ten seconds
    nodes[0].send_many("q", list(range(10)))
    with ThreadPoolExecutor(len(nodes)) as pool:
        taken = list(pool.map(lambda client: client.receive("q", count=10), nodes))
    assert sum(len(batch) for batch in taken) == 1


def test_a_group_goes_in_order_across_nodes_one_lease_at_a_time(nodes):
    nodes[0].create_queue("q")
    sent = {group: [f"{group}{n}" for n in range(8)] for group in ("a", "b", "c")}
    for n in range(8):
        for group, contents_of_group in sent.items():
            nodes[n % 3].send("q", contents_of_group[n], group=group)
    received: list[str] = []
    lock = threading.Lock()
    leased_now: dict[str, int] = {}

    def consume(client: Client) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 2:
            batch = client.receive("q", count=3, lease=60, wait=0.5)
            if batch:
                idle_since = time.monotonic()
            for message in batch:
                with lock:
                    leased_now[message.group] = leased_now.get(message.group, 0) + 1
                    assert leased_now[message.group] == 1, "two of one group leased at once"
                    received.append(message.content)
                time.sleep(0.01)
                with lock:
                    leased_now[message.group] -= 1
                client.ack("q", message["receipt"])

    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(consume, nodes))
    for group, contents_of_group in sent.items():
        assert [c for c in received if c.startswith(group)] == contents_of_group
