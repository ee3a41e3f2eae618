"""The only place that wires the daemon together: configuration, store, broker and routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import api, console, openapi, protocol, streams
from .appkeys import BROKER, CLOCK, CONFIG, METRICS, STORE, STREAMS
from .broker import Broker
from .config import Config
from .metrics import Metrics
from .model import Clock
from .security import RequestGuard
from .store.base import Store
from .store.sqlite import SQLiteStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_store(config: Config) -> Store:
    if config.store is not None:
        from .store.postgres import PostgresStore  # asyncpg only for those who use it

        return PostgresStore(config.store)
    return SQLiteStore(
        config.data_dir,
        fsync=config.fsync == "always",
        min_free_bytes=config.min_free_bytes,
        repair=config.repair,
    )


# What the runner serving the application must be given (server.py; pytest-aiohttp's test server
# does the same by default): a handler whose client disconnects is cancelled, so a long-poll
# leaves its line at once instead of taking the next message for nobody.
RUNNER_OPTIONS = {"handler_cancellation": True}


def create_app(config: Config, *, clock: Clock = time.time) -> web.Application:
    """The application; its store is opened when the app starts and closed when it stops.
    ``clock`` is the broker's: the one time every store is told."""
    metrics = Metrics()
    front_door = _front_door(RequestGuard(config), metrics)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[front_door])
    app[CONFIG] = config
    app[METRICS] = metrics
    app[CLOCK] = clock
    app[STREAMS] = set()
    app.cleanup_ctx.append(_store_and_broker)
    app.on_shutdown.append(streams.close_all)  # first: what streams held goes back to the store
    app.on_shutdown.append(_answer_waiting_receivers)
    api.add_routes(app)
    app.router.add_get(protocol.STREAM_PATH, streams.open_stream, allow_head=False, name="openStream")
    openapi.add_route(app, config.max_wait)
    console.add_routes(app, config.console)
    return app


def _front_door(guard: RequestGuard, metrics: Metrics):
    """The one middleware every request passes: the guard lets it in, errors become replies,
    and the result is counted. One frame instead of three: it runs for every message."""

    @web.middleware
    async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            guard.check(request)
            response = await handler(request)
        except Exception as exc:
            response = api.response_for_error(request, exc)
        metrics.observe_request(request, response.status, time.perf_counter() - started)
        return response

    return front_door


async def _store_and_broker(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = create_store(config)
    store.observe_commits(app[METRICS].observe_commit)
    await store.open()
    app[STORE] = store
    app[BROKER] = Broker(store, max_waiters=config.max_waiters, clock=app[CLOCK])
    expiring = asyncio.create_task(app[BROKER].keep_expiring())
    try:
        yield
    finally:
        expiring.cancel()
        await asyncio.gather(expiring, return_exceptions=True)
        app[BROKER].close()
        await app[BROKER].finish_returns()
        await store.close()


async def _answer_waiting_receivers(app: web.Application) -> None:
    """On shutdown, long-polls answer 204 at once instead of holding the exit up."""
    if BROKER in app:
        app[BROKER].close()
