"""Damaged data: mqd either refuses to start with one line naming the file, or starts with every
acknowledged message; it never starts having silently lost one, and never deletes the evidence."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import MqdProcess

MESSAGES = 300
MARKER = "needle-{:06d}"


def prepare(tmp_path: Path, *args: str, clean_stop: bool) -> MqdProcess:
    """A store holding MESSAGES acknowledged messages: checkpointed into the database by a clean
    stop, or still in the write-ahead log after kill -9."""
    daemon = MqdProcess(tmp_path / "data", *args).start()
    daemon.call("POST", "/queues", {"name": "q"})
    for start in range(0, MESSAGES, 100):
        items = [{"content": MARKER.format(i)} for i in range(start, start + 100)]
        assert daemon.call("POST", "/queues/q/messages", {"messages": items})[0] == 201
    if clean_stop:
        daemon.stop()
    else:
        daemon.kill()
    return daemon


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x5A]))


def truncate_database(data: Path) -> None:
    database = data / "mq.sqlite3"
    os.truncate(database, database.stat().st_size // 2)


def garbage_header(data: Path) -> None:
    with open(data / "mq.sqlite3", "r+b") as handle:
        handle.write(os.urandom(100))


def truncate_wal(data: Path) -> None:
    wal = data / "mq.sqlite3-wal"
    os.truncate(wal, wal.stat().st_size // 2)


def flip_wal_byte(data: Path) -> None:
    wal = data / "mq.sqlite3-wal"
    flip_byte(wal, wal.stat().st_size * 3 // 4)


def flip_message_byte(data: Path) -> None:
    database = data / "mq.sqlite3"
    raw = database.read_bytes()
    offset = raw.index(MARKER.format(MESSAGES - 7).encode())
    flip_byte(database, offset + 3)


def delete_wal_and_shm(data: Path) -> None:
    (data / "mq.sqlite3-wal").unlink()
    (data / "mq.sqlite3-shm").unlink(missing_ok=True)


def delete_shm(data: Path) -> None:
    (data / "mq.sqlite3-shm").unlink(missing_ok=True)


CASES = {
    # name: (damage, whether the data is checkpointed first, what must happen)
    "database-truncated": (truncate_database, True, "refuse"),
    "garbage-header": (garbage_header, True, "refuse"),
    "wal-truncated": (truncate_wal, False, "refuse"),
    "wal-byte-flipped": (flip_wal_byte, False, "refuse"),
    "message-byte-flipped": (flip_message_byte, True, "refuse"),
    "wal-and-shm-deleted": (delete_wal_and_shm, False, "refuse"),
    "shm-deleted": (delete_shm, False, "serve"),
}
_outcomes: dict[str, str] = {}


def digest(data: Path) -> dict[str, str]:
    """The data files' contents; not the -shm, an index SQLite rebuilds from the log on every open."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in data.iterdir()
        if p.name.startswith("mq.sqlite3") and not p.name.endswith("-shm")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_refused_or_survived_never_silently_lost(tmp_path, case, figures):
    damage, clean_stop, expected = CASES[case]
    daemon = prepare(tmp_path, clean_stop=clean_stop)
    data = daemon.data_dir
    damage(data)
    before = digest(data)
    try:
        daemon.start()
    except RuntimeError as refusal:
        errors = [line for line in str(refusal).splitlines() if " ERROR " in line]
        assert len(errors) == 1, str(refusal)
        assert str(data / "mq.sqlite3") in errors[0], errors[0]
        after = digest(data)
        assert {name: after.get(name) for name in before} == before, "a refused store was modified"
        outcome = "refused"
    else:
        try:
            status, body, _ = daemon.call("GET", "/queues/q/messages?count=1000")
        finally:
            daemon.stop()
        got = [m["content"] for m in body["messages"]] if status == 200 else []
        outcome = "served all" if got == [MARKER.format(i) for i in range(MESSAGES)] else "SILENT LOSS"
    _outcomes[case] = outcome
    figures.update(case=case, outcome=outcome)
    assert outcome != "SILENT LOSS"
    assert outcome == ("refused" if expected == "refuse" else "served all")


def test_verify_reports_damage_and_repair_keeps_what_is_left(tmp_path):
    daemon = prepare(tmp_path, clean_stop=True)
    data = daemon.data_dir
    sound = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--data-dir", str(data)], capture_output=True, text=True
    )
    assert sound.returncode == 0 and "ok" in sound.stdout
    flip_message_byte(data)
    damaged = subprocess.run(
        [sys.executable, "-m", "mqd", "--verify", "--data-dir", str(data)], capture_output=True, text=True
    )
    assert damaged.returncode == 1 and "checksum" in damaged.stderr
    daemon.args = ["--repair"]
    daemon.start()
    try:
        _, body, _ = daemon.call("GET", "/queues/q/messages?count=1000")
    finally:
        daemon.stop()
    assert len(body["messages"]) == MESSAGES - 1  # the damaged one was set apart, not served
    copies = list(data.glob("damaged-*/mq.sqlite3"))
    assert copies, "the damaged files were not copied aside"


def test_a_read_only_data_directory_is_one_clear_line(loop_fs):
    fs = loop_fs(32)
    daemon = prepare(fs.mountpoint, "--min-free-bytes", "0", clean_stop=True)
    subprocess.run(["mount", "-o", "remount,ro", str(fs.mountpoint)], check=True)
    try:
        daemon.log_path = fs.mountpoint.parent / "ro-mqd.log"
        with pytest.raises(RuntimeError) as refusal:
            daemon.start()
        errors = [line for line in str(refusal.value).splitlines() if " ERROR " in line]
        assert len(errors) == 1 and "Read-only file system" in errors[0]
    finally:
        daemon.stop()  # in case it started after all
        subprocess.run(["mount", "-o", "remount,rw", str(fs.mountpoint)], check=True)


def test_silent_loss_cases_are_zero(figures):
    figures.update(
        outcomes=dict(_outcomes), silent_loss_cases=sum(v == "SILENT LOSS" for v in _outcomes.values())
    )
    assert figures["silent_loss_cases"] == 0
