"""``mqd`` / ``python -m mqd``: parse the options, build the configuration, run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from . import __version__, config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqd",
        description="mq's daemon: durable named FIFO queues over an HTTP JSON API.",
        epilog="Every option can also be set in the environment as MQD_<OPTION> (e.g. MQD_PORT); "
        "options win over the environment.",
    )
    add = parser.add_argument
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", help="TCP port to listen on; 0 picks a free one (default 8000)")
    add("--data-dir", help="directory of the store, created if missing (default ./data)")
    add(
        "--fsync",
        help="always: acknowledge a write only once it is on disk (default); "
        "off: no fsync, survives a crash of mqd but not of the machine",
    )
    add("--log-level", help="debug, info (default), warning or error")
    add("--max-body-bytes", help="largest request body accepted (default 1048576)")
    add("--keepalive-timeout", help="seconds an idle connection stays open (default 60)")
    add("--max-waiters", help="most long-poll receivers waiting at once (default 4096)")
    add("--shutdown-timeout", help="seconds to finish requests in flight on shutdown (default 10)")
    add("--pidfile", help="write the pid here (and the URL beside it) while serving")
    add("--version", action="version", version=f"mqd {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    options = vars(_parser().parse_args(argv))
    try:
        settings = config.load(options)
    except config.ConfigError as exc:
        print(f"mqd: error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(asyncio.run(_serve(settings)))


async def _serve(settings: config.Config) -> int:
    from .server import serve  # aiohttp is imported only once the options are known to be good

    return await serve(settings)


if __name__ == "__main__":
    main()
