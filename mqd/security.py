"""Who may talk to mqd: the access token, and the guards that keep web pages out.

A browser will happily send requests to 127.0.0.1 on behalf of any page the user visits: an
``<img src>`` could drain a queue (a receive is a GET that consumes), a form could fill one, and
DNS rebinding could read the replies. Browsers mark such requests (``Sec-Fetch-Site``,
``Origin``) and must name the host they think they talk to (``Host``); curl, scripts and mqctl
send none of these markers and are unaffected.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Config, is_loopback
from .errors import Forbidden, Unauthorized

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_is_loopback(host_header: str) -> bool:
    host = host_header[1:].partition("]")[0] if host_header.startswith("[") else host_header.rsplit(":", 1)[0]
    host = host.lower().rstrip(".")
    return is_loopback(host) or host.endswith(".localhost")  # RFC 6761: *.localhost is loopback


def _over_tcp(request: web.Request) -> bool:
    return request.transport is not None and isinstance(request.transport.get_extra_info("sockname"), tuple)


def browser_guard(config: Config):
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise Forbidden("Requests made by web pages of other sites are refused.")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.headers.get('Host', '')}":
            raise Forbidden(f"Requests from the web origin {origin} are refused.")
        host = request.headers.get("Host")
        if config.loopback_only and host is not None and _over_tcp(request) and not _host_is_loopback(host):
            raise Forbidden(
                f"Host {host} is not a loopback name; mqd listens on loopback only (DNS rebinding?)."
            )
        return await handler(request)

    return guard


def token_auth(token: str):
    expected = token.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("This mqd needs an access token: send Authorization: Bearer <token>.")
        return await handler(request)

    return authenticate


def middlewares(config: Config) -> list:
    """The guards in the order they apply, after error mapping: browser first, then the token."""
    guards = [browser_guard(config)]
    if config.token is not None:
        guards.append(token_auth(config.token))
    return guards
