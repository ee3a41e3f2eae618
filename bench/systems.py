"""The systems under test: how to start each, how to talk to it, and whether it is here at all."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

from . import clients, servers


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    label: str
    durable: bool  # acknowledges only once the message is on disk (where the system can)
    start: Callable[[Path], contextlib.AbstractContextManager[servers.Server]]
    adapter: Callable[[servers.Server], clients.Adapter]
    needs: tuple[str, ...] = ()  # programs and Python modules it cannot run without

    def missing(self) -> str | None:
        for need in self.needs:
            if need.startswith("py:"):
                if importlib.util.find_spec(need[3:]) is None:
                    return f"the Python package {need[3:]} is not installed (pip install -e '.[bench]')"
            elif not servers.available(need):
                return f"{need} is not installed"
        if "rabbitmq" in self.name:
            try:
                servers.wait_for_port(5672, None, timeout=1)
            except RuntimeError:
                return "no RabbitMQ server listens on 127.0.0.1:5672"
        return None


@contextlib.contextmanager
def _in(directory: Path, factory) -> Iterator[servers.Server]:
    with factory(directory) as server:
        yield server


def _mqd(fsync: str):
    return lambda directory: servers.mqd(fsync, data_dir=directory)


SYSTEMS = [
    System("mqd", "mqd (fsync always)", True, _mqd("always"), lambda s: clients.Http(s.url)),
    System("mqd-lease", "mqd, lease + ack", True, _mqd("always"), lambda s: clients.Http(s.url, lease=True)),
    System("mqd-fast", "mqd (--fsync off)", False, _mqd("off"), lambda s: clients.Http(s.url)),
    System(
        "mqd-stream", "mqd streams (fsync always)", True, _mqd("always"), lambda s: clients.MqdStream(s.url)
    ),
    System(
        "ceiling",
        "aiohttp from memory (ceiling)",
        False,
        lambda d: servers.python_app("bench.ceiling", "ceiling", d),
        lambda s: clients.Http(s.url, purge=False),
    ),
    System(
        "jsonfile",
        "JSON file rewritten per request",
        True,
        lambda d: servers.python_app("bench.jsonfile", "jsonfile", d),
        lambda s: clients.Http(s.url, purge=False),
    ),
    System(
        "redis",
        "Redis, appendfsync always",
        True,
        lambda d: servers.redis(d, durable=True),
        lambda s: clients.Redis(s.port),
        ("redis-server", "py:redis"),
    ),
    System(
        "redis-fast",
        "Redis, no persistence",
        False,
        lambda d: servers.redis(d, durable=False),
        lambda s: clients.Redis(s.port),
        ("redis-server", "py:redis"),
    ),
    System(
        "beanstalkd",
        "beanstalkd -b -f0",
        True,
        lambda d: servers.beanstalkd(d, durable=True),
        lambda s: clients.Beanstalkd(s.port),
        ("beanstalkd",),
    ),
    System(
        "beanstalkd-fast",
        "beanstalkd, no binlog",
        False,
        lambda d: servers.beanstalkd(d, durable=False),
        lambda s: clients.Beanstalkd(s.port),
        ("beanstalkd",),
    ),
    System(
        "rabbitmq",
        "RabbitMQ durable+persistent+confirms",
        True,
        lambda d: servers.rabbitmq(),
        lambda s: clients.RabbitMQ(s.url, durable=True),
        ("py:aio_pika",),
    ),
    System(
        "rabbitmq-fast",
        "RabbitMQ transient, no confirms",
        False,
        lambda d: servers.rabbitmq(),
        lambda s: clients.RabbitMQ(s.url, durable=False),
        ("py:aio_pika",),
    ),
    System(
        "nats",
        "NATS JetStream, file store",
        True,
        lambda d: servers.nats(d),
        lambda s: clients.Nats(f"nats://127.0.0.1:{s.port}", "file"),
        ("nats-server", "py:nats"),
    ),
    System(
        "nats-fast",
        "NATS JetStream, memory store",
        False,
        lambda d: servers.nats(d),
        lambda s: clients.Nats(f"nats://127.0.0.1:{s.port}", "memory"),
        ("nats-server", "py:nats"),
    ),
]
BY_NAME = {system.name: system for system in SYSTEMS}
