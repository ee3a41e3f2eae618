"""Streams for synchronous programs: the asyncio Publisher and Consumer, run on an event loop
in a thread of their own, with blocking methods of the same shape.

    with mq.Client(url) as client, client.consume("jobs", lease=60) as consumer:
        for message in consumer:          # blocks until one comes
            handle(message.content)
            message.ack()

They are what ``Client.publisher()`` and ``Client.consume()`` return. aiohttp is imported only
when one is made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any

from .messages import Message


class _LoopThread:
    """An event loop running in a daemon thread; ``run(coroutine)`` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mq-stream", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        except BaseException:  # Ctrl-C while waiting: the coroutine is cancelled, not left behind
            future.cancel()
            raise

    def stop(self) -> None:
        """End every task still running on the loop, then the loop and its thread."""
        asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Threaded:
    def __init__(self, url: str, token: str | None) -> None:
        from .aio import AsyncClient  # aiohttp, for those who stream

        self._thread = _LoopThread()
        self._client = AsyncClient(url, token=token)
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._close())
        finally:
            self._thread.run(self._client.close())
            self._thread.stop()

    async def _close(self) -> None:
        raise NotImplementedError


class Publisher(_Threaded):
    """``send`` blocks until the message is durable; ``send_nowait`` returns a future of its id,
    so a loop can keep a window of sends in flight (``window`` unconfirmed at most)."""

    def __init__(self, url: str, token: str | None = None, *, window: int = 1000, keys: bool = True) -> None:
        super().__init__(url, token)
        self._publisher = self._client.publisher(window=window, keys=keys)

    def send(self, queue: str, content: Any = None, **options: Any) -> int:
        return self.send_nowait(queue, content, **options).result()

    def send_nowait(self, queue: str, content: Any = None, **options: Any) -> concurrent.futures.Future:
        """The future of the message's id (``.result()`` waits for it); beyond ``window``
        unconfirmed, it waits its turn before it is sent. Keep the number of futures you hold
        bounded (wait for the oldest), as ``send_all`` does."""
        return asyncio.run_coroutine_threadsafe(
            self._publisher.send(queue, content, **options), self._thread.loop
        )

    def send_batch_nowait(self, queue: str, items: list[str]) -> concurrent.futures.Future:
        """The future of a batch's ids (see mq.publisher.Publisher.send_batch); a batch counts as one
        in the window."""
        return asyncio.run_coroutine_threadsafe(self._publisher.send_batch(queue, items), self._thread.loop)

    def send_all(self, queue: str, items: Iterable[dict[str, Any]]) -> Iterator[int]:
        """Send every item (``{"content": ..., "json_text": ..., "delay": ..., "key": ...}``)
        with a window in flight; the ids, in order, as they are confirmed."""
        pending: list[concurrent.futures.Future] = []
        for item in items:
            pending.append(self.send_nowait(queue, **item))
            while pending and (pending[0].done() or len(pending) >= 10_000):
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()

    async def _close(self) -> None:
        await self._publisher.close()


class Consumer(_Threaded):
    """Messages of one queue as mqd pushes them: ``get()`` (or iterating) blocks until one comes.
    Their ``ack()``, ``release()`` and ``extend()`` block until mqd has answered."""

    def __init__(
        self,
        url: str,
        queue: str,
        token: str | None = None,
        *,
        prefetch: int = 100,
        lease: float | None = 30.0,
    ) -> None:
        super().__init__(url, token)
        self._consumer = self._client.consume(queue, prefetch=prefetch, lease=lease)

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self.get()

    def get(self, timeout: float | None = None) -> Message:
        """The next message; TimeoutError if none came within ``timeout`` seconds."""
        message = self._thread.run(_within(self._consumer.get(), timeout))
        return Message(message.queue, message.data, functools.partial(self._settle, message))

    def _settle(self, message: Message, how: str, _same: Message, *args: Any) -> Any:
        return self._thread.run(getattr(message, how)(*args))

    async def _close(self) -> None:
        await self._consumer.close()


async def _within(awaitable, timeout: float | None):
    return await asyncio.wait_for(awaitable, timeout)


async def _cancel_all() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
