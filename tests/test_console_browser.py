"""The web console in a real browser (Chromium, driven by Playwright) against real mqd processes:
what an operator sees and does, with the mouse and with the keyboard alone, and what a page of
another site cannot do through the visitor's browser."""

from __future__ import annotations

import http.server
import json
import re
import threading

import pytest

from . import browsers, postgres
from .helpers import MqdProcess, free_port, mqctl

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # polls every 2 s; a busy machine may take a few

TOKEN = "console-browser-token"


@pytest.fixture(scope="module")
def browser():
    executable, why_not = browsers.chromium()
    if executable is None:
        pytest.skip(why_not)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(context):
    """A tab; a script error on the page fails the test."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, errors


@pytest.fixture(params=["sqlite", "postgresql"])
def daemon(request, mqd):
    """A real mqd on each store."""
    if request.param == "sqlite":
        yield mqd()
        return
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    process = mqd("--store", url)
    yield process
    process.stop()
    postgres.drop_schema(schema)


@pytest.fixture
def sqlite_daemon(mqd):
    return mqd()


def cli(daemon: MqdProcess, *args: str, token: str | None = None):
    result = mqctl(*args, env={"MQ_URL": daemon.url, **({"MQ_TOKEN": token} if token else {})})
    assert result.returncode in (0, 1), result.stderr
    return result


def depth(daemon: MqdProcess, queue: str, headers=None) -> dict:
    status, body, _ = daemon.call("GET", f"/queues/{queue}", headers=headers)
    assert status == 200, body
    return body


def row_of(page, queue: str):
    return page.locator("tbody tr", has=page.get_by_role("link", name=queue, exact=True))


def said(page):
    """What the page last said about an action (its status line in main)."""
    return page.locator("main [role=status]")


def fact(page, term: str):
    """The value the page shows beside ``term`` in its lists of facts."""
    term_xpath = f"//dl[contains(@class, 'facts')]/dt[normalize-space()='{term}']"
    return page.locator(f"xpath={term_xpath}/following-sibling::dd[1]")


def create(daemon: MqdProcess, name: str, **settings) -> None:
    status, body, _ = daemon.call("POST", "/queues", {"name": name, **settings})
    assert status == 201, body


def send(daemon: MqdProcess, queue: str, content, **fields) -> int:
    """Sends one message over HTTP; the reply's status (429: the queue is full and refuses it)."""
    status, body, _ = daemon.call("POST", f"/queues/{queue}/messages", {"content": content, **fields})
    assert status in (201, 429), body
    return status


# -- the overview ---------------------------------------------------------------------------------


def test_the_overview_lists_queues_and_follows_mqctl_send(page, daemon):
    cli(daemon, "create", "orders")
    cli(daemon, "create", "emails")
    page.goto(daemon.url + "/")
    assert page.url.endswith("/console/")
    ready = row_of(page, "orders").locator("td").nth(0)
    expect(ready).to_have_text("0")
    expect(row_of(page, "emails")).to_be_visible()
    for n in range(3):
        cli(daemon, "send", "orders", f"order {n}")
    expect(ready).to_have_text("3")
    incoming = row_of(page, "orders").locator("td").nth(5)
    page.wait_for_function(  # a rate appears (for one poll's interval)
        "cell => !['0', '–'].includes(cell.textContent)", arg=incoming.element_handle()
    )
    store_kind = daemon.call("GET", "/status")[1]["store"]["kind"]
    expect(page.locator("dl.facts")).to_contain_text(store_kind)
    expect(page.locator("dl.facts")).to_contain_text("Waiting receivers")


def test_the_overview_of_no_queue_says_how_to_make_one(page, sqlite_daemon):
    page.goto(sqlite_daemon.url + "/console/")
    expect(page.get_by_text("No queues yet")).to_be_visible()


def test_an_address_the_console_did_not_make_is_a_queue_that_does_not_exist(page, sqlite_daemon):
    page.goto(sqlite_daemon.url + "/console/#/queues/%E0%A4")
    expect(page.get_by_role("alert")).to_contain_text("does not exist")


def test_a_stopped_mqd_is_said_to_be_not_answering(page, sqlite_daemon):
    cli(sqlite_daemon, "create", "orders")
    page.goto(sqlite_daemon.url + "/console/")
    expect(row_of(page, "orders")).to_be_visible()
    sqlite_daemon.stop()
    expect(page.locator("#connection")).to_contain_text("mqd is not answering")


# -- a queue's page ---------------------------------------------------------------------------------


def send_from_the_page(page, content: str) -> None:
    page.get_by_label("Content").fill(content)
    page.get_by_role("button", name="Send").click()


def test_a_message_sent_from_the_page_is_received_by_mqctl(page, daemon):
    cli(daemon, "create", "orders")
    page.goto(daemon.url + "/console/#/queues/orders")
    send_from_the_page(page, '{"sku": 42, "price": 1.50}')
    expect(said(page)).to_have_text("Sent: message 1.")
    assert cli(daemon, "receive", "orders").stdout == '{"sku":42,"price":1.50}\n'
    page.get_by_label("text").check()
    send_from_the_page(page, "plain words, not JSON")
    expect(said(page)).to_have_text("Sent: message 2.")
    assert cli(daemon, "receive", "orders").stdout == "plain words, not JSON\n"


def test_text_that_is_not_json_is_not_sent_as_json(page, sqlite_daemon):
    cli(sqlite_daemon, "create", "orders")
    page.goto(sqlite_daemon.url + "/console/#/queues/orders")
    send_from_the_page(page, "{not json")
    expect(said(page)).to_contain_text("That is not JSON")
    assert depth(sqlite_daemon, "orders")["messages"] == 0


def test_peek_shows_the_next_messages_exactly_as_text_and_leaves_them(page, daemon):
    cli(daemon, "create", "orders")
    hostile = "<img src=x onerror=\"document.title='owned'\">"
    content = json.dumps({"html": hostile, "big": 12345678901234567890, "price": 1.50})
    cli(daemon, "send", "orders", "--json", content.replace("1.5}", "1.50}"))
    cli(daemon, "send", "orders", "second")
    page.goto(daemon.url + "/console/#/queues/orders")
    first = page.locator("ol.messages li").nth(0)
    expect(first.locator("pre")).to_contain_text('"big": 12345678901234567890')
    expect(first.locator("pre")).to_contain_text('"price": 1.50')
    expect(first.locator("pre")).to_contain_text(json.dumps(hostile))  # as text, escaped as JSON
    expect(first.locator(".meta")).to_contain_text("attempts 0")
    expect(page.locator("ol.messages li").nth(1).locator("pre")).to_have_text('"second"')
    assert page.locator("main img").count() == 0 and page.title() != "owned"
    assert depth(daemon, "orders")["ready"] == 2  # peeked, not taken


def test_purge_asks_first(page, daemon):
    cli(daemon, "create", "orders")
    for n in range(3):
        cli(daemon, "send", "orders", str(n))
    page.goto(daemon.url + "/console/#/queues/orders")
    page.get_by_role("button", name="Purge…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Purge orders?")
    expect(dialog).to_contain_text("3 messages")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert depth(daemon, "orders")["ready"] == 3
    page.get_by_role("button", name="Purge…").click()
    dialog.get_by_role("button", name="Purge", exact=True).click()
    expect(said(page)).to_have_text("Purged 3 messages.")
    assert depth(daemon, "orders")["messages"] == 0


def test_delete_asks_first_and_the_overview_says_it_is_gone(page, daemon):
    cli(daemon, "create", "orders")
    page.goto(daemon.url + "/console/#/queues/orders")
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_text("Queue orders deleted.")).to_be_visible()
    assert page.url.endswith("#/")
    assert daemon.call("GET", "/queues/orders")[0] == 404


def test_a_queue_deleted_elsewhere_is_said_to_be_gone(page, sqlite_daemon):
    cli(sqlite_daemon, "create", "orders")
    page.goto(sqlite_daemon.url + "/console/#/queues/orders")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    cli(sqlite_daemon, "delete", "orders")
    expect(page.get_by_role("alert")).to_have_text(re.compile("Queue orders does not exist"))
    expect(page.get_by_role("button", name="Send")).to_be_hidden()


def dead_letter_one(daemon: MqdProcess) -> None:
    """jobs gives up on a message after one delivery: deliver it, give it back, and it is dead."""
    cli(daemon, "create", "jobs.dlq")
    cli(daemon, "create", "jobs", "--max-attempts", "1", "--dead-letter-queue", "jobs.dlq")
    cli(daemon, "send", "jobs", "poison")
    status, leased, _ = daemon.call("GET", "/queues/jobs/messages?lease=30")
    assert status == 200, leased
    assert daemon.call("POST", f"/queues/jobs/messages/{leased['receipt']}/release", {})[0] == 204
    assert daemon.call("GET", "/queues/jobs/messages?lease=30")[0] == 204  # moved on delivery
    assert depth(daemon, "jobs.dlq")["ready"] == 1


def test_redrive_moves_dead_letters_home(page, daemon):
    dead_letter_one(daemon)
    page.goto(daemon.url + "/console/#/queues/jobs.dlq")
    expect(page.locator("dl.facts").nth(1)).to_contain_text("jobs")  # whose dead letters these are
    page.get_by_role("button", name="Redrive dead letters").click()
    expect(said(page)).to_have_text("Moved 1 dead letters: 1 to jobs.")
    assert depth(daemon, "jobs")["ready"] == 1 and depth(daemon, "jobs.dlq")["messages"] == 0
    assert cli(daemon, "receive", "jobs").stdout == "poison\n"


# -- a queue's settings, limits and losses ------------------------------------------------------------


def test_a_queues_page_shows_its_settings(page, daemon):
    create(daemon, "orders.dlq")
    create(
        daemon,
        "orders",
        max_attempts=3,
        dead_letter_queue="orders.dlq",
        dedup_window=90,
        message_ttl=3600,
        max_messages=5,
        max_bytes=1000,
        overflow="drop_oldest",
        max_in_flight=2,
        max_rate=100,
    )
    send(daemon, "orders", "abc")  # 5 bytes of content: "abc" as JSON
    page.goto(daemon.url + "/console/#/queues/orders")
    expect(fact(page, "Max messages")).to_have_text("5")
    expect(fact(page, "Overflow")).to_have_text("drop_oldest: the oldest make room")
    expect(fact(page, "Max rate")).to_have_text("100 per second")
    expect(fact(page, "Max bytes")).to_have_text("1,000 bytes")
    expect(fact(page, "Max in flight")).to_have_text("2 leased at once")
    expect(fact(page, "Message TTL")).to_have_text("1 h")
    expect(fact(page, "Idempotency window")).to_have_text("90 s")
    expect(fact(page, "Max attempts")).to_have_text("3")
    expect(fact(page, "Dead-letter queue")).to_have_text("orders.dlq")
    expect(fact(page, "Messages")).to_have_text("1 of 5")  # held, against the limit
    expect(fact(page, "Bytes")).to_have_text("5 of 1,000")
    page.goto(daemon.url + "/console/#/queues/orders.dlq")  # a queue without limits says so
    expect(fact(page, "Dead letters of")).to_have_text("orders")
    for term in ("Max messages", "Max bytes", "Max in flight", "Max rate"):
        expect(fact(page, term)).to_have_text("no limit")
    expect(fact(page, "Overflow")).to_have_text("reject: sends are refused")
    expect(fact(page, "Message TTL")).to_have_text("none: messages never expire")
    expect(fact(page, "Idempotency window")).to_have_text("5 min")
    expect(fact(page, "Messages")).to_have_text("0")


def test_expired_dropped_and_refused_messages_are_counted(page, daemon):
    create(daemon, "short", message_ttl=0.2)  # mqd sweeps expired messages away every second
    create(daemon, "small", max_messages=1, overflow="drop_oldest")
    create(daemon, "full", max_messages=1)  # overflow reject
    for n in range(2):
        send(daemon, "short", n)
    for n in range(3):
        send(daemon, "small", n)
    assert [send(daemon, "full", n) for n in range(2)] == [201, 429]
    page.goto(daemon.url + "/console/#/queues/short")
    expect(fact(page, "Since mqd started")).to_have_text("2 expired · 0 dropped · 0 refused")
    expect(fact(page, "Ready")).to_have_text("0")
    page.goto(daemon.url + "/console/#/queues/small")
    expect(fact(page, "Since mqd started")).to_have_text("0 expired · 2 dropped · 0 refused")
    expect(fact(page, "Messages")).to_have_text("1 of 1")
    expect(page.locator("ol.messages pre")).to_have_text("2")  # the newest stayed
    page.goto(daemon.url + "/console/#/queues/full")
    expect(fact(page, "Since mqd started")).to_have_text("0 expired · 0 dropped · 1 refused")
    counters = {name: depth(daemon, name)["counters"] for name in ("short", "small", "full")}
    assert [(c["expired"], c["dropped"], c["refused"]) for c in counters.values()] == [
        (2, 0, 0),
        (0, 2, 0),
        (0, 0, 1),
    ]


def open_limits(page):
    page.locator("summary", has_text="Change the limits").click()
    expect(page.get_by_role("button", name="Save limits")).to_be_visible()


def test_limits_are_changed_from_the_page_and_only_those_edited(page, daemon):
    create(daemon, "orders", max_messages=5, max_rate=100, max_in_flight=4, message_ttl=60)
    page.goto(daemon.url + "/console/#/queues/orders")
    expect(page.get_by_role("button", name="Save limits")).to_be_hidden()  # folded away at first
    open_limits(page)
    expect(page.get_by_label("Max messages", exact=True)).to_have_value("5")
    expect(page.get_by_label("Max rate (per second)")).to_have_value("100")
    expect(page.get_by_label("Overflow")).to_have_value("reject")
    # Changed elsewhere while the page is open: the field not edited follows, and is not put back.
    assert daemon.call("PATCH", "/queues/orders", {"max_in_flight": 7})[0] == 200
    expect(page.get_by_label("Max in flight")).to_have_value("7")
    page.get_by_label("Max messages", exact=True).fill("")  # empty: no limit
    page.get_by_label("Max rate (per second)").fill("2.5")
    page.get_by_label("Overflow").select_option("drop_oldest")
    page.get_by_role("button", name="Save limits").click()
    changed = "Changed: max_messages = no limit, max_rate = 2.5, overflow = drop_oldest."
    expect(said(page)).to_have_text(changed)
    queue = depth(daemon, "orders")
    assert (queue["max_messages"], queue["max_rate"], queue["overflow"]) == (None, 2.5, "drop_oldest")
    assert (queue["max_in_flight"], queue["message_ttl"]) == (7, 60)
    expect(fact(page, "Max messages")).to_have_text("no limit")
    expect(fact(page, "Max rate")).to_have_text("2.5 per second")
    expect(fact(page, "Overflow")).to_have_text("drop_oldest: the oldest make room")
    page.get_by_role("button", name="Save limits").click()
    expect(said(page)).to_have_text("Nothing to change: edit a limit first.")
    page.get_by_label("Max in flight").fill("many")
    page.get_by_role("button", name="Save limits").click()
    expect(said(page)).to_have_text("Max in flight: many is not a number (empty is no limit).")
    page.get_by_label("Max in flight").fill("0")  # mqd judges the range, and says why not
    page.get_by_role("button", name="Save limits").click()
    expect(said(page)).to_contain_text("Not changed: ")
    expect(said(page)).to_contain_text("max_in_flight")
    assert depth(daemon, "orders")["max_in_flight"] == 7


def test_peeked_messages_show_their_priority_and_group_as_text(page, sqlite_daemon):
    """What the page makes of peek's optional fields (a reply of mqd's shape, given by the test)."""
    create(sqlite_daemon, "orders")
    hostile = "<b>cust-1</b>"
    messages = [
        {"id": 2, "content": "urgent", "attempts": 0, "enqueued_at": 1e9, "priority": 7, "group": hostile},
        {"id": 1, "content": "plain", "attempts": 1, "enqueued_at": 1e9},
    ]
    page.route("**/queues/orders/peek*", lambda route: route.fulfill(json={"messages": messages}))
    page.goto(sqlite_daemon.url + "/console/#/queues/orders")
    meta = page.locator("ol.messages .meta")
    expect(meta.nth(0)).to_contain_text(f"#2 · attempts 0 · priority 7 · group {hostile} · ")
    expect(meta.nth(1)).to_contain_text("#1 · attempts 1 · ")
    expect(meta.nth(1)).not_to_contain_text("priority")
    expect(meta.nth(1)).not_to_contain_text("group")
    assert page.locator("main b").count() == 0


def test_peek_shows_the_priority_and_group_mqd_gives(page, daemon):
    create(daemon, "orders")
    send(daemon, "orders", "plain")
    send(daemon, "orders", "urgent", priority=7, group="cust-1")
    page.goto(daemon.url + "/console/#/queues/orders")
    first = page.locator("ol.messages li").nth(0)
    expect(first.locator("pre")).to_have_text('"urgent"')  # higher priority first
    expect(first.locator(".meta")).to_contain_text("priority 7 · group cust-1", timeout=3000)


# -- safe by default --------------------------------------------------------------------------------


def test_a_token_protected_mqd_works_once_the_token_is_typed(page, mqd):
    daemon = mqd(env={"MQD_TOKEN": TOKEN})
    cli(daemon, "create", "orders", token=TOKEN)
    page.goto(daemon.url + "/console/")
    expect(page.get_by_role("heading", name="This mqd needs an access token")).to_be_visible()
    expect(page.get_by_role("link", name="orders")).to_have_count(0)
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Open the console").click()
    expect(page.get_by_role("alert")).to_have_text("The access token is wrong.")
    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Open the console").click()
    expect(row_of(page, "orders")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('mq.token')") == TOKEN
    assert page.evaluate("document.cookie") == "" and TOKEN not in page.url
    # The page's requests carry it; the same request without it is refused.
    unauthorized = page.evaluate("fetch('/queues').then(response => response.status)")
    assert unauthorized == 401
    page.get_by_role("button", name="Forget the token").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('mq.token')") is None


EVIL_PAGE = """<!doctype html><title>a page of another site</title>
<img src="{mqd}/queues/orders/messages">
<script>
const mqd = "{mqd}";
const read = (request) => request.then(r => r.text()).then(() => "read", () => "refused");
const send = (request) => request.then(() => "sent", () => "refused");
const messages = mqd + "/queues/orders/messages";
const attempts = [
  read(fetch(messages + "?lease=60")),
  read(fetch(mqd + "/queues")),
  send(fetch(messages, {{mode: "no-cors"}})),
  send(fetch(messages, {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
    body: '{{"content": "evil"}}'}})),
  send(fetch(messages, {{method: "DELETE", mode: "no-cors"}})),
];
Promise.all(attempts).then(results => {{ document.title = "done " + results.join(" "); }});
</script>"""


@pytest.fixture
def evil_site():
    """A web server of another origin, serving one page that goes for mqd."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages["page"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("evil_host", ["localhost", "127.0.0.1"])  # another site; another port
def test_a_page_of_another_origin_can_neither_read_nor_consume(
    page, context, sqlite_daemon, evil_site, evil_host
):
    cli(sqlite_daemon, "create", "orders")
    cli(sqlite_daemon, "send", "orders", "first")
    cli(sqlite_daemon, "send", "orders", "second")
    console = context.new_page()  # the operator has the console open in another tab
    console.goto(sqlite_daemon.url + "/console/")
    expect(row_of(console, "orders")).to_be_visible()
    pages, port = evil_site
    pages["page"] = EVIL_PAGE.format(mqd=sqlite_daemon.url)
    page.goto(f"http://{evil_host}:{port}/")
    expect(page).to_have_title(re.compile("^done "))
    results = page.title().split()[1:]
    assert results[:2] == ["refused", "refused"], results  # nothing could be read
    queue = depth(sqlite_daemon, "orders")
    assert (queue["ready"], queue["leased"], queue["counters"]["received"]) == (2, 0, 0)
    assert cli(sqlite_daemon, "receive", "orders", "--count", "3").stdout == "first\nsecond\n"


def test_the_console_cannot_be_framed_by_another_page(page, sqlite_daemon, evil_site):
    """The guard refuses the frame's request (and the page's frame-ancestors would refuse it too)."""
    pages, port = evil_site
    pages["page"] = f'<iframe src="{sqlite_daemon.url}/console/"></iframe>'
    page.goto(f"http://localhost:{port}/", wait_until="load")  # "load" waits for the frame
    assert len(page.frames) == 2 and page.frames[1].locator("#main").count() == 0


def test_a_read_only_console_offers_no_change_and_mqd_refuses_one(page, mqd):
    daemon = mqd("--console", "read-only")
    cli(daemon, "create", "orders")
    cli(daemon, "send", "orders", "kept")
    page.goto(daemon.url + "/console/#/queues/orders")
    expect(page.get_by_text("This console is read-only")).to_be_visible()
    expect(page.locator("ol.messages pre")).to_have_text('"kept"')
    expect(fact(page, "Max messages")).to_have_text("no limit")  # settings are shown, not changed
    for action in ("Send", "Purge…", "Delete…", "Save limits"):
        expect(page.get_by_role("button", name=action)).to_have_count(0)
    expect(page.get_by_text("Change the limits")).to_have_count(0)
    status = page.evaluate(
        """fetch('/queues/orders/messages', {method: 'DELETE'}).then(response => response.status)"""
    )
    assert status == 403 and depth(daemon, "orders")["ready"] == 1
    status = page.evaluate(
        """fetch('/queues/orders', {method: 'PATCH', headers: {'Content-Type': 'application/json'},
        body: '{"max_messages": 1}'}).then(response => response.status)"""
    )
    assert status == 403 and depth(daemon, "orders")["max_messages"] is None


# -- accessible and plain -------------------------------------------------------------------------------


def focused(page) -> str:
    return page.evaluate(
        """() => { const e = document.activeElement;
        return e.id ? '#' + e.id : (e.textContent || e.value || e.tagName).trim(); }"""
    )


def tab_to(page, target: str, limit: int = 40) -> None:
    """Press Tab until ``target`` (a name, or #id) has the focus: reachable by keyboard alone."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(focused(page))
        if seen[-1] == target:
            return
    raise AssertionError(f"Tab never reached {target!r}: {seen}")


def test_every_action_is_reachable_and_works_with_the_keyboard_alone(page, sqlite_daemon):
    dead_letter_one(sqlite_daemon)
    page.goto(sqlite_daemon.url + "/console/")
    expect(row_of(page, "jobs")).to_be_visible()
    tab_to(page, "jobs.dlq")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="jobs.dlq")).to_be_visible()
    tab_to(page, "Redrive dead letters")
    page.keyboard.press("Enter")
    expect(said(page)).to_have_text("Moved 1 dead letters: 1 to jobs.")
    tab_to(page, "#send-content")
    page.keyboard.type('{"by": "keyboard"}')
    tab_to(page, "Send")
    page.keyboard.press("Enter")
    expect(said(page)).to_have_text("Sent: message 2.")
    tab_to(page, "Change the limits")
    page.keyboard.press("Enter")
    tab_to(page, "#limit-max_messages")
    page.keyboard.type("3")
    tab_to(page, "Save limits")
    page.keyboard.press("Enter")
    expect(said(page)).to_have_text("Changed: max_messages = 3.")
    assert depth(sqlite_daemon, "jobs.dlq")["max_messages"] == 3
    page.keyboard.press("Shift+Tab")
    tab_to(page, "Purge…")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    assert focused(page) == "Cancel"  # the safe choice has the focus
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert depth(sqlite_daemon, "jobs.dlq")["ready"] == 1
    tab_to(page, "Purge…")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert focused(page) == "#confirm-button"
    page.keyboard.press("Enter")
    expect(said(page)).to_have_text("Purged 1 messages.")
    tab_to(page, "Delete…")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    tab_to(page, "← Every queue")
    page.keyboard.press("Enter")
    expect(row_of(page, "jobs")).to_be_visible()


def test_at_200_percent_zoom_nothing_needs_a_wide_screen(browser, sqlite_daemon):
    long_name = "a-rather-long-queue-name-for-billing-events"
    for n in range(12):
        cli(sqlite_daemon, "create", f"{long_name}-{n}")
    cli(sqlite_daemon, "send", f"{long_name}-0", "--json", json.dumps({"k": "v" * 300}))
    context = browser.new_context(viewport={"width": 640, "height": 450})  # 1280 × 900 at 200 %
    page = context.new_page()
    try:
        for path in ("/console/", f"/console/#/queues/{long_name}-0"):
            page.goto(sqlite_daemon.url + path)
            expect(page.locator("dl.facts").first).to_be_visible()
            expect(page.locator("table, ol.messages").first).to_be_visible()
            if "#/queues/" in path:
                open_limits(page)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow} px wider than the window"
    finally:
        context.close()
