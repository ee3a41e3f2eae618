"""The synchronous client: every operation of mqd over HTTP, through the standard library's
http.client (nothing beyond the standard library: mqctl is built on it).

Connections are kept alive, so many requests are one connection; a request is never sent twice
(once sent, mqd may have acted on it). A unix socket works as a URL: ``unix:/run/mqd.sock``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mqd.protocol import DEFAULT_URL

from .errors import BadUrl, ConnectionFailed, MqError, Timeout
from .messages import decode
from .operations import Call, Operations, refusal

if TYPE_CHECKING:
    from .backups import BackupInfo

CONNECT_TIMEOUT = 5.0
REPLY_MARGIN = 30.0  # seconds a reply may take beyond any wait the request asked for
BACKUP_CHUNK_BYTES = 1 << 20
BACKUP_TIMEOUT = 3600.0  # mqd copies and checks the whole store before its reply begins


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return decode(self.body) if self.body else None


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (mqd --unix): http.client's connection, connected elsewhere."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed this idle connection (or it broke): peek, never block."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # nothing to read: alive and idle
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


class Client(Operations):
    """Talks to one mqd at ``url`` (``http://host:port`` or ``unix:/path/to/socket``), with its
    access token if it has one; use it as a context manager, or ``close()`` it. It keeps one
    connection: give each thread a Client of its own."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = REPLY_MARGIN
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout  # seconds a reply may take, beyond any wait the request asks for
        self._connect = _connector(self.url)
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _connected(self) -> http.client.HTTPConnection:
        """The kept-alive connection, or a new one if there is none or mqd closed it."""
        if self._connection is not None and (
            self._connection.sock is None or _closed_by_peer(self._connection.sock)
        ):
            self.close()  # the daemon closed an idle connection: use a fresh one
        if self._connection is None:
            connection = self._connect(CONNECT_TIMEOUT)
            try:
                connection.connect()
            except OSError as exc:  # refused, no such socket, no answer, a name that does not resolve
                connection.close()
                raise ConnectionFailed(self.url, _reason(exc)) from None
            self._connection = connection
        return self._connection

    def backup(self, path: str | os.PathLike, *, timeout: float = BACKUP_TIMEOUT) -> BackupInfo:
        """Write a backup of the whole store (mqd on SQLite) to ``path``, checked, and there
        whole or not at all (see mq.backups). mqd answers once its copy is made and checked:
        ``timeout`` seconds may pass before it does, or between two parts of it."""
        from .backups import BackupFile

        with BackupFile(path) as backup:  # first: a file that cannot be written costs mqd nothing
            try:
                with self._exchange(timeout):
                    reply = self._sent("GET", "/backup", None, timeout)
                if reply.status != 200:
                    with self._exchange(timeout):
                        data = reply.read()
                    raise refusal(reply.status, data)
                while True:
                    with self._exchange(timeout):
                        chunk = reply.read(BACKUP_CHUNK_BYTES)
                    if not chunk:
                        return backup.finish({k.lower(): v for k, v in reply.getheaders()})
                    backup.write(chunk)
            except BaseException:
                self.close()  # the reply may be half read: the next call needs a fresh connection
                raise

    def _sent(self, method: str, path: str, body: bytes | None, timeout: float) -> http.client.HTTPResponse:
        """Send one request and read its status and headers. A kept-alive connection the daemon
        has closed is replaced before the request is sent; once sent, it is never sent again."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connected()
        connection.sock.settimeout(timeout)
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse()

    def _request(self, method: str, path: str, body: bytes | None, *, wait: float = 0.0) -> Response:
        """One request and its whole reply."""
        timeout = wait + self.timeout
        with self._exchange(timeout):
            reply = self._sent(method, path, body, timeout)
            data = reply.read()
        if reply.will_close:
            self.close()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)

    @contextlib.contextmanager
    def _exchange(self, timeout: float) -> Iterator[None]:
        """What can go wrong talking to mqd, as mq's errors."""
        try:
            yield
        except KeyboardInterrupt:
            self.close()  # mqd sees us leave, and puts back what it took for us
            raise
        except TimeoutError:
            self.close()
            seconds = f"{timeout:g} second" + ("" if timeout == 1 else "s")
            raise Timeout(f"mqd at {self.url} did not answer within {seconds}") from None
        except http.client.BadStatusLine as exc:
            self.close()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise ConnectionFailed(self.url, "the connection was closed") from None
            raise MqError(f"{self.url} does not answer like mqd (it said {str(exc)[:80]!r})") from None
        except (OSError, http.client.HTTPException) as exc:
            # Never resent: the daemon may have acted on it before the connection broke (a send
            # stored, a receive taken), and a second copy would be a duplicate.
            self.close()
            raise ConnectionFailed(self.url, _reason(exc)) from None

    def publisher(self, *, window: int = 1000, keys: bool = True):
        """A publisher on a stream (mq.threaded.Publisher): sends with a window in flight (see
        AsyncClient.publisher for ``keys``)."""
        from .threaded import Publisher

        return Publisher(self.url, self.token, window=window, keys=keys)

    def consume(self, queue: str, *, prefetch: int = 100, lease: float | None = 30.0):
        """Messages of ``queue`` pushed on a stream (mq.threaded.Consumer), ``prefetch`` owed at
        most; leased for ``lease`` seconds (ack each), or removed as delivered with None."""
        from .threaded import Consumer

        return Consumer(self.url, queue, self.token, prefetch=prefetch, lease=lease)

    def _call(self, call: Call) -> Any:
        response = self._request(call.method, call.path, call.body, wait=call.wait)
        if response.status >= 400:
            raise refusal(response.status, response.body)
        return call.read(response.status, response.body)


def _connector(url: str):
    """A function making an http.client connection to ``url`` (given a timeout), for mqd URLs:
    http://host:port or unix:/path. BadUrl for anything else."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise BadUrl(f"{url!r} names no socket: use unix:/path/to/mqd.sock")
        return lambda timeout: _UnixConnection(path, timeout)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise BadUrl(f"cannot use {url!r}: give http://host:port or unix:/path/to/socket")
    try:
        port = parts.port or 80
    except ValueError:
        raise BadUrl(f"cannot use {url!r}: the port is not a number") from None
    return lambda timeout: http.client.HTTPConnection(parts.hostname, port, timeout=timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, TimeoutError):
        return "no answer to the connection"
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
