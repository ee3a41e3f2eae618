"""Running the daemon: open the store, listen, tell systemd, serve until SIGTERM or SIGINT,
then shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal

from aiohttp import web

from . import __version__, pidfile
from .app import RUNNER_OPTIONS, create_app
from .appkeys import BROKER
from .config import Config
from .errors import MqError
from .logs import counted
from .systemd import Notifier

log = logging.getLogger("mqd")

STATUS_INTERVAL_SECONDS = 5.0


class _ProtocolLog(logging.LoggerAdapter):
    """aiohttp's log for requests its HTTP parser refuses (a bad header, one too long, too
    many): aiohttp answers them itself, 400 in plain text (JSON would need its private
    classes); here they become one warning line, the client's fault, not an error with a
    traceback. Anything else is logged as aiohttp logs it."""

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if exc is not None and getattr(exc, "code", 500) < 500:
            reason = (getattr(exc, "message", "") or str(exc)).strip().splitlines()[0].rstrip(":")
            self.warning("refused a malformed HTTP request: %s", reason)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


def _raise_file_limit() -> None:
    """Each connection (and each long-poll) holds a descriptor: use all the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _listen_error(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the address is already in use (is another mqd running?)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied"
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def _start_sites(runner: web.AppRunner, config: Config) -> str:
    """Listen where the configuration says; returns the URL clients should use."""
    url = ""
    if config.unix is not None:
        with contextlib.suppress(FileNotFoundError):
            if config.unix.is_socket():
                config.unix.unlink()  # left by a daemon that did not exit cleanly
        previous = os.umask(0o117)  # the socket is born 0660: owner and group only
        try:
            await web.UnixSite(runner, str(config.unix)).start()
        except OSError as exc:
            raise OSError(exc.errno, _listen_error(str(config.unix), exc)) from None
        finally:
            os.umask(previous)
        url = f"unix:{config.unix}"
    if config.tcp:
        try:
            await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
        except OSError as exc:
            raise OSError(exc.errno, _listen_error(f"{config.host}:{config.port}", exc)) from None
        port = next(address[1] for address in runner.addresses if isinstance(address, tuple))
        url = Config(host=config.host, port=port).url
    return url


def _summary(totals) -> str:
    return f"{counted(totals.queues, 'queue')}, {counted(totals.messages, 'message')}"


async def _report(app: web.Application, notifier: Notifier) -> None:
    """Keep systemd's STATUS line current and feed its watchdog while the store answers."""
    interval = min(STATUS_INTERVAL_SECONDS, notifier.watchdog_interval or STATUS_INTERVAL_SECONDS)
    while True:
        try:
            totals = await asyncio.wait_for(app[BROKER].totals(), timeout=interval)
        except (TimeoutError, MqError) as exc:
            log.warning("the store did not answer a health check: %s", exc or "timed out")
        else:
            notifier.status(_summary(totals))
            if notifier.watchdog_interval:
                notifier.watchdog()
        await asyncio.sleep(interval)


async def serve(config: Config) -> int:
    """Run until a stop signal; returns the process exit status."""
    _raise_file_limit()
    notifier = Notifier()
    app = create_app(config)
    runner = web.AppRunner(
        app,
        **RUNNER_OPTIONS,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=config.keepalive_timeout,
        shutdown_timeout=config.shutdown_timeout,
        max_line_size=config.max_header_bytes,
        max_field_size=config.max_header_bytes,
        max_headers=config.max_headers,
        logger=_ProtocolLog(logging.getLogger("mqd.http"), {}),
    )
    try:
        await runner.setup()
    except MqError as exc:
        log.error("%s", exc)
        return 1
    try:
        url = await _start_sites(runner, config)
    except OSError as exc:
        log.error("%s", exc.strerror)
        await runner.cleanup()
        return 1
    if config.pidfile is not None:
        pidfile.write(config.pidfile, url)
    store = app[BROKER].store
    if store.kind == "sqlite":
        where = f"SQLite in {store.location()}, fsync {config.fsync}"
    else:
        where = f"PostgreSQL at {store.location()}"
    log.info("mqd %s listening on %s (store: %s)", __version__, url, where)
    totals = await app[BROKER].totals()
    notifier.ready(_summary(totals))
    reporter = asyncio.create_task(_report(app, notifier)) if notifier.enabled else None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
        notifier.stopping()
        if reporter is not None:
            reporter.cancel()
        await runner.cleanup()
    finally:
        if config.pidfile is not None:
            pidfile.remove(config.pidfile)
        if config.unix is not None:
            with contextlib.suppress(OSError):
                config.unix.unlink()
        notifier.close()
    log.info("stopped")
    return 0
