"""A full disk: sends are refused with 507 while room is kept for receives and acks; nothing
acknowledged is lost; once space returns, sends succeed again without a restart."""

from __future__ import annotations

import os
import time

from ..helpers import MqdProcess, mqctl

RESERVE = 8 * 1024 * 1024
PAYLOAD = "x" * 1000


def fill(path, leave_bytes: int) -> None:
    """A ballast file taking all but ``leave_bytes`` of the file system."""
    usage = os.statvfs(path.parent)
    size = usage.f_bavail * usage.f_frsize - leave_bytes
    with open(path, "wb") as ballast:
        os.posix_fallocate(ballast.fileno(), 0, size)


def test_a_nearly_full_disk_refuses_sends_keeps_receives_and_recovers(loop_fs, figures):
    fs = loop_fs(64)
    daemon = MqdProcess(fs.mountpoint / "data", "--min-free-bytes", str(RESERVE)).start()
    try:
        daemon.call("POST", "/queues", {"name": "q"})
        daemon.call("POST", "/queues/q/messages?", {"messages": [{"content": i} for i in range(10)]})
        fill(fs.mountpoint / "ballast", RESERVE + 2 * 1024 * 1024)
        acknowledged = set(range(10))
        refused = None
        for batch in range(1, 1000):
            items = [{"content": {"n": batch * 100 + i, "pad": PAYLOAD}} for i in range(100)]
            status, body, _ = daemon.call("POST", "/queues/q/messages", {"messages": items})
            if status == 201:
                acknowledged |= {item["content"]["n"] for item in items}
                continue
            refused = (status, body)
            break
        assert refused is not None and refused[0] == 507, refused
        assert "free" in refused[1]["error"]
        free = os.statvfs(fs.mountpoint).f_bavail * os.statvfs(fs.mountpoint).f_frsize
        figures.update(refused_with_free_bytes=free, acknowledged_before_refusal=len(acknowledged))
        assert free > 0, "the disk filled up completely: the reserve did not hold"

        # Receives and acks still work on the nearly full disk.
        status, leased, _ = daemon.call("GET", "/queues/q/messages?lease=30")
        assert status == 200
        assert daemon.call("DELETE", f"/queues/q/messages/{leased['receipt']}")[0] == 204
        status, taken, _ = daemon.call("GET", "/queues/q/messages?count=5")
        assert status == 200
        delivered = [leased["content"]] + [m["content"] for m in taken["messages"]]

        (fs.mountpoint / "ballast").unlink()
        started = time.monotonic()
        while daemon.call("POST", "/queues/q/messages", {"content": "after"})[0] != 201:
            assert time.monotonic() - started < 10, "sends did not resume after the disk was freed"
            time.sleep(0.05)
        figures["sends_resumed_after_seconds"] = round(time.monotonic() - started, 3)
        pid = daemon.pid
        status, rest, _ = daemon.call("GET", "/queues/q/messages?count=1000")
        while status == 200:
            delivered += [m["content"] for m in rest["messages"]]
            status, rest, _ = daemon.call("GET", "/queues/q/messages?count=1000")
        assert daemon.pid == pid  # no restart was needed
    finally:
        daemon.stop()
    numbers = {c if isinstance(c, int) else c["n"] for c in delivered if c != "after"}
    assert acknowledged <= numbers, "an acknowledged message was lost"
    assert figures["sends_resumed_after_seconds"] < 2


def test_a_completely_full_disk_is_507_too_and_recovers(loop_fs, figures):
    fs = loop_fs(64)
    daemon = MqdProcess(fs.mountpoint / "data", "--min-free-bytes", "0").start()
    try:
        daemon.call("POST", "/queues", {"name": "q"})
        fill(fs.mountpoint / "ballast", 64 * 1024)
        statuses = set()
        for _ in range(200):
            items = [{"content": {"pad": PAYLOAD * 10}} for _ in range(50)]
            status, body, _ = daemon.call("POST", "/queues/q/messages", {"messages": items})
            statuses.add(status)
            if status != 201:
                assert status == 507, body
                break
        assert 507 in statuses
        (fs.mountpoint / "ballast").unlink()
        time.sleep(0.3)
        assert daemon.call("POST", "/queues/q/messages", {"content": "after"})[0] == 201
        assert daemon.call("GET", "/status")[1]["status"] == "ok"
    finally:
        daemon.stop()


def _store_of_about(daemon: MqdProcess, megabytes: int) -> None:
    daemon.call("POST", "/queues", {"name": "q"})
    for batch in range(megabytes):
        items = [{"content": {"n": batch * 1000 + i, "pad": PAYLOAD}} for i in range(1000)]
        assert daemon.call("POST", "/queues/q/messages", {"messages": items})[0] == 201


def test_a_backup_onto_a_disk_that_fills_leaves_no_file(loop_fs, mqd, figures):
    """mqctl backup to a file system smaller than the copy: it fails saying why, and neither
    the file asked for nor its partial copy is left."""
    daemon = mqd("--min-free-bytes", "0")
    _store_of_about(daemon, 24)
    fs = loop_fs(16)
    failed = mqctl("backup", str(fs.mountpoint / "copy.sqlite3"), env={"MQ_URL": daemon.url})
    assert failed.returncode == 7 and "No space left" in failed.stderr, failed.stderr
    assert sorted(path.name for path in fs.mountpoint.iterdir()) == ["lost+found"]
    assert daemon.call("GET", "/queues/q")[1]["ready"] == 24_000  # mqd served on, unharmed
    figures["store_bytes"] = (daemon.data_dir / "mq.sqlite3").stat().st_size


def test_mqd_refuses_a_backup_its_disk_has_no_room_for(loop_fs):
    fs = loop_fs(64)
    daemon = MqdProcess(fs.mountpoint / "data", "--min-free-bytes", str(1024 * 1024)).start()
    try:
        _store_of_about(daemon, 12)
        fill(fs.mountpoint / "ballast", 6 * 1024 * 1024)
        status, body, _ = daemon.call("GET", "/backup")
        assert status == 507 and body["code"] == "disk_full" and "backup" in body["error"]
        assert not list((fs.mountpoint / "data").glob("mq-backup-*"))
        assert daemon.call("POST", "/queues/q/messages", {"content": "after"})[0] == 201
    finally:
        daemon.stop()
