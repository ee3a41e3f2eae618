"""A failing fsync: the outcome of that commit is unknown, so mqd says so (503), stops taking
writes (no retry: after a failed fsync the kernel may have dropped the data, and a retry that
succeeds would lie), reports it in /status and its log, and loses nothing it acknowledged."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ..helpers import MqdProcess

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* fsync and fdatasync fail with EIO while the file named by MQ_FAIL_FSYNC exists. */
static int failing(void) {
    const char *trigger = getenv("MQ_FAIL_FSYNC");
    return trigger != NULL && access(trigger, F_OK) == 0;
}
int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}
int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}
"""


@pytest.fixture
def shim(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the fsync-failing LD_PRELOAD shim")
    source, library = tmp_path / "failfsync.c", tmp_path / "failfsync.so"
    source.write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"], check=True)
    return library


def test_a_failed_fsync_stops_writes_says_so_and_loses_nothing(tmp_path, shim, figures):
    trigger = tmp_path / "fail-now"
    daemon = MqdProcess(tmp_path / "data", env={"LD_PRELOAD": str(shim), "MQ_FAIL_FSYNC": str(trigger)})
    daemon.start()
    try:
        daemon.call("POST", "/queues", {"name": "q"})
        for i in range(20):
            assert daemon.call("POST", "/queues/q/messages", {"content": i})[0] == 201
        trigger.touch()
        status, body, _ = daemon.call("POST", "/queues/q/messages", {"content": "in doubt"})
        assert status == 503 and "unknown" in body["error"]
        trigger.unlink()  # the disk "recovers": mqd must not trust it again by itself
        assert daemon.call("POST", "/queues/q/messages", {"content": "refused"})[0] == 503
        assert daemon.call("GET", "/queues/q/messages")[0] == 503
        status, health, _ = daemon.call("GET", "/status")
        assert status == 503 and health["status"] == "failed" and "I/O error" in health["error"]
        assert "CRITICAL" in daemon.log()
        status, metrics, _ = daemon.call("GET", "/metrics")  # scraped exactly when it matters
        samples = set(metrics.splitlines())
        assert status == 200 and {"mq_store_failed 1", "mq_store_up 1"} <= samples  # reads still work
        figures["failed_state_reported"] = True
    finally:
        daemon.kill()
    daemon.env.pop("LD_PRELOAD")
    daemon.start()
    try:
        status, body, _ = daemon.call("GET", "/queues/q/messages?count=100")
        contents = [m["content"] for m in body["messages"]]
    finally:
        daemon.stop()
    assert contents[:20] == list(range(20)), "an acknowledged message was lost"
    assert set(contents[20:]) <= {"in doubt"}  # the one whose outcome was unknown may be there
    figures["acknowledged_after_restart"] = 20
