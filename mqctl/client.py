"""A small synchronous HTTP/1.1 client for mqd: one method per endpoint.

Why not http.client or urllib: importing them costs ~20 ms, more than everything else a single
``mqctl send`` does (even socket.py and urllib.parse cost 4.5 ms together); a queue daemon's
replies (JSON with a Content-Length, or 204) need only a few lines of HTTP. Connections are kept
alive, so a batch upload is one connection.

Errors are ``ClientError`` subclasses carrying one sentence; the CLI maps them to exit codes.
"""

from __future__ import annotations

import _socket  # the C module: socket.py and urllib cost more to import than a request takes
import contextlib
import json
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


class _Connection:
    """One HTTP/1.1 connection: send a request, read a response, keep the connection alive."""

    def __init__(self, family: int, address: Any) -> None:
        self.sock = _socket.socket(family, _socket.SOCK_STREAM)
        self.buffer = b""
        self.sock.settimeout(CONNECT_TIMEOUT)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        if family != _socket.AF_UNIX:
            self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """Whether the other end has closed this idle connection (or it broke): peek, never block."""
        if self.buffer:
            return True  # bytes nobody asked for: the connection is out of step
        self.sock.settimeout(0.0)  # a timeout would make recv wait for data; this must not
        try:
            return self.sock.recv(1, _socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False  # nothing to read: alive and idle
        except OSError:
            return True

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _EmptyReply("the connection was closed")
        self.buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._fill()
        found, self.buffer = self.buffer[: end + len(marker)], self.buffer[end + len(marker) :]
        return found

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def exchange(self, message: bytes, timeout: float, method: str) -> tuple[int, dict[str, str], bytes]:
        self.sock.settimeout(timeout)
        self.sock.sendall(message)
        return self.read_response(method)

    def read_response(self, method: str) -> tuple[int, dict[str, str], bytes]:
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        parts = head[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _NotHttp(head[0][:80])
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if status in (204, 304) or method == "HEAD":
            body = b""
        elif "content-length" in headers:
            body = self._read_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self._read_to_end()
            headers["connection"] = "close"
        return status, headers, body

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
            chunks.append(self._read_exactly(size))
            self._read_until(b"\r\n")
        while self._read_until(b"\r\n") != b"\r\n":
            pass
        return b"".join(chunks)

    def _read_to_end(self) -> bytes:
        try:
            while True:
                self._fill()
        except _EmptyReply:
            body, self.buffer = self.buffer, b""
            return body


class Client:
    """Talks to one daemon at ``url``: ``http://host:port`` or ``unix:/path/to/socket``."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = REPLY_MARGIN
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout  # seconds a reply may take, beyond any wait the request asks for
        self._address = _parse_url(self.url)
        self._connection: _Connection | None = None
        self._aborted = False
        # The reply to a request cut off by Ctrl-C, if it had arrived: messages mqd handed over
        # that the caller never saw, so that it can give them back.
        self.interrupted_reply: Response | None = None

    def abort(self) -> None:
        """From another thread: make the request in progress (and any later one) fail at once."""
        self._aborted = True
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(_socket.SHUT_RDWR)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

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
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._address[2]}\r\n"
        if payload is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        message = (head + "\r\n").encode() + (payload or b"")
        timeout = wait + self.timeout
        if self._aborted:
            raise DaemonUnreachable(self.url, "interrupted")
        if self._connection is not None and self._connection.closed_by_peer():
            self.close()  # the daemon closed an idle connection: use a fresh one
        if self._connection is None:
            try:
                self._connection = _Connection(self._address[0], self._address[1])
            except OSError as exc:  # refused, no such socket, no answer to the connection
                raise DaemonUnreachable(self.url, _reason(exc)) from None
        try:
            status, reply_headers, reply = self._connection.exchange(message, timeout, method)
        except KeyboardInterrupt:
            self.interrupted_reply = self._salvage(method)
            self.close()  # mqd sees us leave, and keeps what it had not handed over yet
            raise
        except TimeoutError:
            self.close()
            raise DaemonTimeout(f"mqd at {self.url} did not answer within {timeout:g} seconds") from None
        except (OSError, _EmptyReply) as exc:
            # Never resent: the daemon may have acted on it before the connection broke (a send
            # stored, a receive taken), and a second copy would be a duplicate.
            self.close()
            raise DaemonUnreachable(self.url, _reason(exc)) from None
        except _NotHttp as exc:
            self.close()
            raise ClientError(f"{self.url} does not answer like mqd (it said {exc})") from None
        if reply_headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, reply_headers, reply)

    def _salvage(self, method: str) -> Response | None:
        """A reply already arriving when the request was interrupted (within a moment)."""
        try:
            self._connection.sock.settimeout(SALVAGE_SECONDS)
            return Response(*self._connection.read_response(method))
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


class _EmptyReply(Exception):
    pass


class _NotHttp(Exception):
    pass


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """Percent-encode a path segment (what urllib.parse.quote(text, safe="") does)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def _queue_path(name: str, rest: str = "") -> str:
    return "/queues/" + quote(name) + rest


def _parse_url(url: str) -> tuple[int, Any, str]:
    """(address family, socket address, Host header) for an mqd URL."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise BadUrl(f"{url!r} names no socket: use unix:/path/to/mqd.sock")
        return _socket.AF_UNIX, path, "localhost"
    if not url.startswith("http://"):
        raise BadUrl(f"cannot use {url!r}: give http://host:port or unix:/path/to/socket")
    authority = url[len("http://") :].split("/", 1)[0]
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.lstrip(":")
        family = _socket.AF_INET6
    else:
        host, _, port = authority.partition(":")
        family = _socket.AF_INET
    try:
        port_number = int(port) if port else 80
    except ValueError:
        raise BadUrl(f"cannot use {url!r}: the port is not a number") from None
    if family == _socket.AF_INET and host not in ("", "localhost") and not host.replace(".", "").isdigit():
        family = _socket.AF_UNSPEC  # a host name: resolved at connect time
    if family == _socket.AF_UNSPEC:
        try:
            family, _, _, _, address = _socket.getaddrinfo(host, port_number, 0, _socket.SOCK_STREAM)[0]
        except OSError:
            raise DaemonUnreachable(url, "its host name does not resolve") from None
        return family, address, authority
    return family, (host or "127.0.0.1", port_number), authority


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, TimeoutError):
        return "no answer to the connection"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
