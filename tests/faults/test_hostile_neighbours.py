"""No client's bad request fails another's: generated hostile requests, sent together with
ordinary ones so they share the store's commits, never give a 5xx and never make an ordinary
request fail.

Hostile values are anything JSON can carry and more: lone surrogates and NULs in every string
(keys, names, receipts, query values, headers), integers of hundreds of digits, NaN and Infinity,
bodies that are not UTF-8 or not JSON, nesting thousands deep. On both stores, through the real
application.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqd.app import create_app

from .conftest import scaled

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates and NULs too
NUMBERS = st.one_of(
    st.integers(min_value=-(10**600), max_value=10**600),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 2**64, 10**4000]),
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, ANY_TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(ANY_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",)), max_size=40
)
JSON = {"Content-Type": "application/json"}
ORDINARY = 20
TOKEN = "right-token"
ENCODINGS = st.one_of(st.sampled_from(["gzip", "deflate", "identity", "x-unknown"]), HEADER_TEXT)


@pytest.fixture
async def guarded(store_url, aiohttp_client, make_config):
    """The real application with an access token, so that hostile Authorization headers meet
    the code that checks them."""
    return await aiohttp_client(create_app(make_config(store=store_url, token=TOKEN)))


def encoded(value) -> bytes:
    """JSON text the way a careless client writes it: NaN, lone surrogates and all."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def hostile_request(draw) -> tuple[str, str, dict]:
    """A request of ``hostile_body``, with the right token or any Authorization header, and
    sometimes a Content-Encoding its body does not follow."""
    method, path, options = draw(hostile_body())
    headers = {**options.get("headers", {}), "Authorization": f"Bearer {TOKEN}"}
    if draw(st.integers(0, 4)) == 0:
        headers["Authorization"] = draw(st.one_of(HEADER_TEXT, HEADER_TEXT.map("Bearer {}".format)))
    if draw(st.integers(0, 4)) == 0:
        headers["Content-Encoding"] = draw(ENCODINGS)
    return method, path, {**options, "headers": headers}


@st.composite
def hostile_body(draw) -> tuple[str, str, dict]:
    """(method, path, aiohttp request options): aimed at the queue the ordinary sends use, for
    sends (which share its commits), and at another queue for everything that takes messages."""
    kind = draw(st.sampled_from(["send", "batch", "create", "receive", "settle", "raw"]))
    fields = draw(st.dictionaries(st.sampled_from(["content", "key", "delay", "extra"]), VALUES, max_size=4))
    if kind == "send":
        headers = {**JSON, "Idempotency-Key": draw(HEADER_TEXT)} if draw(st.booleans()) else JSON
        return "POST", "/queues/q/messages", {"data": encoded(fields), "headers": headers}
    if kind == "batch":
        items = draw(st.lists(st.one_of(VALUES, st.just(fields)), min_size=0, max_size=5))
        body = {"messages": items} if draw(st.booleans()) else {"messages": items, **fields}
        return "POST", "/queues/q/messages", {"data": encoded(body), "headers": JSON}
    if kind == "create":
        names = st.one_of(VALUES, st.sampled_from(["q", "h", "dlq"]))
        settings_ = st.sampled_from(["name", "max_attempts", "dead_letter_queue", "dedup_window"])
        body = draw(st.dictionaries(settings_, names, max_size=4))
        return "POST", "/queues", {"data": encoded(body), "headers": JSON}
    if kind == "receive":
        parameters = draw(
            st.dictionaries(st.sampled_from(["count", "lease", "wait", "x"]), ANY_TEXT, max_size=3)
        )
        if "wait" in parameters:
            parameters["wait"] = draw(st.sampled_from(["soon", "nan", "-1", "1e999", "0x1", "\0"]))
        query = "&".join(
            f"{quote(k)}={quote(v, safe='', errors='surrogatepass')}" for k, v in parameters.items()
        )
        return "GET", f"/queues/h/messages?{query}", {}
    if kind == "settle":
        receipt = quote(draw(ANY_TEXT) or "x", safe="", errors="surrogatepass")
        action = draw(st.sampled_from(["", "/release", "/extend"]))
        method = "DELETE" if not action else "POST"
        return method, f"/queues/h/messages/{receipt}{action}", {"data": encoded(fields), "headers": JSON}
    raw = draw(
        st.one_of(
            st.binary(max_size=200),
            st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
            st.sampled_from([b'{"content": 1, "delay": 1' + b"0" * 5000 + b"}", b'{"content": 1e99999}']),
        )
    )
    return "POST", draw(st.sampled_from(["/queues/q/messages", "/queues"])), {"data": raw, "headers": JSON}


@settings(
    max_examples=scaled(40, 500), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(hostile=st.lists(hostile_request(), min_size=1, max_size=12))
async def test_hostile_requests_fail_alone_and_never_with_a_5xx(guarded, hostile):
    client = GuardedClient(guarded)
    for name in ("q", "h"):
        await client.post("/queues", json={"name": name})
    tag = id(hostile)

    async def ordinary(i: int) -> int:
        if i % 4 == 0:
            items = [{"content": f"ordinary {tag} {i} {n}"} for n in range(3)]
            response = await client.post("/queues/q/messages", json={"messages": items})
        else:
            response = await client.post("/queues/q/messages", json={"content": f"ordinary {tag} {i}"})
        return response.status

    async def attack(method: str, path: str, options: dict) -> tuple[int, str]:
        response = await guarded.request(method, path, **options)
        return response.status, await response.text()

    hostile_calls = [attack(*request) for request in hostile]
    results = await asyncio.gather(*(ordinary(i) for i in range(ORDINARY)), *hostile_calls)
    ordinary_statuses, attacks = results[:ORDINARY], results[ORDINARY:]
    assert [(status, text) for status, text in attacks if status >= 500] == []
    assert ordinary_statuses == [201] * ORDINARY
    kept = []
    while True:
        response = await client.get("/queues/q/messages", params={"count": "1000"})
        if response.status == 204:
            break
        kept += [m["content"] for m in (await response.json())["messages"]]
    ordinary_kept = [c for c in kept if isinstance(c, str) and c.startswith(f"ordinary {tag} ")]
    assert (
        len(set(ordinary_kept)) == len(ordinary_kept) == sum(3 if i % 4 == 0 else 1 for i in range(ORDINARY))
    )


class GuardedClient:
    """The test client, sending the right token with every ordinary request."""

    def __init__(self, client) -> None:
        self.client = client

    def post(self, path: str, **options):
        return self.client.post(path, headers={"Authorization": f"Bearer {TOKEN}"}, **options)

    def get(self, path: str, **options):
        return self.client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}, **options)
