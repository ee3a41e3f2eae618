"""A synchronous client for mqd over the standard library's http.client: one method per endpoint.

Connections are kept alive, so a batch upload is one connection. Errors are ``ClientError``
subclasses carrying one sentence (and, from mqd, its error code); the CLI maps them to exit
statuses by code, never by the sentence.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from typing import Any

from mqd.protocol import DEFAULT_URL

CONNECT_TIMEOUT = 5.0
REPLY_MARGIN = 30.0  # seconds a reply may take beyond any wait the request asked for
SALVAGE_SECONDS = 0.2  # how long an interrupted request waits for a reply already on its way


class ClientError(Exception):
    """Something went wrong talking to mqd; the message is one sentence for a person."""


class DaemonUnreachable(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"mqd is not running at {url} ({reason})")
        self.url = url
        self.reason = reason


class BadUrl(ClientError):
    """The URL given for mqd is not one mqctl can use (a usage error)."""


class DaemonTimeout(ClientError):
    pass


class ApiError(ClientError):
    """mqd answered with an error status; ``message`` is its own sentence, ``body`` its whole
    reply (parsed, when it was JSON)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body
        # What went wrong, for programs (mqd.protocol.ERROR_CODES); None if mqd did not say.
        self.code = body.get("code") if isinstance(body, dict) else None


class JsonNumber(float):
    """A JSON number that keeps the text it was written as: mqd returns a message's content
    exactly as it was sent (``0.1000000000000000000001``, ``1e-400``), and printing it must not
    round it through a double. Arithmetic sees the nearest float."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> JsonNumber:
        number = float.__new__(cls, text)
        number.text = text
        return number


LONGEST_INTEGER = 4000  # digits Python converts to int (longer ones keep their text only)


def _integer(text: str) -> int | JsonNumber:
    return int(text) if len(text) <= LONGEST_INTEGER else JsonNumber(text)


def decode(text: str | bytes) -> Any:
    """JSON from mqd, every number kept as written (see JsonNumber)."""
    return json.loads(text, parse_float=JsonNumber, parse_int=_integer)


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


class Client:
    """Talks to one daemon at ``url``: ``http://host:port`` or ``unix:/path/to/socket``, through
    the standard library's http.client, keeping the connection alive between requests."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = REPLY_MARGIN
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout  # seconds a reply may take, beyond any wait the request asks for
        self._connect = _connector(self.url)
        self._connection: http.client.HTTPConnection | None = None
        self._aborted = False
        # The reply to a request cut off by Ctrl-C, if it had arrived: messages mqd handed over
        # that the caller never saw, so that it can give them back.
        self.interrupted_reply: Response | None = None

    def abort(self) -> None:
        """From another thread: make the request in progress (and any later one) fail at once."""
        self._aborted = True
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

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
                raise DaemonUnreachable(self.url, _reason(exc)) from None
            self._connection = connection
        return self._connection

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
        wait: float = 0.0,
    ) -> Response:
        """One request. A kept-alive connection the daemon has closed is replaced before the
        request is sent; once sent, a request is never sent again."""
        payload = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
        all_headers = dict(headers or {})
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        timeout = wait + self.timeout
        if self._aborted:
            raise DaemonUnreachable(self.url, "interrupted")
        connection = self._connected()
        try:
            connection.sock.settimeout(timeout)
            connection.request(method, path, body=payload, headers=all_headers)
            reply = connection.getresponse()
            data = reply.read()
        except KeyboardInterrupt:
            self.interrupted_reply = self._salvage(method)
            self.close()  # mqd sees us leave, and keeps what it had not handed over yet
            raise
        except TimeoutError:
            self.close()
            seconds = f"{timeout:g} second" + ("" if timeout == 1 else "s")
            raise DaemonTimeout(f"mqd at {self.url} did not answer within {seconds}") from None
        except http.client.BadStatusLine as exc:
            self.close()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise DaemonUnreachable(self.url, "the connection was closed") from None
            raise ClientError(f"{self.url} does not answer like mqd (it said {str(exc)[:80]!r})") from None
        except (OSError, http.client.HTTPException) as exc:
            # Never resent: the daemon may have acted on it before the connection broke (a send
            # stored, a receive taken), and a second copy would be a duplicate.
            self.close()
            raise DaemonUnreachable(self.url, _reason(exc)) from None
        if reply.will_close:
            self.close()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)

    def _salvage(self, method: str) -> Response | None:
        """A reply already arriving when the request was interrupted (within a moment)."""
        try:
            sock = self._connection.sock
            sock.settimeout(SALVAGE_SECONDS)
            reply = http.client.HTTPResponse(sock, method=method)
            reply.begin()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        except Exception:
            return None

    def _call(self, method: str, path: str, body: Any = None, **options: Any) -> Response:
        response = self.request(method, path, body, **options)
        if response.status >= 400:
            try:
                body = response.json()
                message = body["error"]
            except (ValueError, KeyError, TypeError):
                body, message = None, f"mqd answered {response.status} {response.body[:200]!r}"
            raise ApiError(response.status, message.rstrip("."), body)
        return response

    # -- endpoints -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status").json()

    def metrics(self) -> str:
        return self._call("GET", "/metrics").body.decode()

    def create_queue(self, name: str, **settings: Any) -> tuple[dict[str, Any], bool]:
        response = self._call("POST", "/queues", {"name": name, **settings})
        return response.json(), response.status == 201

    def list_queues(self) -> list[dict[str, Any]]:
        return self._call("GET", "/queues").json()["queues"]

    def queue(self, name: str) -> dict[str, Any]:
        return self._call("GET", _queue_path(name)).json()

    def delete_queue(self, name: str) -> None:
        self._call("DELETE", _queue_path(name))

    def purge(self, name: str) -> int:
        return self._call("DELETE", _queue_path(name, "/messages")).json()["purged"]

    def redrive(self, name: str) -> dict[str, Any]:
        return self._call("POST", _queue_path(name, "/redrive")).json()

    def send(
        self,
        name: str,
        content: Any = None,
        *,
        json_text: str | None = None,
        delay: float = 0,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Send ``content`` (any JSON value), or ``json_text``: the content's JSON text, which mqd
        keeps exactly as written (numbers included). Check that it is one JSON value first."""
        body = '{"content":' + (json_text if json_text is not None else json.dumps(content))
        if delay:
            body += f',"delay":{delay!r}'
        if key is not None:
            body += ',"key":' + json.dumps(key)  # in the body: any Unicode key travels as is
        raw = (body + "}").encode("utf-8")
        return self._call("POST", _queue_path(name, "/messages"), raw_body=raw).json()

    def send_batch(self, name: str, encoded_messages: list[bytes]) -> list[int]:
        """Send messages already encoded as JSON objects (``{"content": ...}``), all or nothing."""
        raw = b'{"messages":[' + b",".join(encoded_messages) + b"]}"
        return self._call("POST", _queue_path(name, "/messages"), raw_body=raw).json()["ids"]

    def receive(
        self, name: str, *, count: int | None = None, wait: float = 0, lease: float | None = None
    ) -> list[dict[str, Any]]:
        """Messages received (removed, or leased with ``lease``); [] when there were none."""
        query = []
        if count is not None:
            query.append(f"count={count}")
        if wait:
            query.append(f"wait={wait:g}")
        if lease is not None:
            query.append(f"lease={lease:g}")
        path = _queue_path(name, "/messages") + ("?" + "&".join(query) if query else "")
        response = self._call("GET", path, wait=wait)
        if response.status == 204:
            return []
        body = response.json()
        return body["messages"] if count is not None else [body]

    def peek(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        response = self._call("GET", _queue_path(name, f"/peek?count={count}"))
        return [] if response.status == 204 else response.json()["messages"]

    def ack(self, name: str, receipt: str) -> None:
        self._call("DELETE", _queue_path(name, "/messages/" + quote(receipt)))

    def release(self, name: str, receipt: str, delay: float = 0) -> None:
        body = {"delay": delay} if delay else None
        self._call("POST", _queue_path(name, f"/messages/{quote(receipt)}/release"), body)

    def extend(self, name: str, receipt: str, lease: float) -> dict[str, Any]:
        path = _queue_path(name, f"/messages/{quote(receipt)}/extend")
        return self._call("POST", path, {"lease": lease}).json()


def quote(text: str) -> str:
    """Percent-encode a path segment."""
    return urllib.parse.quote(text, safe="")


def _queue_path(name: str, rest: str = "") -> str:
    return "/queues/" + quote(name) + rest


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
