"""GET /metrics: parsed as Prometheus text and checked against known traffic."""

from __future__ import annotations

import re

import pytest

SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as (name, labels) -> value; fails on any line that is not the text format."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
async def traffic(client):
    await client.post("/queues", json={"name": "dlq"})
    await client.post("/queues", json={"name": "q", "max_attempts": 1, "dead_letter_queue": "dlq"})
    await client.post("/queues/q/messages", json={"messages": [{"content": i} for i in range(5)]})
    await client.post("/queues/q/messages", json={"content": "later", "delay": 60})
    await client.get("/queues/q/messages", params={"count": "2"})  # 2 received, removed
    leased = await (await client.get("/queues/q/messages", params={"lease": "30"})).json()
    await client.delete(f"/queues/q/messages/{leased['receipt']}")  # 1 acked
    second = await (await client.get("/queues/q/messages", params={"lease": "30"})).json()
    await client.post(f"/queues/q/messages/{second['receipt']}/release")  # 1 released
    await client.get("/queues/q/messages", params={"lease": "30"})  # dead-letters it, leases the next
    await client.get("/queues/nope/messages")  # a 404
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    return parse(await response.text())


async def test_queue_depths_by_state(traffic):
    assert value(traffic, "mq_queue_messages", queue="q", state="ready") == 0
    assert value(traffic, "mq_queue_messages", queue="q", state="leased") == 1
    assert value(traffic, "mq_queue_messages", queue="q", state="delayed") == 1
    assert value(traffic, "mq_queue_dead_lettered", queue="q") == 1
    assert value(traffic, "mq_queue_messages", queue="dlq", state="ready") == 1


async def test_traffic_counters(traffic):
    assert value(traffic, "mq_messages_sent_total", queue="q") == 6
    assert value(traffic, "mq_messages_received_total", queue="q") == 5
    assert value(traffic, "mq_messages_acked_total", queue="q") == 1
    assert value(traffic, "mq_messages_released_total", queue="q") == 1
    assert value(traffic, "mq_messages_dead_lettered_total", queue="q") == 1
    assert value(traffic, "mq_messages_sent_total", queue="dlq") == 0


async def test_requests_by_route_and_status_with_a_latency_histogram(traffic):
    route = "/queues/{name}/messages"
    assert value(traffic, "mq_http_requests_total", route=route, method="POST", status="201") == 2
    assert value(traffic, "mq_http_requests_total", route=route, method="GET", status="200") == 4
    assert value(traffic, "mq_http_requests_total", route=route, method="GET", status="404") == 1
    count = value(traffic, "mq_http_request_duration_seconds_count", route=route, method="GET")
    assert count == 5
    assert (
        value(traffic, "mq_http_request_duration_seconds_bucket", route=route, method="GET", le="+Inf")
        == count
    )


async def test_store_commits_are_measured(traffic):
    commits = value(traffic, "mq_store_commit_duration_seconds_count")
    assert commits >= 10  # at least one per write above
    assert value(traffic, "mq_store_commit_operations_count") == commits
    assert value(traffic, "mq_store_commit_operations_sum") >= commits


async def test_process_figures(traffic):
    assert value(traffic, "process_resident_memory_bytes") > 1_000_000
    assert value(traffic, "mq_waiting_receivers") == 0


async def test_the_stores_health_is_a_metric(traffic):
    assert value(traffic, "mq_store_up") == 1 and value(traffic, "mq_store_failed") == 0


async def test_policies_show_their_limits_and_counts(client):
    await client.post(
        "/queues", json={"name": "bounded", "max_messages": 2, "overflow": "drop_oldest", "max_rate": 5}
    )
    for number in range(3):
        await client.post("/queues/bounded/messages", json={"content": number})
    await client.post("/queues", json={"name": "strict", "max_bytes": 3})
    await client.post("/queues/strict/messages", json={"content": "too long"})
    samples = parse(await (await client.get("/metrics")).text())
    assert value(samples, "mq_queue_limit", queue="bounded", limit="max_messages") == 2
    assert value(samples, "mq_queue_limit", queue="bounded", limit="max_rate") == 5
    assert ("mq_queue_limit", frozenset({("queue", "bounded"), ("limit", "max_in_flight")})) not in samples
    assert value(samples, "mq_queue_bytes", queue="bounded") == 2  # "1" and "2"
    assert value(samples, "mq_messages_dropped_total", queue="bounded") == 1
    assert value(samples, "mq_messages_refused_total", queue="strict") == 1
    assert value(samples, "mq_messages_expired_total", queue="strict") == 0
