"""A backup while mqd serves: how fast it is, and what it does to the latency of sends meanwhile.

    python -m bench.backups [--messages 1000000] [--producers 8] [--seconds 10]

mqd (SQLite, fsync always) is filled with ``--messages`` messages; then ``--producers`` threads
send one message at a time, first for ``--seconds`` without a backup, then while ``mqctl
backup``'s client method copies the store. Prints the backup's size and rate, and the send
latencies (median and 99th percentile) of both phases, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from mq import Client

from . import servers

PAYLOAD = {"order": 1041, "sku": "KB-87", "qty": 1, "note": "x" * 60}


class Producers:
    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.samples: list[tuple[float, float]] = []  # (when it was answered, seconds it took)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        with Client(self.url) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                client.send("orders", PAYLOAD)
                ended = time.monotonic()
                self.samples.append((ended, ended - started))

    def between(self, start: float, end: float) -> dict:
        latencies = sorted(seconds for when, seconds in self.samples if start <= when < end)
        if not latencies:
            return {"sends": 0}
        return {
            "sends": len(latencies),
            "sends_per_second": round(len(latencies) / (end - start)),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backups", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    options = parser.parse_args()
    with (
        servers.temporary_directory("backups") as directory,
        servers.mqd(data_dir=directory) as server,
    ):
        with Client(server.url, timeout=300) as client:
            client.create_queue("orders")
            for start in range(0, options.messages, 1000):
                client.send_many("orders", [PAYLOAD] * min(1000, options.messages - start))
            producers = Producers(server.url, options.producers)
            for thread in producers.threads:
                thread.start()
            quiet_start = time.monotonic()
            time.sleep(options.seconds)
            backup_start = time.monotonic()
            info = client.backup(directory / "backup.sqlite3")
            backup_end = time.monotonic()
            producers.stopping.set()
            for thread in producers.threads:
                thread.join()
        seconds = backup_end - backup_start
        print(
            json.dumps(
                {
                    "messages_in_store": info.messages,
                    "backup_bytes": info.size,
                    "backup_seconds": round(seconds, 2),
                    "backup_mib_per_second": round(info.size / seconds / 2**20, 1),
                    "backup_messages_per_second": round(info.messages / seconds),
                    "sends_without_backup": producers.between(quiet_start, backup_start),
                    "sends_during_backup": producers.between(backup_start, backup_end),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
