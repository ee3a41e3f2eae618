"""Moving queues from one mqd to another with mqctl export and mqctl import: every state kept,
nothing stored twice, SQLite to PostgreSQL and back, and a million messages in a hundred queues
compared one by one."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from mq import Client

from . import postgres
from .helpers import MqdProcess, mqctl

LONG = 3600.0
MOVE_MESSAGES = int(os.environ.get("MQ_MOVE_MESSAGES", "1000000"))
MOVE_QUEUES = 100


@pytest.fixture
def postgres_mqd(mqd, tmp_path):
    """A factory of mqd nodes on PostgreSQL schemas of their own, dropped afterwards."""
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    schemas = []

    def start() -> MqdProcess:
        url, schema = postgres.new_schema_url()
        schemas.append(schema)
        return mqd("--store", url, data_dir=tmp_path / f"node-{len(schemas)}")

    yield start
    for schema in schemas:
        postgres.drop_schema(schema)


def cli(daemon: MqdProcess, *args: str) -> subprocess.CompletedProcess:
    return mqctl(*args, env={"MQ_URL": daemon.url}, timeout=1200)


def everything(daemon: MqdProcess) -> dict[str, list[tuple]]:
    """Every message of every queue as the export route gives it, by queue, in order, with what
    a move must keep (not the ids, which are new)."""
    by_queue: dict[str, list[tuple]] = {}
    with Client(daemon.url, timeout=120) as client:
        after = 0
        while after is not None:
            page, after = client.export(after, 1000)
            for m in page:
                entry = (
                    json.dumps(m["content"]),
                    m["attempts"],
                    m["enqueued_at"],
                    m["visible_at"],
                    m["dead_letter_source"],
                )
                by_queue.setdefault(m["queue"], []).append(entry)
    return by_queue


def settings_of(daemon: MqdProcess) -> dict[str, tuple]:
    with Client(daemon.url) as client:
        return {
            q["name"]: (q["max_attempts"], q["dead_letter_queue"], q["dedup_window"])
            for q in client.list_queues()
        }


def build_every_state(daemon: MqdProcess) -> None:
    with Client(daemon.url) as client:
        client.create_queue("jobs.dlq")
        client.create_queue("jobs", max_attempts=1, dead_letter_queue="jobs.dlq", dedup_window=LONG)
        client.create_queue("orders")
        client.send("jobs", "poison")
        client.release("jobs", client.receive("jobs", lease=30)[0].receipt)
        assert client.receive("jobs", lease=30) == []  # dead-lettered on its second delivery
        client.send("jobs", "leased")
        client.receive("jobs", lease=LONG)
        client.send("jobs", "later", delay=LONG)
        client.send_many("orders", [{"n": n, "price": 1.50, "big": 12345678901234567890} for n in range(300)])


@pytest.mark.parametrize("direction", ["sqlite to postgresql", "postgresql to sqlite"])
def test_a_move_keeps_every_message_in_every_state(mqd, postgres_mqd, tmp_path, direction):
    source, target = (mqd(), postgres_mqd()) if direction.startswith("sqlite") else (postgres_mqd(), mqd())
    build_every_state(source)
    exported = cli(source, "export", "-o", str(tmp_path / "move.jsonl"))
    assert exported.returncode == 0 and "exported 303 messages of 3 queues" in exported.stderr
    imported = cli(target, "import", str(tmp_path / "move.jsonl"))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "imported 303 messages into 3 queues\n"
    assert everything(target) == everything(source)
    assert settings_of(target) == settings_of(source)
    with Client(target.url) as client:
        jobs = client.queue("jobs")
        assert (jobs["leased"], jobs["delayed"], jobs["dead_lettered"]) == (0, 2, 1)  # a lease is a delay now
        assert client.redrive("jobs.dlq")["queues"] == {"jobs": 1}  # the dead letter knows its home
        assert [m.content for m in client.receive("orders", count=2)] == [
            {"n": 0, "price": 1.50, "big": 12345678901234567890},
            {"n": 1, "price": 1.50, "big": 12345678901234567890},
        ]


def test_importing_again_stores_nothing_twice_and_a_cut_file_resumes(mqd, tmp_path):
    source, target = mqd(data_dir=tmp_path / "a"), mqd(data_dir=tmp_path / "b")
    build_every_state(source)
    whole = tmp_path / "move.jsonl"
    assert cli(source, "export", "-o", str(whole)).returncode == 0
    lines = whole.read_text().splitlines(keepends=True)
    (tmp_path / "cut.jsonl").write_text("".join(lines[: len(lines) // 2]))
    cut = cli(target, "import", str(tmp_path / "cut.jsonl"))
    assert cut.returncode == 6 and "ends early" in cut.stderr
    first = cli(target, "import", str(whole))
    assert first.returncode == 0 and "were there already" in first.stdout
    again = cli(target, "import", str(whole))
    assert again.stdout == "imported 0 messages into 3 queues (303 were there already)\n"
    assert everything(target) == everything(source)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json\n",
        '{"queue": {"name": "q"}}\n',
        '{"mq_export": 1}\n',
        '{"mq_export": 1, "source": "s"}\n[1]\n',
        '{"mq_export": 1, "source": "s"}\n{"queue": {"name": "q"}}\n',
        '{"mq_export": 1, "source": "s"}\n{"what": 1}\n',
    ],
)
def test_a_file_that_is_no_export_is_refused_in_one_line(mqd, tmp_path, text):
    daemon = mqd()
    (tmp_path / "x.jsonl").write_text(text)
    refused = cli(daemon, "import", str(tmp_path / "x.jsonl"))
    assert refused.returncode == 6 and len(refused.stderr.splitlines()) == 1 and "export" in refused.stderr


def test_a_million_messages_in_a_hundred_queues_move_to_postgresql(
    mqd, postgres_mqd, tmp_path, record_property
):
    """The growth path: an embedded store full of messages carried over to PostgreSQL, every
    message compared. The rates go into the test's properties (and docs/backups.md)."""
    source, target = mqd(), postgres_mqd()
    per_queue = MOVE_MESSAGES // MOVE_QUEUES
    with Client(source.url, timeout=120) as client:
        for q in range(MOVE_QUEUES):
            client.create_queue(f"queue-{q:03}")
        for start in range(0, per_queue, 1000):  # interleaved, as traffic would leave them
            for q in range(MOVE_QUEUES):
                size = min(1000, per_queue - start)
                client.send_many(f"queue-{q:03}", [{"q": q, "n": start + i} for i in range(size)])
    started = time.monotonic()
    exported = cli(source, "export", "-o", str(tmp_path / "move.jsonl"))
    export_seconds = time.monotonic() - started
    assert exported.returncode == 0, exported.stderr
    started = time.monotonic()
    imported = cli(target, "import", str(tmp_path / "move.jsonl"))
    import_seconds = time.monotonic() - started
    assert imported.stdout == f"imported {MOVE_MESSAGES} messages into {MOVE_QUEUES} queues\n", (
        imported.stderr
    )
    assert everything(target) == everything(source)
    record_property("export_messages_per_second", round(MOVE_MESSAGES / export_seconds))
    record_property("import_messages_per_second", round(MOVE_MESSAGES / import_seconds))
    print(f"moved {MOVE_MESSAGES}: export {export_seconds:.1f} s, import {import_seconds:.1f} s")


def test_any_content_moves_whatever_its_characters_in_requests_mqd_accepts(mqd, tmp_path):
    """Text of three and four UTF-8 bytes a character (batches are measured in bytes, under
    mqd's body limit), and a lone surrogate's escape, which JSON allows and mqd keeps."""
    source, target = mqd(data_dir=tmp_path / "a"), mqd(data_dir=tmp_path / "b")
    with Client(source.url) as client:
        client.create_queue("texts")
        for _ in range(8):
            client.send_many("texts", ["日本語のテキスト🎉" * 150] * 50)
        client.send("texts", "汉" * 200_000)  # 600 KB of UTF-8: 1.2 MB if it travelled escaped
        client.send("texts", json_text='"\\ud800 alone"')
    assert cli(source, "export", "-o", str(tmp_path / "move.jsonl")).returncode == 0
    imported = cli(target, "import", str(tmp_path / "move.jsonl"))
    assert imported.stdout == "imported 402 messages into 1 queue\n", imported.stderr
    assert everything(target) == everything(source)


def test_a_queue_exported_alone_takes_its_dead_letter_queues_with_it(mqd, tmp_path):
    source, target = mqd(data_dir=tmp_path / "a"), mqd(data_dir=tmp_path / "b")
    build_every_state(source)
    exported = cli(source, "export", "jobs", "-o", str(tmp_path / "jobs.jsonl"))
    assert "of 2 queues" in exported.stderr
    imported = cli(target, "import", str(tmp_path / "jobs.jsonl"))
    assert imported.returncode == 0, imported.stderr
    assert set(settings_of(target)) == {"jobs", "jobs.dlq"}
    assert everything(target) == {name: kept for name, kept in everything(source).items() if name != "orders"}
