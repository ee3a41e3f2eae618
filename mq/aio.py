"""The asyncio client: the same operations as ``Client``, awaited, over aiohttp; and streams.

async with mq.AsyncClient("http://127.0.0.1:8000") as client:
    await client.create_queue("jobs")
    await client.send("jobs", {"n": 1})
    async with client.publisher() as publisher:       # many in flight, each confirmed
        await publisher.send("jobs", {"n": 2})
    async for message in client.consume("jobs", lease=30):
        await message.ack()
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from mqd.protocol import DEFAULT_URL, STREAM_PATH

from .backups import BackupFile, BackupInfo
from .consumer import Consumer
from .errors import BadUrl, ConnectionFailed, MqError, Timeout
from .operations import Call, Operations, refusal
from .publisher import Publisher

REPLY_MARGIN = 30.0
BACKUP_CHUNK_BYTES = 1 << 20
BACKUP_TIMEOUT = 3600.0  # mqd copies and checks the whole store before its reply begins


class AsyncClient(Operations):
    """Talks to one mqd at ``url`` (``http://host:port`` or ``unix:/path``); every operation is
    a coroutine. Close it (``async with``, or ``await client.close()``)."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = REPLY_MARGIN
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._base, self._socket_path = _base_of(self.url)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session every request and stream of this client goes through."""
        if self._session is None:
            connector = aiohttp.UnixConnector(self._socket_path) if self._socket_path else None
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self._session

    def stream_url(self) -> str:
        return self._base + STREAM_PATH

    async def _call(self, call: Call) -> Any:
        headers = {"Content-Type": "application/json"} if call.body is not None else None
        timeout = aiohttp.ClientTimeout(total=call.wait + self.timeout)
        try:
            async with self.session().request(
                call.method, self._base + call.path, data=call.body, headers=headers, timeout=timeout
            ) as response:
                status, body = response.status, await response.read()
        except TimeoutError:
            raise Timeout(f"mqd at {self.url} did not answer within {call.wait + self.timeout:g} s") from None
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from None
        if status >= 400:
            raise refusal(status, body)
        return call.read(status, body)

    async def backup(self, path: str | os.PathLike, *, timeout: float = BACKUP_TIMEOUT) -> BackupInfo:
        """Write a backup of the whole store (mqd on SQLite) to ``path``, checked, and there
        whole or not at all (see mq.backups). mqd answers once its copy is made and checked:
        ``timeout`` seconds may pass before it does, or between two parts of it."""
        timeout = aiohttp.ClientTimeout(sock_connect=self.timeout, sock_read=timeout)
        try:
            with BackupFile(path) as backup:  # first: a file that cannot be written costs mqd nothing
                async with self.session().get(self._base + "/backup", timeout=timeout) as response:
                    if response.status != 200:
                        raise refusal(response.status, await response.read())
                    async for chunk in response.content.iter_chunked(BACKUP_CHUNK_BYTES):
                        await asyncio.to_thread(backup.write, chunk)
                    headers = {name.lower(): value for name, value in response.headers.items()}
                    return await asyncio.to_thread(backup.finish, headers)
        except TimeoutError:
            raise Timeout(
                f"mqd at {self.url} sent nothing of the backup for {timeout.sock_read:g} s"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from None

    # -- streams ---------------------------------------------------------------------------------

    def publisher(self, *, window: int = 1000, keys: bool = True) -> Publisher:
        """A publisher on a stream of its own: ``await publisher.send(queue, content)`` returns
        the id once the message is durable, with up to ``window`` in flight (see publisher.py).
        ``keys=False`` sends messages without the idempotency keys that make a resend after a
        reconnect harmless: cheaper for mqd to store, at the price of a possible duplicate."""
        return Publisher(self, window=window, keys=keys)

    def consume(self, queue: str, *, prefetch: int = 100, lease: float | None = 30.0) -> Consumer:
        """Messages of ``queue`` as they arrive, ``prefetch`` at most owed at a time; leased for
        ``lease`` seconds (ack each), or removed as delivered with ``lease=None``."""
        return Consumer(self, queue, prefetch=prefetch, lease=lease)


def _base_of(url: str) -> tuple[str, str | None]:
    """(the base URL requests go to, the unix socket's path or None)."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise BadUrl(f"{url!r} names no socket: use unix:/path/to/mqd.sock")
        return "http://localhost", path
    if not url.startswith(("http://", "https://")):
        raise BadUrl(f"cannot use {url!r}: give http://host:port or unix:/path/to/socket")
    return url, None


__all__ = ["AsyncClient", "MqError"]
