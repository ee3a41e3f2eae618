"""The only place that wires the daemon together: configuration, store, broker and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from . import api, openapi, security
from .broker import Broker
from .config import Config
from .keys import BROKER, CONFIG, METRICS, STORE
from .metrics import Metrics
from .store.base import Store
from .store.sqlite import SQLiteStore


def create_store(config: Config) -> Store:
    return SQLiteStore(
        config.data_dir,
        fsync=config.fsync == "always",
        min_free_bytes=config.min_free_bytes,
        repair=config.repair,
    )


def create_app(config: Config) -> web.Application:
    """The application; its store is opened when the app starts and closed when it stops."""
    metrics = Metrics()
    middlewares = [metrics.middleware(), api.error_middleware, *security.middlewares(config)]
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[CONFIG] = config
    app[METRICS] = metrics
    app.cleanup_ctx.append(_store_and_broker)
    app.on_shutdown.append(_answer_waiting_receivers)
    api.add_routes(app)
    openapi.add_route(app, config.max_wait)
    return app


async def _store_and_broker(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = create_store(config)
    store.observe_commits(app[METRICS].observe_commit)
    await store.open()
    app[STORE] = store
    app[BROKER] = Broker(store, max_waiters=config.max_waiters)
    try:
        yield
    finally:
        app[BROKER].close()
        await store.close()


async def _answer_waiting_receivers(app: web.Application) -> None:
    """On shutdown, long-polls answer 204 at once instead of holding the exit up."""
    if BROKER in app:
        app[BROKER].close()
