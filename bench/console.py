"""The web console's figures: what the page weighs, and how soon an overview of 100 queues is on
screen (first paint, and the table drawn with every queue), in Debian's Chromium; and, with
--screenshots DIR, the overview and a queue's page as the README shows them.

    python -m bench.console [--queues 100] [--runs 5] [--screenshots docs/images]

Needs Playwright (pip install -e '.[bench]') and Chromium (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from mq import Client

from . import servers

TABLE_DRAWN = "n => document.querySelectorAll('tbody tr').length === n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="page loads measured (each in a new tab)")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="write console-*.png here")
    options = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("bench.console: no Chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with (
        servers.temporary_directory("console") as directory,
        servers.mqd(data_dir=directory) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            if options.screenshots:
                screenshots(browser, server.url, options.screenshots)
            fill(server.url, options.queues)
            print(json.dumps(measure(browser, server.url, options.queues, options.runs), indent=2))
        finally:
            browser.close()


def fill(url: str, queues: int) -> None:
    with Client(url) as client:
        for n in range(queues):
            client.create_queue(f"queue-{n:03}")
            if n % 7:
                client.send_many(f"queue-{n:03}", [{"n": m} for m in range(n % 7)])


def measure(browser, url: str, queues: int, runs: int) -> dict:
    paints, drawn, weights = [], [], []
    for _ in range(runs):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/console/")
        page.wait_for_function(TABLE_DRAWN, arg=queues)
        drawn.append(page.evaluate("performance.now()"))
        paints.append(
            page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
        )
        weights.append(page.evaluate(_WEIGHT))
        page.close()
    return {
        "queues": queues,
        "runs": runs,
        "page_bytes": weights[0]["page"],
        "first_api_replies_bytes": weights[0]["api"],
        "first_contentful_paint_ms": _spread(paints),
        "table_of_every_queue_drawn_ms": _spread(drawn),
    }


# The files of the page (navigation and resources), and the API replies it read, as transferred.
_WEIGHT = """() => {
  const entries = ['navigation', 'resource'].flatMap((type) => performance.getEntriesByType(type));
  const api = (entry) => !new URL(entry.name).pathname.startsWith('/console/');
  const sum = (list) => list.reduce((total, entry) => total + entry.encodedBodySize, 0);
  return {page: sum(entries.filter((entry) => !api(entry))), api: sum(entries.filter(api))};
}"""


def _spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def screenshots(browser, url: str, directory: Path) -> None:
    """A small shop's queues with traffic for half a minute, so the chart has lines to show."""
    directory.mkdir(parents=True, exist_ok=True)
    with Client(url) as client:
        client.create_queue("orders.dlq")
        client.create_queue("orders", max_attempts=3, dead_letter_queue="orders.dlq")
        client.create_queue("emails")
        client.create_queue("thumbnails")
        client.send("orders.dlq", {"order": 1041, "sku": "KB-87", "qty": 1, "error": "card declined"})
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(url, stop), daemon=True)
    page = browser.new_page(viewport={"width": 1280, "height": 700})
    page.goto(url + "/console/")
    traffic.start()
    page.wait_for_timeout(30_000)
    page.screenshot(path=str(directory / "console-overview.png"))
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(url + "/console/#/queues/emails")
    page.wait_for_timeout(2_500)
    page.screenshot(path=str(directory / "console-queue.png"))
    stop.set()
    traffic.join()
    page.close()
    with Client(url) as client:
        for queue in ("orders", "emails", "thumbnails", "orders.dlq"):
            client.delete_queue(queue)


def _traffic(url: str, stop: threading.Event) -> None:
    with Client(url) as client:
        tick = 0
        while not stop.is_set():
            tick += 1
            client.send("orders", {"order": 1000 + tick, "sku": f"SKU-{tick % 17}", "qty": 1 + tick % 3})
            client.send_many(
                "emails", [{"to": f"user{tick}@example.com", "template": "receipt"}] * (1 + tick % 4)
            )
            if tick % 3:
                for message in client.receive("emails", count=3, lease=30):
                    message.ack()
            if tick > 25:
                client.receive("orders", count=2)
            client.send("thumbnails", {"image": f"{tick}.jpg", "sizes": [64, 256]})
            time.sleep(0.2)


if __name__ == "__main__":
    main()
