"""The web console as mqd serves it: its files, their headers, where browsers are sent, and what
the guard lets a browser do. What the page does in a browser is tests/test_console_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from mqd import console, contract
from mqd.app import create_app

TOKEN = "console-test-token"
BROWSER = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}


@pytest.fixture
def app_with(aiohttp_client, make_config):
    async def start(**settings) -> TestClient:
        return await aiohttp_client(create_app(make_config(**settings)))

    return start


@pytest.mark.parametrize("path", ["/console/", "/console/console.js", "/console/console.css"])
async def test_the_console_is_served_with_a_strict_content_security_policy(app_with, path):
    client = await app_with()
    response = await client.get(path)
    assert response.status == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere(app_with):
    client = await app_with()
    page = await (await client.get("/console/")).text()
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert "<style" not in page and " style=" not in page
    assert re.search(r"<[^>]+\son[a-z]+=", page) is None  # no inline event handlers
    assert re.search(r"""(src|href)=["']?(https?:)?//""", page) is None
    assert 'content="on"' in page  # the page is told the console's mode


async def test_the_files_are_revalidated_by_etag(app_with):
    client = await app_with()
    first = await client.get("/console/console.js")
    again = await client.get("/console/console.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304 and first.headers["Cache-Control"] == "no-cache"


async def test_the_console_weighs_under_200_kb(app_with):
    client = await app_with()
    sizes = [len(await (await client.get("/console/" + name)).read()) for name in console.FILES]
    assert sum(sizes) < 200 * 1024


async def test_browsers_asking_for_slash_are_sent_to_the_console(app_with):
    client = await app_with()
    response = await client.get("/", headers={"Accept": "text/html,*/*"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == console.PATH
    response = await client.get("/console", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == console.PATH


async def test_api_clients_asking_for_slash_still_get_a_json_404(app_with):
    client = await app_with()
    response = await client.get("/")
    assert response.status == 404
    assert (await response.json())["code"] == "route_not_found"


async def test_an_unknown_console_file_is_a_json_404(app_with):
    client = await app_with()
    response = await client.get("/console/secrets.txt")
    assert response.status == 404 and "console" in (await response.json())["error"]


async def test_the_page_needs_no_token_but_every_api_call_does(app_with):
    client = await app_with(token=TOKEN)
    assert (await client.get("/console/")).status == 200
    assert (await client.get("/console/console.js")).status == 200
    assert (await client.get("/queues", headers=BROWSER)).status == 401
    authorized = {**BROWSER, "Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/queues", headers=authorized)).status == 200


async def test_the_console_files_are_still_guarded_against_other_sites(app_with):
    client = await app_with()
    response = await client.get("/console/", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403


@pytest.mark.parametrize("path", ["/", "/console/", "/console/console.js"])
async def test_with_the_console_off_there_is_none(app_with, path):
    client = await app_with(console="off")
    response = await client.get(path, headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status == 404 and (await response.json())["code"] == "route_not_found"


async def test_a_read_only_console_is_told_so(app_with):
    client = await app_with(console="read-only")
    assert 'content="read-only"' in await (await client.get("/console/")).text()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/queues", {"name": "other"}),
        ("POST", "/queues/q/messages", {"content": 1}),
        ("GET", "/queues/q/messages", None),
        ("DELETE", "/queues/q/messages", None),
        ("DELETE", "/queues/q", None),
        ("POST", "/queues/q/redrive", {}),
        ("PATCH", "/queues/q", {"max_messages": 1}),
        ("GET", "/stream", None),
    ],
)
async def test_a_read_only_console_lets_no_browser_change_anything(app_with, method, path, body):
    client = await app_with(console="read-only")
    assert (await client.post("/queues", json={"name": "q"})).status == 201  # not a browser: allowed
    assert (await client.post("/queues/q/messages", json={"content": "kept"})).status == 201
    response = await client.request(method, path, json=body, headers=BROWSER)
    assert response.status == 403 and "read-only" in (await response.json())["error"]
    assert (await (await client.get("/queues/q")).json())["ready"] == 1


@pytest.mark.parametrize("path", ["/status", "/queues", "/queues/q", "/queues/q/peek", "/metrics"])
async def test_a_read_only_console_may_look(app_with, path):
    client = await app_with(console="read-only")
    await client.post("/queues", json={"name": "q"})
    assert (await client.get(path, headers=BROWSER)).status in (200, 204)


async def test_a_read_only_console_cannot_change_a_queues_limits(app_with):
    client = await app_with(console="read-only")
    await client.post("/queues", json={"name": "q", "max_messages": 5})
    response = await client.patch("/queues/q", json={"max_messages": None}, headers=BROWSER)
    assert response.status == 403
    assert (await (await client.get("/queues/q")).json())["max_messages"] == 5


async def test_the_console_may_change_a_queues_limits(app_with):
    """What the page's limits form sends: only the edited settings, null clearing a limit."""
    client = await app_with()
    await client.post("/queues", json={"name": "q", "max_messages": 5, "max_rate": 100})
    response = await client.patch(
        "/queues/q", json={"max_messages": None, "overflow": "drop_oldest"}, headers=BROWSER
    )
    assert response.status == 200
    queue = await response.json()
    assert (queue["max_messages"], queue["overflow"], queue["max_rate"]) == (None, "drop_oldest", 100)


def console_script() -> str:
    return (Path(console.__file__).parent / "console.js").read_text()


async def test_every_queue_field_the_console_shows_is_in_the_api(app_with):
    """The page reads queue.FIELD and queue.counters.FIELD: each is in GET /queues' reply."""
    client = await app_with()
    await client.post("/queues", json={"name": "q"})
    queue = (await (await client.get("/queues")).json())["queues"][0]
    script = console_script()
    fields = set(re.findall(r"\bqueue\.([a-z_]+)\b", script)) - {"counters"}
    counters = set(re.findall(r"\bqueue\.counters\.([a-z_]+)\b", script))
    assert {"message_ttl", "max_messages", "max_bytes", "overflow", "max_in_flight", "max_rate"} <= fields
    assert {"expired", "dropped", "refused"} <= counters
    assert fields <= set(queue) and counters <= set(queue["counters"])


def test_the_limits_form_changes_settings_a_patch_may_clear():
    """An empty field is sent as null: every limit of the form must be one null clears."""
    limits = re.search(r"const LIMITS = \[(.*?)\];", console_script(), re.S).group(1)
    fields = set(re.findall(r'field: "([a-z_]+)"', limits))
    assert fields == {"message_ttl", "max_messages", "max_bytes", "max_in_flight", "max_rate"}
    assert fields <= contract.CLEARABLE and "overflow" in contract.SETTINGS_FIELDS


def test_every_route_either_reads_or_writes():
    """READING is what a read-only console may use: a new route must be put on one side."""
    operations = {route.operation for route in contract.ROUTES}
    writing = contract.WRITING | {"openStream"}
    assert contract.READING | writing == operations and not contract.READING & writing


async def test_status_counts_the_stores_commits(client):
    before = (await (await client.get("/status")).json())["commits"]
    await client.post("/queues", json={"name": "q"})
    await client.post("/queues/q/messages", json={"messages": [{"content": n} for n in range(5)]})
    after = (await (await client.get("/status")).json())["commits"]
    assert after["count"] > before["count"]
    assert after["operations"] >= before["operations"] + 2 and after["seconds"] > before["seconds"]
