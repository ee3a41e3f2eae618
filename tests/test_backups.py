"""Backups while mqd serves, and restores mqd accepts: through the real mqd, mqctl and mqd --restore.

A restore is checked the way an operator would rely on it: every message acknowledged before the
backup is there, in order, nothing after it is invented, and leases, delays, dead letters,
idempotency keys and settings come back as they were."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from mq import Client, Conflict

from . import postgres
from .helpers import MqdProcess, mqctl

LONG = 3600.0


def mqd_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mqd", *args], capture_output=True, text=True, timeout=60)


def cli(daemon: MqdProcess, *args: str, env=None) -> subprocess.CompletedProcess:
    return mqctl(*args, env={"MQ_URL": daemon.url, **(env or {})})


class Producer(threading.Thread):
    """Sends 0, 1, 2, ... to ``orders`` one at a time, noting when each was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acknowledged: list[tuple[int, float]] = []  # (n, when its 201 arrived)
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with Client(self.url) as client:
            n = 0
            while not self.stopping.is_set():
                started = time.monotonic()
                client.send("orders", n)
                self.latencies.append(time.monotonic() - started)
                self.acknowledged.append((n, time.monotonic()))
                n += 1

    def until(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline and self.is_alive()
            time.sleep(0.01)


def build_every_state(client: Client) -> dict:
    """A leased message, a delayed one, a dead letter, an idempotency key and settings."""
    client.create_queue("orders")
    client.create_queue("jobs.dlq")
    client.create_queue("jobs", max_attempts=1, dead_letter_queue="jobs.dlq", dedup_window=LONG)
    client.send("jobs", "poison")
    client.release("jobs", client.receive("jobs", lease=30)[0].receipt)
    assert client.receive("jobs", lease=30) == []  # delivered once already: dead-lettered instead
    client.send("jobs", "leased")
    leased = client.receive("jobs", lease=LONG)[0]
    client.send("jobs", "later", delay=LONG)
    keyed = client.send("jobs", "once", key="k-1")
    return {"leased": leased.id, "keyed": keyed}


def test_a_backup_under_load_restores_what_was_acknowledged_before_it(mqd, tmp_path):
    daemon = mqd()
    with Client(daemon.url) as client:
        ids = build_every_state(client)
    producer = Producer(daemon.url)
    producer.start()
    producer.until(200)
    backup_started = time.monotonic()
    made = cli(daemon, "backup", str(tmp_path / "backup.sqlite3"))
    assert made.returncode == 0, made.stderr
    assert "written to" in made.stdout and made.stderr == ""
    producer.until(len(producer.acknowledged) + 200)  # sends went on during and after it
    producer.stopping.set()
    producer.join()
    before_backup = [n for n, when in producer.acknowledged if when < backup_started]
    highest_acknowledged = daemon.call("GET", "/queues/orders")[1]["counters"]["sent"]
    daemon.stop()

    restored = mqd_command("--data-dir", str(daemon.data_dir), "--restore", str(tmp_path / "backup.sqlite3"))
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout and "replaced" in restored.stdout
    daemon = mqd()  # no --repair: the store ends before its high-water mark, knowingly
    assert "started from a backup taken at" in daemon.log()
    with Client(daemon.url) as client:
        kept = [message.content for message in client.receive("orders", count=1000)]
        while batch := client.receive("orders", count=1000):
            kept += [message.content for message in batch]
        assert kept == list(range(len(kept)))  # in order, no gap, nothing invented
        assert set(before_backup) <= set(kept) and len(kept) < highest_acknowledged
        jobs = client.queue("jobs")
        assert (jobs["leased"], jobs["delayed"], jobs["dead_lettered"]) == (1, 1, 1)
        assert (jobs["max_attempts"], jobs["dead_letter_queue"], jobs["dedup_window"]) == (
            1,
            "jobs.dlq",
            LONG,
        )
        assert client.send("jobs", "again", key="k-1") == ids["keyed"]  # the key is remembered
        assert client.redrive("jobs.dlq")["queues"] == {"jobs": 1}  # the dead letter knows its home
        new_id = client.send("orders", "after the restore")
    assert new_id > max(ids.values()) + len(producer.acknowledged)  # no id is handed out twice


def test_a_backup_passes_mqd_verify_and_starts_in_an_empty_directory(mqd, tmp_path):
    daemon = mqd()
    with Client(daemon.url) as client:
        client.create_queue("orders")
        client.send_many("orders", [{"n": n, "price": "1.50"} for n in range(100)])
        info = client.backup(tmp_path / "copy.sqlite3")
    assert (info.messages, info.highest_id) == (100, 100)
    elsewhere = tmp_path / "elsewhere"
    assert (
        mqd_command("--data-dir", str(elsewhere), "--restore", str(tmp_path / "copy.sqlite3")).returncode == 0
    )
    verified = mqd_command("--data-dir", str(elsewhere), "--verify")
    assert verified.returncode == 0 and "100 messages checked" in verified.stdout
    second = mqd(data_dir=elsewhere)
    assert second.call("GET", "/queues/orders")[1]["ready"] == 100
    assert daemon.call("GET", "/queues/orders")[1]["ready"] == 100  # the original served on


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.rfind(b'"price"')  # inside a message's content: only its checksum can tell
    data[at + 2] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("harm", ["a flipped byte", "cut short", "not a backup"])
def test_a_damaged_backup_is_refused_and_nothing_is_changed(mqd, tmp_path, harm):
    daemon = mqd()
    with Client(daemon.url) as client:
        client.create_queue("orders")
        client.send_many("orders", [{"n": n, "price": "1.50"} for n in range(100)])
        client.backup(tmp_path / "copy.sqlite3")
    daemon.stop()
    copy = tmp_path / "copy.sqlite3"
    if harm == "a flipped byte":
        damage(copy)
    elif harm == "cut short":
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    else:
        copy.write_bytes((daemon.data_dir / "mq.sqlite3").read_bytes())  # a store, not a backup
    before = sorted(path.name for path in daemon.data_dir.iterdir())
    refused = mqd_command("--data-dir", str(daemon.data_dir), "--restore", str(copy))
    assert refused.returncode == 1, refused
    assert "Nothing was changed" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert sorted(path.name for path in daemon.data_dir.iterdir()) == before


def test_restore_refuses_while_mqd_serves_the_directory(mqd, tmp_path):
    daemon = mqd()
    with Client(daemon.url) as client:
        client.create_queue("orders")
        client.backup(tmp_path / "copy.sqlite3")
    refused = mqd_command("--data-dir", str(daemon.data_dir), "--restore", str(tmp_path / "copy.sqlite3"))
    assert refused.returncode == 3 and "in use" in refused.stderr


def test_a_backup_is_token_protected_like_the_rest(mqd, tmp_path):
    daemon = mqd(env={"MQD_TOKEN": "backup-token"})
    refused = cli(daemon, "backup", str(tmp_path / "copy.sqlite3"))
    assert refused.returncode == 8 and not (tmp_path / "copy.sqlite3").exists()
    allowed = cli(daemon, "backup", str(tmp_path / "copy.sqlite3"), env={"MQ_TOKEN": "backup-token"})
    assert allowed.returncode == 0, allowed.stderr


def test_a_backup_that_cannot_be_written_costs_mqd_nothing(mqd, tmp_path):
    """(A disk that fills during the copy: tests/faults/test_disk_full.py.)"""
    daemon = mqd()
    failed = cli(daemon, "backup", str(tmp_path / "no-such-directory" / "copy.sqlite3"))
    assert failed.returncode == 7 and "cannot write the backup" in failed.stderr
    assert "backup taken" not in daemon.log()  # refused before mqd was asked


def test_copies_a_killed_mqd_was_making_are_removed_at_start(mqd, tmp_path):
    daemon = mqd()
    daemon.kill()
    partial = daemon.data_dir / "mq-backup-123-456.partial"
    partial.write_bytes(b"half a copy")
    mqd()
    assert not partial.exists()


async def test_the_async_client_writes_the_same_backup(mqd, tmp_path):
    from mq import AsyncClient

    daemon = mqd()
    async with AsyncClient(daemon.url) as client:
        await client.create_queue("orders")
        await client.send("orders", {"n": 1})
        info = await client.backup(tmp_path / "copy.sqlite3")
    assert info.messages == 1 and (tmp_path / "copy.sqlite3").stat().st_size == info.size


def test_a_postgresql_node_says_to_use_pg_dump(mqd):
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    url, schema = postgres.new_schema_url()
    try:
        daemon = mqd("--store", url)
        refused = cli(daemon, "backup", "copy.sqlite3")
        assert refused.returncode == 6 and "pg_dump" in refused.stderr
        with Client(daemon.url) as client, pytest.raises(Conflict) as raised:
            client.backup("copy.sqlite3")
        assert raised.value.code == "not_supported"
        daemon.stop()
    finally:
        postgres.drop_schema(schema)


def test_a_pg_dump_of_the_schema_restored_into_a_fresh_database_serves_the_same_queues(mqd, tmp_path):
    """docs/backups.md's commands for a PostgreSQL store, as written there."""
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    if shutil.which("pg_dump") is None or shutil.which("psql") is None:
        pytest.skip("pg_dump and psql are not installed (Debian: postgresql-client)")
    url, schema = postgres.new_schema_url()
    database = f"mq_restore_{uuid.uuid4().hex[:10]}"
    server = postgres.URL.rsplit("/", 1)[0]
    try:
        daemon = mqd("--store", url)
        with Client(daemon.url) as client:
            build_every_state(client)
            client.send_many("orders", list(range(50)))
        dump = tmp_path / "mq.sql"
        subprocess.run(
            ["pg_dump", postgres.URL, f"--schema={schema}", f"--file={dump}"], check=True, timeout=60
        )
        subprocess.run(["createdb", f"--maintenance-db={postgres.URL}", database], check=True, timeout=60)
        subprocess.run(
            ["psql", f"{server}/{database}", "-v", "ON_ERROR_STOP=1", "-q", f"--file={dump}"],
            check=True,
            timeout=60,
            capture_output=True,
        )
        daemon.stop()
        restored = mqd("--store", f"{server}/{database}?schema={schema}")
        with Client(restored.url) as client:
            assert [message.content for message in client.receive("orders", count=100)] == list(range(50))
            jobs = client.queue("jobs")
            assert (jobs["leased"], jobs["delayed"], jobs["dead_lettered"], jobs["max_attempts"]) == (
                1,
                1,
                1,
                1,
            )
        restored.stop()
    finally:
        postgres.drop_schema(schema)
        postgres.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def fill_with_100_000(daemon: MqdProcess) -> None:
    """About 30 MB: a copy that takes mqd long enough to be caught making it."""
    with Client(daemon.url, timeout=120) as client:
        client.create_queue("orders")
        for start in range(0, 100_000, 1000):
            client.send_many("orders", [{"n": start + n, "pad": "x" * 200} for n in range(1000)])


def backing_up_in_the_background(daemon: MqdProcess, file: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("mqctl")), "backup", str(file)],
        env={**os.environ, "MQ_URL": daemon.url},
        stderr=subprocess.PIPE,
        text=True,
    )


def until_copy_is_made(daemon: MqdProcess, process=None) -> None:
    deadline = time.monotonic() + 30
    while not list(daemon.data_dir.glob("mq-backup-*")):
        assert time.monotonic() < deadline and (process is None or process.poll() is None)
        time.sleep(0.005)


@pytest.mark.parametrize("interruption", ["kill -9 of mqd", "SIGTERM to mqctl"])
def test_a_backup_interrupted_leaves_no_file_and_no_copy(mqd, tmp_path, interruption):
    daemon = mqd()
    fill_with_100_000(daemon)
    target = tmp_path / "backups"
    target.mkdir()
    backup = backing_up_in_the_background(daemon, target / "copy.sqlite3")
    until_copy_is_made(daemon, backup)
    if interruption == "kill -9 of mqd":
        daemon.kill()
        assert backup.wait(30) in (3, 4), backup.stderr.read()
        mqd()
    else:
        backup.terminate()
        assert backup.wait(30) == 130, backup.stderr.read()
    assert list(target.iterdir()) == []  # neither the file nor a partial one
    deadline = time.monotonic() + 30
    while list(daemon.data_dir.glob("mq-backup-*")):  # gone at start-up, or once made for nobody
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_client_that_leaves_while_the_copy_is_made_leaves_no_copy_behind(mqd, tmp_path):
    import http.client

    daemon = mqd()
    fill_with_100_000(daemon)
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    leaving = http.client.HTTPConnection(host, int(port), timeout=30)
    leaving.request("GET", "/backup")
    until_copy_is_made(daemon)
    leaving.close()  # gone before the reply began
    deadline = time.monotonic() + 30
    while list(daemon.data_dir.glob("mq-backup-*")):  # made, then removed: nobody wants it
        assert time.monotonic() < deadline, list(daemon.data_dir.glob("mq-backup-*"))
        time.sleep(0.05)
    made = cli(daemon, "backup", str(tmp_path / "copy.sqlite3"))
    assert made.returncode == 0 and "100000 messages" in made.stdout
