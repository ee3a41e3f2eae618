"""A total-queue checker in the manner of Jepsen's: every send carries a unique value, and what
comes out is compared with what went in.

- lost: acknowledged by mqd but never delivered
- unexpected: delivered but never sent
- duplicated: delivered more than once
- FIFO inversions: two messages of one producer whose queue order (ids) disagrees with the
  order the producer sent them in
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import Counter


@dataclasses.dataclass
class History:
    """Thread-safe record of one queue's traffic: (producer, sequence) values in and out."""

    attempted: set = dataclasses.field(default_factory=set)
    acknowledged: set = dataclasses.field(default_factory=set)
    deliveries: list = dataclasses.field(default_factory=list)  # (value, message id)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def attempt(self, value) -> None:
        with self.lock:
            self.attempted.add(value)

    def acknowledge(self, value) -> None:
        with self.lock:
            self.acknowledged.add(value)

    def deliver(self, value, message_id: int) -> None:
        with self.lock:
            self.deliveries.append((value, message_id))


@dataclasses.dataclass
class Verdict:
    acknowledged: int
    delivered: int
    lost: list
    unexpected: list
    duplicated: list
    fifo_inversions: int

    def figures(self) -> dict:
        return {
            "acknowledged": self.acknowledged,
            "delivered": self.delivered,
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
            "duplicated": len(self.duplicated),
            "fifo_inversions": self.fifo_inversions,
        }


def check(history: History) -> Verdict:
    values = [value for value, _ in history.deliveries]
    delivered = set(values)
    counts = Counter(values)
    ids: dict = {}
    for value, message_id in history.deliveries:
        ids.setdefault(value, message_id)
    inversions = 0
    by_producer: dict = {}
    for (producer, sequence), message_id in ids.items():
        by_producer.setdefault(producer, []).append((sequence, message_id))
    for pairs in by_producer.values():
        pairs.sort()
        message_ids = [message_id for _, message_id in pairs]
        inversions += sum(1 for a, b in itertools.pairwise(message_ids) if b < a)
    return Verdict(
        acknowledged=len(history.acknowledged),
        delivered=len(delivered),
        lost=sorted(history.acknowledged - delivered),
        unexpected=sorted(delivered - history.attempted),
        duplicated=sorted(value for value, count in counts.items() if count > 1),
        fifo_inversions=inversions,
    )
