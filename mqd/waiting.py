"""Receivers waiting for messages: one line per queue, and the timers that wake a line when a
hidden message becomes visible.

Receivers that find a queue empty wait in line (arrival order) and keep their place until they
leave with a message, time out, or are cancelled (their client left: they leave at once and let
the next one look in their stead). A change that makes k messages ready lets the first k of them
look again; one that still finds nothing (a receiver without a wait took the message first)
sleeps again where it stood. Messages that become visible later (delays, leases running out)
wake the line through one timer per queue, armed at the earliest such moment the store knows of.
No two receivers can get the same message: that is the store's promise, whatever order the line
wakes them in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .errors import MqError
from .model import Clock

log = logging.getLogger("mqd.broker")

TIMER_SLACK_SECONDS = 0.001  # fire just after a message becomes visible, never just before


class Receiver:
    """A waiting receiver's place in line: asleep on ``future``, or awake and looking."""

    __slots__ = ("awake", "future")

    def __init__(self) -> None:
        self.awake = True
        self.future: asyncio.Future | None = None


class Line:
    """The receivers waiting on one queue, and the timer for its next hidden message."""

    __slots__ = (
        "generation",
        "noted_at",
        "receivers",
        "timer",
        "timer_at",
        "timer_known",
        "timer_query",
        "waiting",
    )

    def __init__(self) -> None:
        self.receivers = 0  # receivers inside a receive, asleep or looking
        self.waiting: deque[Receiver] = deque()  # in arrival order, asleep or looking
        self.generation = 0  # bumped on every wake-up, so a receiver can tell it missed one
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None  # wall-clock time the timer stands for
        self.timer_known = False  # whether timer_at reflects the store's earliest hidden message
        self.timer_query: asyncio.Task | None = None
        self.noted_at: float | None = None  # told of while the store was being asked


class Lines:
    """Every queue's line, by queue id. ``next_visible_at(queue_id)`` asks the store when the
    queue's earliest hidden message becomes visible."""

    def __init__(
        self, clock: Clock, next_visible_at: Callable[[int], Awaitable[float | None]], max_waiters: int
    ) -> None:
        self._clock = clock
        self._next_visible_at = next_visible_at
        self.max_waiters = max_waiters
        self._lines: dict[int, Line] = {}
        self.waiting = 0  # receivers asleep or looking, across every line

    def enter(self, queue_id: int) -> Line:
        """Join the line before looking, so that a change landing between the look and the sleep
        still bumps the generation compared against."""
        line = self._lines.get(queue_id)
        if line is None:
            line = self._lines[queue_id] = Line()
        line.receivers += 1
        return line

    def exit(self, queue_id: int, line: Line) -> None:
        line.receivers -= 1
        self._forget_if_idle(queue_id, line)

    def take_place(self, line: Line) -> Receiver:
        """A place at the end of the line, for a receiver that found nothing."""
        if self.waiting >= self.max_waiters:
            from .errors import TooManyWaiters

            raise TooManyWaiters(f"Too many receivers are waiting ({self.max_waiters}); retry shortly.")
        me = Receiver()
        line.waiting.append(me)
        self.waiting += 1
        return me

    def leave(self, line: Line, me: Receiver, *, pass_turn: bool = False) -> None:
        line.waiting.remove(me)
        self.waiting -= 1
        if pass_turn and line.waiting:  # it may have been woken for a message: let the next look
            self.wake(line, 1)

    async def sleep(self, queue_id: int, line: Line, me: Receiver, deadline: float) -> bool:
        """Sleep in our place until woken (True) or until the deadline (False, loop time)."""
        loop = asyncio.get_running_loop()
        me.awake = False
        me.future = loop.create_future()
        timeout = loop.call_at(deadline, _settle, me.future, False)
        try:
            self._ensure_timer(queue_id, line)
            return await me.future
        finally:
            timeout.cancel()
            me.awake = True

    def notify(self, queue_id: int, ready: int) -> None:
        line = self._lines.get(queue_id)
        if line is not None:
            self.wake(line, ready)

    def wake(self, line: Line, count: int) -> None:
        """Let the first ``count`` receivers in line look again. One already looking counts too:
        it sees the new generation and looks again itself, ahead of those behind it."""
        line.generation += 1
        for receiver in line.waiting:
            if count <= 0:
                break
            count -= 1
            if not receiver.awake:
                receiver.awake = True
                _settle(receiver.future, True)

    def wake_all(self, queue_id: int | None = None) -> None:
        """Every receiver of one queue (it was deleted) or of all (mqd is stopping) looks again."""
        for key, line in list(self._lines.items()):
            if queue_id is None or key == queue_id:
                self.wake(line, len(line.waiting))
                if queue_id is None and line.timer is not None:
                    line.timer.cancel()

    # -- the timer for messages that become visible later ----------------------------------------

    def note_hidden(self, queue_id: int, visible_at: float | None) -> None:
        """A message of the queue becomes visible at ``visible_at``; wake its line then."""
        line = self._lines.get(queue_id)
        if line is None or not line.waiting or visible_at is None:
            return
        if line.timer_known and (line.timer_at is None or visible_at < line.timer_at):
            self._arm(queue_id, line, visible_at)
        elif not line.timer_known and line.timer_query is not None:  # the store's answer may predate it
            line.noted_at = visible_at if line.noted_at is None else min(line.noted_at, visible_at)

    def wake_at(self, queue_id: int, until: float) -> None:
        """Wake the queue's line at ``until`` for a reason the store cannot tell (max_rate's next
        tokens; a send whose result was lost): this holds with nobody asleep yet."""
        line = self._lines.get(queue_id)
        if line is not None and (line.timer_at is None or until < line.timer_at):
            self._arm(queue_id, line, until)

    def _ensure_timer(self, queue_id: int, line: Line) -> None:
        if not line.timer_known and line.timer_query is None:
            line.timer_query = asyncio.create_task(self._query_timer(queue_id, line))

    async def _query_timer(self, queue_id: int, line: Line) -> None:
        try:
            visible_at = await self._next_visible_at(queue_id)
        except MqError as exc:
            log.warning("could not read when the next message of queue %d is due: %s", queue_id, exc)
            visible_at = None
        finally:
            line.timer_query = None
        if line.noted_at is not None:
            visible_at = line.noted_at if visible_at is None else min(visible_at, line.noted_at)
            line.noted_at = None
        line.timer_known = True
        if visible_at is not None and (line.timer_at is None or visible_at < line.timer_at):
            self._arm(queue_id, line, visible_at)

    def _arm(self, queue_id: int, line: Line, visible_at: float) -> None:
        if line.timer is not None:
            line.timer.cancel()
        delay = max(0.0, visible_at - self._clock()) + TIMER_SLACK_SECONDS
        line.timer_at = visible_at
        line.timer = asyncio.get_running_loop().call_later(delay, self._timer_fired, queue_id, line)

    def _timer_fired(self, queue_id: int, line: Line) -> None:
        line.timer = None
        line.timer_at = None
        line.timer_known = False  # the next sleeper asks the store again
        if line.waiting:
            self.wake(line, 1)
        self._forget_if_idle(queue_id, line)

    def _forget_if_idle(self, queue_id: int, line: Line) -> None:
        if line.receivers == 0 and line.timer is None and self._lines.get(queue_id) is line:
            del self._lines[queue_id]


def _settle(future: asyncio.Future, value: bool) -> None:
    if not future.done():
        future.set_result(value)
