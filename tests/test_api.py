"""The HTTP API contract, through pytest-aiohttp's client against the real application."""

from __future__ import annotations

import asyncio
import json

import pytest

from mqd import protocol
from mqd.app import create_app

JSON = {"Content-Type": "application/json"}


async def create(client, name="q", **settings):
    response = await client.post("/queues", json={"name": name, **settings})
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def send(client, content, queue="q", **fields):
    response = await client.post(f"/queues/{queue}/messages", json={"content": content, **fields})
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def until_waiting(client, receivers: int) -> None:
    """Until ``receivers`` long-polls are in line, as /status counts them."""
    deadline = asyncio.get_running_loop().time() + 10
    while (await (await client.get("/status")).json())["waiting_receivers"] < receivers:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


async def receive(client, queue="q", **params):
    response = await client.get(f"/queues/{queue}/messages", params={k: str(v) for k, v in params.items()})
    return response.status, (await response.json() if response.status == 200 else None)


# -- queues -------------------------------------------------------------------------------------


async def test_create_queue_answers_201_then_200_when_declared_again(client):
    first = await client.post("/queues", json={"name": "orders"})
    second = await client.post("/queues", json={"name": "orders"})
    assert (first.status, second.status) == (201, 200)
    assert (await first.json())["name"] == "orders"


async def test_create_queue_with_other_settings_is_409(client):
    await create(client, "dlq")
    await create(client, "q")
    response = await client.post("/queues", json={"name": "q", "max_attempts": 3, "dead_letter_queue": "dlq"})
    assert response.status == 409
    assert "other settings" in (await response.json())["error"]


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "a/b", "a b", "x" * 129, "é", 5, None, ["q"], "a?b", "tab\t"],
)
async def test_invalid_queue_names_are_400(client, name):
    response = await client.post("/queues", json={"name": name})
    assert response.status == 400
    assert "name" in (await response.json())["error"]


@pytest.mark.parametrize("name", ["a", "A-z_0.9", "x" * 128, "0", "-dash", "_"])
async def test_valid_queue_names_are_accepted(client, name):
    response = await client.post("/queues", json={"name": name})
    assert response.status == 201
    assert (await client.get(f"/queues/{name}")).status == 200


async def test_list_get_and_delete_queues(client):
    await create(client, "a")
    await create(client, "b")
    await send(client, "x", queue="a")
    listing = await (await client.get("/queues")).json()
    assert [(q["name"], q["messages"]) for q in listing["queues"]] == [("a", 1), ("b", 0)]
    info = await (await client.get("/queues/a")).json()
    assert (info["ready"], info["leased"], info["delayed"]) == (1, 0, 0)
    assert (await client.delete("/queues/a")).status == 204
    assert (await client.get("/queues/a")).status == 404


async def test_purge_empties_the_queue(client):
    await create(client)
    for i in range(3):
        await send(client, i)
    response = await client.delete("/queues/q/messages")
    assert response.status == 200 and (await response.json())["purged"] == 3
    assert (await receive(client))[0] == 204


# -- messages -----------------------------------------------------------------------------------


async def test_send_then_receive_returns_the_message_and_removes_it(client):
    await create(client)
    message_id = await send(client, "hello")
    status, message = await receive(client)
    assert status == 200
    assert (message["id"], message["content"], message["attempts"]) == (message_id, "hello", 1)
    assert (await receive(client))[0] == 204


async def test_receive_on_an_empty_queue_is_204_with_an_empty_body(client):
    await create(client)
    response = await client.get("/queues/q/messages")
    assert response.status == 204 and await response.read() == b""


@pytest.mark.parametrize(
    "content",
    [
        "with\x00nul\nand\r\nnewlines",
        "é漢😀",
        {"nested": [1, 2.5, True, None, {"x": "y"}]},
        12345678901234567890123,
        1.0,
        0,
        -0.5,
        "",
        [],
        None,
        False,
        "\ud800",
    ],
)
async def test_content_round_trips_exactly_with_its_type(client, content):
    await create(client)
    await client.post("/queues/q/messages", data=json.dumps({"content": content}), headers=JSON)
    response = await client.get("/queues/q/messages")
    received = json.loads(await response.read())["content"]
    assert received == content and type(received) is type(content)


async def test_batch_send_returns_ids_in_order_and_receive_count_returns_them(client):
    await create(client)
    response = await client.post("/queues/q/messages", json={"messages": [{"content": i} for i in range(5)]})
    assert response.status == 201
    ids = (await response.json())["ids"]
    status, body = await receive(client, count=10)
    assert status == 200
    assert [m["id"] for m in body["messages"]] == ids
    assert [m["content"] for m in body["messages"]] == list(range(5))


async def test_a_batch_of_strings_and_other_values_round_trips_exactly(client):
    # Plain string items take a short path through parsing; the rest the general one.
    contents = ["plain", "nul \u0000, newline \n, \ud800, 😀", {"a": [1, "b"]}, "", 2.5, "é"]
    items = [{"content": c} for c in contents] + [{"content": "delayed", "delay": 0}]
    await create(client)
    response = await client.post("/queues/q/messages", json={"messages": items})
    assert response.status == 201
    status, body = await receive(client, count=10)
    assert status == 200 and [m["content"] for m in body["messages"]] == [*contents, "delayed"]


@pytest.mark.parametrize(
    "items",
    [
        [{"content": 1}, {"nope": 2}],
        [{"content": "ok"}, {"content": "x", "nope": 1}],
        [{"content": "ok"}, "not an object"],
    ],
)
async def test_a_batch_with_one_bad_item_stores_nothing(client, items):
    await create(client)
    response = await client.post("/queues/q/messages", json={"messages": items})
    assert response.status == 400
    error = (await response.json())["error"]
    assert "messages[1]" in error
    assert (await receive(client))[0] == 204


async def test_count_returns_a_list_even_of_one(client):
    await create(client)
    await send(client, "only")
    status, body = await receive(client, count=1)
    assert status == 200 and [m["content"] for m in body["messages"]] == ["only"]


async def test_long_poll_answers_as_soon_as_a_message_arrives(client):
    await create(client)
    waiting = asyncio.ensure_future(receive(client, wait=10))
    await until_waiting(client, 1)
    assert not waiting.done()
    await send(client, "late")
    status, message = await asyncio.wait_for(waiting, 5)
    assert (status, message["content"]) == (200, "late")


async def test_long_poll_times_out_with_204(client):
    await create(client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await receive(client, wait=0.3))[0] == 204
    assert loop.time() - started >= 0.3


async def test_waiting_receivers_are_served_in_arrival_order_and_never_share(client):
    await create(client)
    waiters = []
    for count in range(1, 6):
        waiters.append(asyncio.ensure_future(receive(client, wait=10)))
        await until_waiting(client, count)
    for i in range(5):
        await send(client, i)
    results = await asyncio.gather(*waiters)
    assert [message["content"] for _, message in results] == [0, 1, 2, 3, 4]


async def test_lease_ack_release_and_extend(client):
    await create(client)
    await send(client, "job")
    status, leased = await receive(client, lease=30)
    assert status == 200 and leased["receipt"] and leased["attempts"] == 1
    assert (await receive(client))[0] == 204  # hidden while leased
    receipt = leased["receipt"]
    extended = await client.post(f"/queues/q/messages/{receipt}/extend", json={"lease": 60})
    assert extended.status == 200 and (await extended.json())["lease_expires_at"] > leased["lease_expires_at"]
    assert (await client.post(f"/queues/q/messages/{receipt}/release", json={})).status == 204
    status, again = await receive(client, lease=30)
    assert again["id"] == leased["id"] and again["attempts"] == 2
    assert (await client.delete(f"/queues/q/messages/{again['receipt']}")).status == 204
    assert (await client.delete(f"/queues/q/messages/{again['receipt']}")).status == 404


async def test_release_without_a_body_is_accepted(client):
    await create(client)
    await send(client, "job")
    _, leased = await receive(client, lease=30)
    assert (await client.post(f"/queues/q/messages/{leased['receipt']}/release")).status == 204


async def test_peek_does_not_consume(client):
    await create(client)
    await send(client, "a")
    response = await client.get("/queues/q/peek", params={"count": "5"})
    assert [m["content"] for m in (await response.json())["messages"]] == ["a"]
    assert (await receive(client))[1]["content"] == "a"
    assert (await client.get("/queues/q/peek")).status == 204


async def test_idempotency_key_header_makes_a_retry_harmless(client):
    await create(client)
    headers = {"Idempotency-Key": "order-17"}
    first = await client.post("/queues/q/messages", json={"content": 1}, headers=headers)
    retry = await client.post("/queues/q/messages", json={"content": 1}, headers=headers)
    assert (first.status, retry.status) == (201, 200)
    assert (await retry.json())["id"] == (await first.json())["id"]
    assert (await (await client.get("/queues/q")).json())["messages"] == 1


async def test_a_batch_says_which_items_repeated_an_earlier_key(client):
    await create(client)
    first = await send(client, "a", key="k1")
    response = await client.post(
        "/queues/q/messages",
        json={
            "messages": [
                {"content": "again", "key": "k1"},
                {"content": "b"},
                {"content": "c", "key": "k2"},
                {"content": "c again", "key": "k2"},
            ]
        },
    )
    body = await response.json()
    assert response.status == 201
    assert body["ids"][0] == first and body["ids"][3] == body["ids"][2] != body["ids"][1]
    assert body["duplicates"] == [0, 3]
    plain = await (await client.post("/queues/q/messages", json={"messages": [{"content": 1}]})).json()
    assert plain["duplicates"] == []


async def test_dead_letters_and_redrive(client):
    await create(client, "dlq")
    await create(client, "q", max_attempts=1, dead_letter_queue="dlq")
    await send(client, "poison")
    _, leased = await receive(client, lease=30)
    await client.post(f"/queues/q/messages/{leased['receipt']}/release")
    assert (await receive(client, lease=30))[0] == 204  # second lease: dead-lettered instead
    assert (await (await client.get("/queues/q")).json())["dead_lettered"] == 1
    response = await client.post("/queues/dlq/redrive")
    assert (await response.json()) == {"moved": 1, "queues": {"q": 1}}
    assert (await receive(client))[1]["content"] == "poison"


async def test_a_delayed_message_waits(client):
    await create(client)
    await send(client, "later", delay=0.3)
    assert (await receive(client))[0] == 204
    status, message = await receive(client, wait=5)
    assert (status, message["content"]) == (200, "later")


# -- status and errors --------------------------------------------------------------------------


async def test_status_reports_totals(client):
    await create(client)
    await send(client, "x")
    body = await (await client.get("/status")).json()
    assert body["status"] == "ok" and body["queues"] == 1 and body["messages"] == 1
    assert body["version"] and body["uptime_seconds"] >= 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/queues", {"data": "{not json", "headers": JSON}, 400),
        ("POST", "/queues", {"data": "[1,2]", "headers": JSON}, 400),
        ("POST", "/queues", {"json": {}}, 400),
        ("POST", "/queues", {"json": {"name": "q", "colour": "red"}}, 400),
        ("POST", "/queues", {"json": {"name": "x", "max_attempts": 0, "dead_letter_queue": "q"}}, 400),
        ("POST", "/queues", {"json": {"name": "x", "dedup_window": "long"}}, 400),
        ("POST", "/queues", {}, 400),
        (
            "POST",
            "/queues",
            {"data": "name=q", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
        ),
        ("POST", "/queues", {"data": "{}", "headers": {"Content-Type": "text/plain"}}, 415),
        (
            "POST",
            "/queues",
            {"data": b"--x--", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            415,
        ),
        ("POST", "/queues/q/messages", {"json": {}}, 400),
        ("POST", "/queues/q/messages", {"json": {"contents": 1}}, 400),
        ("POST", "/queues/q/messages", {"data": '{"content": NaN}', "headers": JSON}, 400),
        ("POST", "/queues/q/messages", {"data": b'{"content": "\xff"}', "headers": JSON}, 400),
        ("POST", "/queues/q/messages", {"json": {"content": 1, "delay": -1}}, 400),
        ("POST", "/queues/q/messages", {"json": {"content": 1, "delay": True}}, 400),
        ("POST", "/queues/q/messages", {"json": {"messages": []}}, 400),
        ("POST", "/queues/q/messages", {"json": {"messages": [{"content": 1}] * 1001}}, 400),
        ("POST", "/queues/q/messages", {"json": {"messages": "no"}}, 400),
        ("POST", "/queues/q/messages", {"json": {"content": 1}, "headers": {"Idempotency-Key": ""}}, 400),
        ("POST", "/queues/q/messages", {"data": '{"content": "x", "key": "\\ud800"}', "headers": JSON}, 400),
        (
            "POST",
            "/queues/q/messages",
            {"data": '{"messages": [{"content": 1, "key": "\\udfff"}]}', "headers": JSON},
            400,
        ),
        ("POST", "/queues/q/messages", {"json": {"content": "x", "key": "nul\x00"}}, 400),
        ("POST", "/queues/q/messages", {"data": '{"content": 1, "delay": 1e400}', "headers": JSON}, 400),
        (
            "POST",
            "/queues/q/messages",
            {"data": '{"content": 1, "delay": 1' + "0" * 5000 + "}", "headers": JSON},
            400,
        ),
        (
            "POST",
            "/queues/q/messages",
            {"data": '{"content": ' + "[" * 600 + "]" * 600 + "}", "headers": JSON},
            400,
        ),
        (
            "POST",
            "/queues/q/messages",
            {"data": '{"content": ' + "[" * 100000 + "]" * 100000 + "}", "headers": JSON},
            400,
        ),
        ("POST", "/queues", {"data": '{"name": [1e400]}', "headers": JSON}, 400),
        ("POST", "/queues", {"json": {"name": "x" * 100000}}, 400),
        ("POST", "/queues/nope/messages", {"json": {"content": 1}}, 404),
        ("GET", "/queues/nope/messages", {}, 404),
        ("GET", "/queues/nope", {}, 404),
        ("DELETE", "/queues/nope", {}, 404),
        ("DELETE", "/queues/dlq", {}, 409),
        ("DELETE", "/queues/nope/messages", {}, 404),
        ("GET", "/queues/q/messages?wait=61", {}, 400),
        ("GET", "/queues/q/messages?wait=-1", {}, 400),
        ("GET", "/queues/q/messages?wait=soon", {}, 400),
        ("GET", "/queues/q/messages?count=0", {}, 400),
        ("GET", "/queues/q/messages?count=1001", {}, 400),
        ("GET", "/queues/q/messages?count=1.5", {}, 400),
        ("GET", "/queues/q/messages?lease=0", {}, 400),
        ("GET", "/queues/q/messages?lease=43201", {}, 400),
        ("GET", "/queues/q/messages?cuont=2", {}, 400),
        ("GET", "/queues/q/messages?count=1&count=2", {}, 400),
        ("GET", "/queues/q/messages?wait=nan", {}, 400),
        ("GET", "/queues/.bad/messages", {}, 400),
        ("DELETE", "/queues/q/messages/1.deadbeef", {}, 404),
        ("DELETE", "/queues/q/messages/1.dead%00beef", {}, 404),
        ("DELETE", "/queues/q/messages/1.%ff", {}, 404),
        ("DELETE", "/queues/q/messages/99999999999999999999999.ab", {}, 404),
        ("POST", "/queues/q/messages/%ed%a0%80/release", {}, 404),
        ("DELETE", "/queues/nope/messages/not-a-receipt", {}, 404),
        ("POST", "/queues/q/messages/1.deadbeef/extend", {"json": {"lease": 5}}, 404),
        ("POST", "/queues/q/messages/1.deadbeef/extend", {"json": {}}, 400),
        ("POST", "/queues/q/messages/1.deadbeef/release", {"json": {"delay": "x"}}, 400),
        ("GET", "/nowhere", {}, 404),
        ("PUT", "/queues", {}, 405),
        ("PATCH", "/queues/q/messages", {}, 405),
        ("HEAD", "/queues/q/messages", {}, 405),
        (
            "POST",
            "/queues/q/messages",
            {"data": b'{"content": "' + b"x" * (1024 * 1024) + b'"}', "headers": JSON},
            413,
        ),
    ],
)
async def test_errors_have_the_right_status_a_sentence_and_a_code(client, method, path, kwargs, status):
    await create(client, "dlq")
    await create(client, "q", max_attempts=3, dead_letter_queue="dlq")
    response = await client.request(method, path, **kwargs)
    assert response.status == status
    if method != "HEAD":
        body = await response.json()
        assert set(body) == {"error", "code"} and body["error"].endswith(".")
        assert f"({status})" in protocol.ERROR_CODES[body["code"]]  # documented for this status
        assert "Traceback" not in body["error"]


async def test_a_bad_request_stores_nothing(client):
    await create(client)
    await client.post("/queues/q/messages", data='{"content": 1', headers=JSON)
    assert (await (await client.get("/status")).json())["messages"] == 0


async def test_a_body_without_content_type_is_read_as_json(client):
    await create(client)
    response = await client.post(
        "/queues/q/messages", data=b'{"content": "plain"}', skip_auto_headers=["Content-Type"]
    )
    assert response.status == 201
    assert (await receive(client))[1]["content"] == "plain"


async def test_an_idempotency_key_header_that_is_not_utf8_is_refused(client):
    await create(client)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = b'{"content": 1}'
    writer.write(
        b"POST /queues/q/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: caf\xe9\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400") and b"Idempotency-Key" in reply


async def test_refused_sends_fail_alone_beside_ordinary_ones(client):
    await create(client)
    hostile = [
        '{"content": "x", "key": "\\ud800"}',
        '{"messages": [{"content": "x", "key": "\\udfff"}]}',
    ] * 10
    ordinary = [client.post("/queues/q/messages", json={"content": i}) for i in range(100)]
    refused = [client.post("/queues/q/messages", data=body, headers=JSON) for body in hostile]
    responses = await asyncio.gather(*ordinary[:50], *refused, *ordinary[50:])
    statuses = [r.status for r in responses]
    assert statuses[:50] + statuses[70:] == [201] * 100 and statuses[50:70] == [400] * 20
    _, body = await receive(client, count=1000)
    assert sorted(m["content"] for m in body["messages"]) == list(range(100))


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"name": "x", "max_attempts": "3", "dead_letter_queue": "q"}, 'not the string "3"'),
        ({"name": "x", "dedup_window": None}, "not null"),
        ({"name": "x", "dedup_window": [1]}, "not a list"),
        ({"name": ["q"]}, "a list"),
    ],
)
async def test_a_refused_value_says_what_arrived(client, body, said):
    await create(client)
    response = await client.post("/queues", json=body)
    assert response.status == 400 and said in (await response.json())["error"]


@pytest.mark.parametrize(
    "query",
    [
        {"count": "\u0663"},  # an Arabic-Indic 3: Python's int() takes it
        {"count": " 3"},
        {"count": "1_0"},
        {"count": "+3"},
        {"count": "3\n"},
        {"count": "3.0"},
        {"wait": "\uff10"},  # a fullwidth 0
        {"lease": "1_0"},
        {"lease": "30 "},
        {"lease": ".5e1"},
    ],
)
async def test_query_numbers_are_written_as_json_writes_them(client, query):
    """What the OpenAPI document calls an integer or a number, and nothing that merely converts
    to one (schemathesis' negative tests caught a count of ' 3' taken as 3)."""
    await create(client)
    await send(client, "kept")
    response = await client.get("/queues/q/messages", params=query)
    assert response.status == 400 and (await response.json())["code"] == "invalid_request"
    assert (await receive(client))[1]["content"] == "kept"


@pytest.mark.parametrize("path", ["/status", "/queues", "/queues/q", "/queues/nope", "/openapi.json"])
async def test_json_replies_end_with_a_newline(client, path):
    await create(client)
    body = await (await client.get(path)).read()
    assert body.endswith(b"\n") and json.loads(body)


async def test_status_says_which_daemon_this_is_and_what_it_serves(client, backend):
    body = await (await client.get("/status")).json()
    assert body["store"]["kind"] == backend
    if backend == "sqlite":
        assert body["store"]["location"] == body["data_dir"] and body["fsync"] == "always"
    else:
        assert body["store"]["location"].startswith("postgresql://") and body["fsync"] is None
        assert ":" not in body["store"]["location"].split("//")[1].split("@")[0]  # no password


async def test_refusals_for_a_while_are_warnings_not_errors(aiohttp_client, make_config, caplog):
    client = await aiohttp_client(create_app(make_config(max_waiters=1)))
    await create(client)
    waiting = asyncio.ensure_future(receive(client, wait=5))
    await until_waiting(client, 1)
    refused = await client.get("/queues/q/messages", params={"wait": "5"})
    assert refused.status == 503
    records = [r for r in caplog.records if r.name == "mqd.api"]
    assert records and all(r.levelname == "WARNING" for r in records)
    await send(client, "x")
    await waiting


async def test_an_idempotency_key_header_given_twice_is_refused_as_a_repeated_parameter_is(client):
    await create(client)
    response = await client.post(
        "/queues/q/messages",
        json={"content": 1},
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert response.status == 400 and "more than once" in (await response.json())["error"]
    assert (await receive(client))[0] == 204
