"""Fan-out on a real mqd, on both stores: an exchange delivers one send into every queue bound
to it, in one commit, each copy with its own id and life (docs/policies.md)."""

from __future__ import annotations

import subprocess

import pytest

from mq import ApiError

from .helpers import mqctl as run_mqctl
from .test_policies import daemon  # noqa: F401  (the fixture: a real mqd on either store)


def test_a_publish_puts_a_copy_in_each_queue_with_its_own_life(daemon):  # noqa: F811
    with daemon.client() as client:
        client.create_queue("billing")
        client.create_queue("shipping", max_attempts=3, dead_letter_queue="billing")
        assert client.bind_exchange("orders", ["billing", "shipping"]) == (
            {"name": "orders", "queues": ["billing", "shipping"]},
            True,
        )
        ids = client.publish("orders", {"order": 7}, priority=3)
        assert set(ids) == {"billing", "shipping"} and ids["billing"] != ids["shipping"]
        (billed,) = client.receive("billing", lease=30)
        client.ack("billing", billed["receipt"])
        (shipped,) = client.receive("shipping")
        assert (shipped.id, shipped.content, shipped.priority) == (ids["shipping"], {"order": 7}, 3)


def test_a_publish_is_all_or_nothing(daemon):  # noqa: F811
    with daemon.client() as client:
        client.create_queue("roomy")
        client.create_queue("tiny", max_messages=1)
        client.bind_exchange("both", ["roomy", "tiny"])
        client.publish("both", "first")
        with pytest.raises(ApiError) as refused:
            client.publish("both", "second")
        assert (refused.value.status, refused.value.code) == (429, "queue_full")
        assert [m.content for m in client.peek("roomy", 10)] == ["first"]
        assert client.queue("tiny")["counters"]["refused"] == 1


def test_binding_again_replaces_the_queues_and_deleting_a_queue_unbinds_it(daemon):  # noqa: F811
    with daemon.client() as client:
        for name in ("a", "b", "c"):
            client.create_queue(name)
        client.bind_exchange("x", ["a", "b"])
        assert client.bind_exchange("x", ["b", "c"])[1] is False
        client.delete_queue("c")
        assert client.exchanges() == [{"name": "x", "queues": ["b"]}]
        client.publish("x", "only b")
        assert client.queue("a")["messages"] == 0 and client.queue("b")["messages"] == 1


def test_unknown_exchanges_and_queues_are_refused(daemon):  # noqa: F811
    with daemon.client() as client:
        with pytest.raises(ApiError) as unknown:
            client.publish("nowhere", "lost?")
        assert (unknown.value.status, unknown.value.code) == (404, "exchange_not_found")
        with pytest.raises(ApiError) as missing:
            client.bind_exchange("x", ["no-such-queue"])
        assert missing.value.code == "queue_not_found"
        with pytest.raises(ApiError) as gone:
            client.delete_exchange("x")
        assert gone.value.code == "exchange_not_found"


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "kill-9"])
def test_bindings_and_published_copies_survive_a_restart(daemon, kill):  # noqa: F811
    with daemon.client() as client:
        client.create_queue("a")
        client.create_queue("b")
        client.bind_exchange("x", ["a", "b"])
        client.publish("x", "kept")
    daemon.restart(kill=kill)
    with daemon.client() as client:
        assert client.exchanges() == [{"name": "x", "queues": ["a", "b"]}]
        assert [m.content for m in client.receive("a")] == ["kept"]
        assert [m.content for m in client.receive("b")] == ["kept"]


def test_mqctl_binds_publishes_and_deletes(daemon):  # noqa: F811
    def mqctl(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return run_mqctl("--url", daemon.url, *args, input=stdin)

    assert mqctl("create", "a").returncode == 0 and mqctl("create", "b").returncode == 0
    assert mqctl("exchange", "x", "a", "b").stdout == "created exchange 'x': a, b\n"
    published = mqctl("publish", "x", "--json", stdin='{"n": 1}\n')
    assert published.returncode == 0
    assert [line.split("\t")[0] for line in published.stdout.splitlines()] == ["a", "b"]
    assert mqctl("exchange", "x").stdout == "a\nb\n"
    assert mqctl("exchange", "x", "--delete").returncode == 0
    missing = mqctl("publish", "x", "more")
    assert missing.returncode == 5 and missing.stderr.startswith("mqctl: Exchange 'x' does not exist")
