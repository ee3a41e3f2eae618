"""Running the daemon: open the store, listen, serve until SIGTERM or SIGINT, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import signal

from aiohttp import web

from . import __version__, pidfile
from .app import create_app
from .config import Config
from .errors import MqError

log = logging.getLogger("mqd")


def _raise_file_limit() -> None:
    """Each connection (and each long-poll) holds a descriptor: use all the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _listen_error(config: Config, exc: OSError) -> str:
    where = f"{config.host}:{config.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the address is already in use (is another mqd running?)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied"
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def serve(config: Config) -> int:
    """Run until a stop signal; returns the process exit status."""
    _raise_file_limit()
    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        access_log=None,
        keepalive_timeout=config.keepalive_timeout,
        shutdown_timeout=config.shutdown_timeout,
    )
    try:
        await runner.setup()
    except MqError as exc:
        log.error("%s", exc)
        return 1
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("%s", _listen_error(config, exc))
        await runner.cleanup()
        return 1
    port = runner.addresses[0][1]
    url = Config(host=config.host, port=port).url
    if config.pidfile is not None:
        pidfile.write(config.pidfile, url)
    log.info("mqd %s listening on %s (data in %s, fsync %s)", __version__, url, config.data_dir, config.fsync)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
        await runner.cleanup()
    finally:
        if config.pidfile is not None:
            pidfile.remove(config.pidfile)
    log.info("stopped")
    return 0
