"""``mqctl run``: lease messages and run a command for each; exit 0 acks, anything else releases.

The messages come on a stream (mq's Consumer), leased, with credit for as many as there are
slots, so mqd pushes the next as soon as a slot is free and never more than can be run. Each of
``concurrency`` slots is a thread that takes one message at a time, runs the command with the
content on its standard input, extends the lease while the command runs past half of it, then
acknowledges or releases. If mqctl run is killed, its stream closes and mqd gives back at once
every message it held: nothing waits for a lease to run out. Commands run in their own session,
so a Ctrl-C meant for mqctl does not kill them: on SIGTERM or SIGINT the slots stop taking
messages and let running commands finish for ``grace`` seconds; after that (or at a second
signal) the commands are terminated and their messages released. At-least-once throughout: a
message is acknowledged only after its command exited 0.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from mq import ApiError, Client, Message, MqError

from . import output

POLL_SECONDS = 0.2
KILL_AFTER_SECONDS = 5.0


@dataclasses.dataclass
class Summary:
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    interrupted: int = 0
    lost_leases: int = 0

    def line(self) -> str:
        text = f"{self.processed} processed, {self.failed} failed, {self.dead_lettered} dead-lettered"
        if self.interrupted:
            text += f", {self.interrupted} interrupted and released"
        if self.lost_leases:
            text += f", {self.lost_leases} outlived their lease"
        return text


class CommandNotRunnable(MqError):
    """The command cannot be started at all (not found, not executable)."""


class Worker:
    def __init__(
        self,
        url: str,
        queue: str,
        command: Sequence[str],
        *,
        lease: float,
        concurrency: int,
        drain: bool,
        grace: float,
        retry_delay: float,
        token: str | None = None,
    ) -> None:
        self.url, self.queue, self.command, self.token = url, queue, list(command), token
        self.lease, self.concurrency, self.drain = lease, concurrency, drain
        self.grace, self.retry_delay = grace, retry_delay
        self.summary = Summary()
        self.interrupted = False  # stopped by SIGINT (Ctrl-C)
        self.max_attempts: int | None = None
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._stop_deadline = 0.0
        self._lock = threading.Lock()
        self._fatal: Exception | None = None
        self._client = Client(url, token=token)
        self._consumer = None

    # -- the main thread -------------------------------------------------------------------------

    def run(self) -> Summary:
        """Work until drained, stopped by a signal, or a fatal error (raised after the slots end)."""
        self.max_attempts = self._client.queue(self.queue).get("max_attempts")
        self._consumer = self._client.consume(self.queue, prefetch=self.concurrency, lease=self.lease)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        slots = [threading.Thread(target=self._slot, daemon=True) for _ in range(self.concurrency)]
        try:
            for slot in slots:
                slot.start()
            while any(slot.is_alive() for slot in slots):
                for slot in slots:
                    slot.join(POLL_SECONDS)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._consumer.close()  # what it still held goes back to mqd at once
            self._client.close()
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self.interrupted = True
        if self._stopping.is_set():
            self._abort.set()  # a second signal: do not wait for the grace period
        self._stop()

    def _stop(self) -> None:
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.grace
            self._stopping.set()

    def _fail(self, error: Exception) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = error
        self._stop()

    # -- the slots -------------------------------------------------------------------------------

    def _slot(self) -> None:
        try:
            while not self._stopping.is_set():
                message = self._next_message()
                if message is None:
                    if self.drain and self._drained():
                        return
                    continue
                self._process(message)
        except CommandNotRunnable as exc:
            self._fail(exc)
        except MqError as exc:
            if not self._stopping.is_set():
                self._fail(exc)

    def _next_message(self) -> Message | None:
        try:
            return self._consumer.get(timeout=POLL_SECONDS)
        except TimeoutError:
            return None

    def _drained(self) -> bool:
        """--drain: nothing came, and the queue has nothing ready (what others hold may come back)."""
        with self._lock:  # one HTTP connection, shared by the slots
            return self._client.queue(self.queue)["ready"] == 0

    def _process(self, message: Message) -> None:
        try:
            process = self._spawn(message)
        except OSError as exc:
            self._release(message)
            raise CommandNotRunnable(f"cannot run {self.command[0]}: {exc.strerror or exc}") from None
        exit_status = self._supervise(process, message)
        if exit_status is None:  # stopped after the grace period
            self._release(message)
            self._count("interrupted")
        elif exit_status == 0:
            try:
                message.ack()
                self._count("processed")
            except ApiError as exc:
                if exc.code != "receipt_not_found":
                    raise
                self._lost_lease(message)
        else:
            self._release(message, self.retry_delay)
            self._count("failed")
            if self.max_attempts is not None and message.attempts >= self.max_attempts:
                self._count("dead_lettered")

    def _spawn(self, message: Message) -> subprocess.Popen:
        content = message.content
        data = output.content_text(content)
        environment = {
            **os.environ,
            "MQ_QUEUE": self.queue,
            "MQ_MESSAGE_ID": str(message.id),
            "MQ_ATTEMPTS": str(message.attempts),
            "MQ_RECEIPT": message.receipt,
        }
        with tempfile.TemporaryFile() as stdin:  # a file, so a command that never reads cannot block us
            stdin.write(data.encode("utf-8", "backslashreplace"))
            stdin.seek(0)
            return subprocess.Popen(self.command, stdin=stdin, env=environment, start_new_session=True)

    def _supervise(self, process: subprocess.Popen, message: Message) -> int | None:
        """Wait for the command, extending its lease at half-time; None if it had to be stopped."""
        next_extension = time.monotonic() + self.lease / 2
        while True:
            try:
                return process.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self._abort.is_set() or (self._stopping.is_set() and now >= self._stop_deadline):
                _terminate(process)
                return None
            if now >= next_extension:
                try:
                    message.extend(self.lease)
                except ApiError as exc:
                    if exc.code != "receipt_not_found":
                        raise
                next_extension = now + self.lease / 2

    def _release(self, message: Message, delay: float = 0) -> None:
        try:
            message.release(delay)
        except ApiError as exc:
            if exc.code != "receipt_not_found":  # the lease already ran out: the message is back anyway
                raise

    def _lost_lease(self, message: Message) -> None:
        self._count("lost_leases")
        print(
            f"mqctl run: message {message.id} outlived its lease (was mqd unreachable?); "
            "it will be delivered again",
            file=sys.stderr,
            flush=True,
        )

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.summary, field, getattr(self.summary, field) + 1)


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(KILL_AFTER_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
