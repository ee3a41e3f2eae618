"""``mqd`` / ``python -m mqd``: parse the options, build the configuration, run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import __version__, config, logs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqd",
        description="mq's daemon: durable named FIFO queues over an HTTP JSON API.",
        epilog="Every option can also be set in the environment as MQD_<OPTION> (MQD_PORT, MQD_DATA_DIR, "
        "...) or in the --config file; options win over the environment, which wins over the file.",
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML file with the same keys as these options (env MQD_CONFIG)")
    add("--print-config", action="store_true", help="print the resulting configuration and exit")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", help="TCP port to listen on; 0 picks a free one (default 8000)")
    add("--unix", metavar="PATH", help="also listen on this unix socket (created with mode 0660)")
    add("--no-tcp", dest="tcp", action="store_const", const="false", help="listen on --unix only")
    add("--data-dir", help="directory of the store, created if missing (default ./data)")
    add(
        "--store",
        metavar="URL",
        help="postgresql://user@host/db: keep the queues in PostgreSQL, "
        "shared by several mqd (needs pip install 'mq[postgres]'); default: SQLite in --data-dir",
    )
    add(
        "--fsync",
        help="always: acknowledge a write only once it is on disk (default); "
        "off: no fsync, survives a crash of mqd but not of the machine",
    )
    add(
        "--min-free-bytes",
        help="refuse new messages (507) while the data directory's disk has less "
        "free space than this (default 67108864: 64 MiB)",
    )
    add(
        "--verify",
        action="store_true",
        help="check the whole store (every message's checksum) and exit: 0 sound, 1 damaged, "
        "3 in use by a running mqd (SQLite), 4 cannot be read or there is no store",
    )
    add(
        "--restore",
        metavar="BACKUP",
        help="put BACKUP (made by mqctl backup) in place of the store in --data-dir, mqd stopped; "
        "the files it replaces are renamed aside. Exit 0 done, 1 the backup is damaged or none, "
        "3 a running mqd holds the directory, 4 cannot be read or written",
    )
    add(
        "--repair",
        action="store_true",
        help="start even though the store lost acknowledged messages or has "
        "damaged ones: copy the damaged files aside, set damaged messages apart, keep the rest",
    )
    add("--token-file", help="file (mode 600) holding the access token clients must send (or set MQD_TOKEN)")
    add(
        "--insecure",
        action="store_const",
        const="true",
        help="allow listening beyond loopback without an access token",
    )
    add(
        "--console",
        help="the web console at /: on (default); read-only: it, and any browser, may only look; off",
    )
    add("--log-level", help="debug, info (default), warning or error")
    add("--log-format", help="text (default) or json")
    add("--max-body-bytes", help="largest request body accepted (default 1048576)")
    add("--max-header-bytes", help="longest request line or header accepted (default 8190)")
    add("--max-headers", help="most headers in one request (default 100)")
    add("--keepalive-timeout", help="seconds an idle connection stays open (default 60)")
    add("--max-waiters", help="most long-poll receivers waiting at once (default 4096)")
    add("--max-streams", help="most streams (WebSocket connections) open at once (default 1024)")
    add("--max-wait", help="longest long-poll a receiver may ask for, in seconds (default and most: 60)")
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
    if options["print_config"]:
        print(config.describe(settings))
        return
    if options["verify"]:
        sys.exit(_verify(settings))
    if options["restore"]:
        sys.exit(_restore(settings, options["restore"]))
    logs.configure(settings.log_level, settings.log_format)
    sys.exit(_run(settings))


VERIFY_SOUND, VERIFY_DAMAGED, VERIFY_IN_USE, VERIFY_UNREADABLE = 0, 1, 3, 4


def _verify(settings: config.Config) -> int:
    """Check the configured store: 0 sound, 1 damaged, 3 held by a running mqd (SQLite: stop it
    first), 4 cannot be read (no store there, permissions, PostgreSQL unreachable). 2 is a bad
    setting."""
    from .errors import MqError

    try:
        if settings.store is not None:
            from .store.postgres import PostgresStore

            print(asyncio.run(PostgresStore(settings.store).verify()))
        else:
            from .store.sqlite import SQLiteStore

            print(SQLiteStore(settings.data_dir).verify())
    except MqError as exc:  # damaged, in use, unreadable, unreachable
        return _refused(exc)
    except ImportError:
        print("mqd: the PostgreSQL store needs asyncpg: pip install 'mq[postgres]'", file=sys.stderr)
        return VERIFY_UNREADABLE
    return VERIFY_SOUND


def _restore(settings: config.Config, backup: str) -> int:
    """Same exit statuses as --verify: 0 restored, 1 the backup is damaged (or no backup), 3 a
    running mqd holds the data directory, 4 a file cannot be read or written."""
    from .errors import DataCorrupt, MqError
    from .store.sqlite import SQLiteStore

    if settings.store is not None:
        print(
            "mqd: a PostgreSQL store is restored with PostgreSQL's tools (docs/backups.md)", file=sys.stderr
        )
        return 2
    path = Path(backup)
    if not path.is_file():
        print(f"mqd: there is no backup file {backup}", file=sys.stderr)
        return VERIFY_UNREADABLE
    try:
        print(SQLiteStore(settings.data_dir).restore_backup(path))
    except MqError as exc:
        return _refused(exc, " Nothing was changed." if isinstance(exc, DataCorrupt) else "")
    return VERIFY_SOUND


def _refused(exc: Exception, more: str = "") -> int:
    """One line on stderr, and the exit status --verify and --restore give for it."""
    from .errors import DataCorrupt, DataDirectoryError

    print(f"mqd: {exc}{more}", file=sys.stderr)
    if isinstance(exc, DataCorrupt):
        return VERIFY_DAMAGED
    if isinstance(exc, DataDirectoryError) and exc.in_use:
        return VERIFY_IN_USE
    return VERIFY_UNREADABLE


async def _serve(settings: config.Config) -> int:
    from .server import serve  # aiohttp is imported only once the options are known to be good

    return await serve(settings)


def _run(settings: config.Config) -> int:
    """Run the daemon on uvloop where it is installed: the same asyncio, in C, with a good deal
    less CPU per request (see docs/performance.md); on plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))


if __name__ == "__main__":
    main()
