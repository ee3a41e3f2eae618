"""Producers and consumers that keep working while the daemon under them is killed and restarted.

Each thread talks through its own keep-alive client and notes what it has in flight, so that a
fault can be charged to the operations it interrupted: a consume-mode receive in flight at a kill
may lose its message (the removal committed, the reply never arrived); an ack in flight, or a
lease held, may see its message delivered again.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from urllib.parse import urlsplit

from mq import ApiError, Client, MqError

from .checker import History

RETRY_SECONDS = 0.05


class Target:
    """Where the daemon is now; threads reconnect when it changes or goes away."""

    def __init__(self, url: str) -> None:
        self.url = url


class Worker(threading.Thread):
    def __init__(self, target: Target, queue: str, history: History, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.target, self.queue, self.history, self.stop = target, queue, history, stop
        self.in_flight = 0  # operations under way that a kill would interrupt
        self.interrupted = 0  # such operations that a kill did interrupt
        self.errors: list[BaseException] = []  # anything but the daemon being away
        self._client: Client | None = None
        self._url = ""

    def client(self) -> Client:
        if self._client is None or self._url != self.target.url:
            if self._client is not None:
                self._client.close()
            self._url = self.target.url
            self._client = Client(self._url, timeout=10)
        return self._client

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except MqError as exc:
                    if isinstance(exc, ApiError) and exc.status < 500:
                        raise
                    if "connection refused" not in str(exc):  # refused: nothing was sent
                        self.interrupted += self.in_flight
                    self.in_flight = 0
                    if self._client is not None:
                        self._client.close()
                    time.sleep(RETRY_SECONDS)  # the daemon is down or restarting
        except BaseException as exc:
            self.errors.append(exc)

    def step(self) -> None:
        raise NotImplementedError


class Producer(Worker):
    def __init__(self, target, queue, history, stop, number: int, size: int = 0) -> None:
        super().__init__(target, queue, history, stop)
        self.number = number
        self.sequence = 0
        self.padding = "x" * size

    def step(self) -> None:
        value = (self.number, self.sequence)
        self.sequence += 1
        self.history.attempt(value)
        self.in_flight = 1
        self.client().send(self.queue, {"p": self.number, "n": value[1], "pad": self.padding})
        self.in_flight = 0
        self.history.acknowledge(value)


def _value(message: dict) -> tuple[int, int]:
    return message["content"]["p"], message["content"]["n"]


class ConsumeConsumer(Worker):
    """Receives without a lease (at most once): each receive removes one message."""

    def step(self) -> None:
        self.in_flight = 1
        batch = self.client().receive(self.queue, count=1, wait=0.5)
        self.in_flight = 0
        for message in batch:
            self.history.deliver(_value(message), message["id"])


class LeaseConsumer(Worker):
    """Leases, records, then acknowledges (at least once)."""

    def __init__(self, target, queue, history, stop, lease: float = 2) -> None:
        super().__init__(target, queue, history, stop)
        self.lease = lease

    def step(self) -> None:
        batch = self.client().receive(self.queue, count=5, wait=0.5, lease=self.lease)
        self.in_flight = len(batch)  # held leases: a kill now means they come back
        for message in batch:
            self.history.deliver(_value(message), message["id"])
            try:
                self.client().ack(self.queue, message["receipt"])
            except ApiError as exc:
                if exc.status != 404:  # 404: the lease ran out meanwhile; it comes back
                    raise
            self.in_flight -= 1


def drain(target: Target, queues: list[str], timeout: float = 60) -> None:
    """Wait until every queue is empty (leases acknowledged or run out and taken again)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Client(target.url) as client:
                if all(client.queue(q)["messages"] == 0 for q in queues):
                    return
        except MqError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the queues did not drain within {timeout}s")


class Vanisher(threading.Thread):
    """A receiver that goes away at a random moment: it sends a long-poll, waits a little, then
    half-closes its connection (as a client that gives up does) and reads whatever mqd had
    written to it before it noticed. Those messages count as received by it; every other message
    must still reach someone else."""

    def __init__(self, target, queue, history, stop, *, lease: float | None, seed: int) -> None:
        super().__init__(daemon=True)
        self.target, self.queue, self.history, self.stop = target, queue, history, stop
        self.lease = lease
        self.random = random.Random(seed)
        self.vanished = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.vanish_once()
        except BaseException as exc:
            self.errors.append(exc)

    def vanish_once(self) -> None:
        address = urlsplit(self.target.url)
        query = "wait=1&count=3" + (f"&lease={self.lease}" if self.lease else "")
        with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
            request = f"GET /queues/{self.queue}/messages?{query} HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n"
            connection.sendall(request.encode())
            time.sleep(self.random.choice([0, 0, 0.0005, 0.002, 0.01, 0.05]))
            connection.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
        self.vanished += 1
        head, _, body = reply.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):  # written before mqd saw us go: ours, then
            for message in json.loads(body)["messages"]:
                self.history.deliver(_value(message), message["id"])
