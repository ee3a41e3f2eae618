"""Who may talk to mqd: the access token, and the guards that keep web pages out.

A browser will happily send requests to 127.0.0.1 on behalf of any page the user visits: an
``<img src>`` could drain a queue (a receive is a GET that consumes), a form could fill one, and
DNS rebinding could read the replies. Browsers mark such requests (``Sec-Fetch-Site``,
``Origin``) and must name the host they think they talk to (``Host``); curl, scripts and mqctl
send none of these markers and are unaffected.
"""

from __future__ import annotations

import functools
import hmac

from aiohttp import web

from . import console, contract
from .config import Config, is_loopback
from .errors import Forbidden, Unauthorized


@functools.lru_cache(maxsize=256)
def _host_is_loopback(host_header: str) -> bool:
    if host_header.startswith("["):
        host, bracket, _ = host_header[1:].partition("]")
        if not bracket:
            return False  # "[::1" is no host at all
    else:
        host = host_header.rsplit(":", 1)[0]
    host = host.lower().rstrip(".")
    return is_loopback(host) or host.endswith(".localhost")  # RFC 6761: *.localhost is loopback


def _over_tcp(request: web.Request) -> bool:
    return request.transport is not None and isinstance(request.transport.get_extra_info("sockname"), tuple)


def _from_a_browser(request: web.Request) -> bool:
    """Browsers mark every request (Sec-Fetch-Site: Chromium, Firefox, Safari 16.4+) and name the
    origin of every write; curl, scripts and mqctl send neither."""
    return "Sec-Fetch-Site" in request.headers or "Origin" in request.headers


class RequestGuard:
    """Checks every request before it reaches a handler; raises Forbidden or Unauthorized."""

    def __init__(self, config: Config) -> None:
        self._loopback_only = config.loopback_only
        self._token = config.token.encode() if config.token is not None else None
        self._browsers_only_read = config.console == "read-only"

    def check(self, request: web.Request) -> None:
        headers = request.headers
        if headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise Forbidden("Requests made by web pages of other sites are refused.")
        origin = headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{headers.get('Host', '')}":
            raise Forbidden(f"Requests from the web origin {origin} are refused.")
        host = headers.get("Host")
        if self._loopback_only and host is not None and not _host_is_loopback(host) and _over_tcp(request):
            raise Forbidden(
                f"Host {host} is not a loopback name; mqd listens on loopback only (DNS rebinding?)."
            )
        route = request.match_info.route.name
        if route in console.ROUTE_NAMES:
            return  # the console's files hold no data: the page asks for the token itself
        if self._browsers_only_read and route not in (None, *contract.READING) and _from_a_browser(request):
            raise Forbidden("This mqd's console is read-only: a browser may look, not change anything.")
        if self._token is not None:
            scheme, _, given = headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthorized("This mqd needs an access token: send Authorization: Bearer <token>.")
            # Header bytes that are not UTF-8 arrive as surrogates: compare the bytes as sent.
            sent = given.strip().encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(sent, self._token):
                raise Unauthorized("The access token is wrong.")
