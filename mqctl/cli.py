"""mqctl: every mq operation as a subcommand, and the daemon's life (start/stop/status).

The only module that imports click. Each subcommand is a short function over mq.Client (HTTP)
or daemon.py (pidfile and process); errors from both are turned into one line on stderr and an
exit status in one place, ``MqctlGroup.invoke``.

Exit statuses, like grep's and the LSB's (documented in docs/mqctl.md):
  0 success · 1 nothing received · 2 usage error · 3 mqd is not running · 4 mqd does not answer
  (or did not stop in time) · 5 no such queue or receipt · 6 the request was refused as invalid
  · 7 mqd failed (or failed to start) · 8 not allowed (an access token is needed, or wrong) · 127
  mqctl run cannot run its command · 130 interrupted
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from mq import ApiError, BadUrl, Client, ConnectionFailed, MqError, Timeout
from mqd import __version__
from mqd.protocol import (
    CLEARABLE_SETTINGS,
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_DEDUP_WINDOW_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_LEASE_SECONDS,
    MAX_PRIORITY,
    MAX_RATE,
    MAX_TTL_SECONDS,
    MAX_WAIT_SECONDS,
    PIDFILE_NAME,
    STORE_URL_SCHEMES,
    url_file_for,
)

from . import output

EXIT_OK = 0
EXIT_EMPTY = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_ANSWER = 4
EXIT_NOT_FOUND = 5
EXIT_REFUSED = 6
EXIT_FAILED = 7
EXIT_NOT_ALLOWED = 8
EXIT_QUEUE_FULL = 9  # a bounded queue refused a send: retry once consumers have made room
EXIT_COMMAND_NOT_FOUND = 127  # mqctl run: as a shell says of a command it cannot run
EXIT_INTERRUPTED = 130

QUEUE_META = "mqctl.queue"
TOKEN_META = "mqctl.token_given"


# -- errors: one place ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"mqctl: {message}", err=True)
    sys.exit(code)


def _explain(exc: Exception, meta: dict[str, Any]) -> tuple[str, int]:
    """One sentence and an exit status for anything a subcommand can raise."""
    from .daemon import DaemonError, StopTimedOut
    from .identify import UnderSystemd
    from .sending import InputError
    from .worker import CommandNotRunnable

    if isinstance(exc, BadUrl):
        return str(exc), EXIT_USAGE
    if isinstance(exc, UnderSystemd):
        return str(exc), EXIT_USAGE
    if isinstance(exc, ConnectionFailed):
        return f"{exc} — start it with: mqctl start", EXIT_NOT_RUNNING
    if isinstance(exc, Timeout | StopTimedOut):
        return str(exc), EXIT_NO_ANSWER
    if isinstance(exc, ApiError):
        return _explain_refusal(exc, meta)
    if isinstance(exc, InputError):
        return str(exc), EXIT_REFUSED
    if isinstance(exc, CommandNotRunnable):
        return str(exc), EXIT_COMMAND_NOT_FOUND
    if isinstance(exc, MqError | DaemonError):
        return str(exc), EXIT_FAILED
    return f"unexpected error, please report it: {exc!r}", EXIT_FAILED


def _explain_refusal(exc: ApiError, meta: dict[str, Any]) -> tuple[str, int]:
    """What mqd refused, by its error code (the sentence is for people and may change)."""
    queue = meta.get(QUEUE_META)
    if exc.code == "unauthorized" and meta.get(TOKEN_META):
        return "mqd refused the access token given (MQ_TOKEN or --token-file)", EXIT_NOT_ALLOWED
    if exc.code == "unauthorized":
        return "mqd needs an access token: set MQ_TOKEN or give --token-file", EXIT_NOT_ALLOWED
    if exc.code == "forbidden":
        return exc.message, EXIT_NOT_ALLOWED
    if exc.code == "queue_not_found" and queue:
        return f"queue '{queue}' does not exist — create it with: mqctl create {queue}", EXIT_NOT_FOUND
    if exc.code in ("queue_not_found", "receipt_not_found", "route_not_found", "exchange_not_found"):
        return exc.message, EXIT_NOT_FOUND
    if exc.code == "queue_full":
        return exc.message, EXIT_QUEUE_FULL
    return exc.message, EXIT_FAILED if exc.status >= 500 else EXIT_REFUSED


class MqctlGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            output.silence_stdout()
            sys.exit(EXIT_OK)
        except Exception as exc:
            message, code = _explain(exc, ctx.meta)
            _fail(message, code)


# -- shared options ------------------------------------------------------------------------------


def _url(ctx: click.Context) -> str:
    """--url (after or before the subcommand), else MQ_URL, else the URL of the mqd running from
    ./data (or $MQD_DATA_DIR), else the default: the daemon mqctl status speaks of."""
    before = ctx.find_root().params.get("url")  # set even while completing, unlike ctx.obj
    return ctx.params.get("url") or before or os.environ.get("MQ_URL") or _local_url() or DEFAULT_URL


def _local_url() -> str | None:
    """The URL mqd recorded beside its pidfile in the data directory, while its pid lives. Read
    with nothing but os: every command asks, so it must cost nothing."""
    pidfile = os.path.join(os.environ.get("MQD_DATA_DIR") or DEFAULT_DATA_DIR, PIDFILE_NAME)
    try:
        with open(pidfile) as handle:
            os.kill(int(handle.read().split()[0]), 0)
        with open(url_file_for(pidfile)) as handle:
            return handle.read().strip() or None
    except (OSError, ValueError, IndexError):
        return None


def _token(ctx: click.Context) -> str | None:
    """The access token: --token-file (here or before the subcommand), else MQ_TOKEN. A file
    others can read is refused, as mqd refuses it."""
    path = ctx.params.get("token_file") or ctx.find_root().params.get("token_file")
    if not path:
        return os.environ.get("MQ_TOKEN") or None
    try:
        mode = os.stat(path).st_mode
        with open(path) as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise click.UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise click.UsageError(
            f"the token file {path} can be read by others (mode {mode & 0o777:o}); "
            f"make it readable by its owner only: chmod 600 {path}"
        )
    if not token:
        raise click.UsageError(f"the token file {path} is empty")
    return token


def _client(ctx: click.Context) -> Client:
    ctx.meta[QUEUE_META] = ctx.params.get("queue")  # for the error handler's hints
    token = _token(ctx)
    ctx.meta[TOKEN_META] = token is not None
    client = Client(_url(ctx), token=token)
    ctx.call_on_close(client.close)
    return client


def url_option(command):
    return click.option(
        "--url", metavar="URL", help=f"mqd to talk to (env MQ_URL; default {DEFAULT_URL}; or unix:/path)."
    )(command)


def json_option(help_text: str = "Print JSON instead of text."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _complete_queues(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Queue names, asked of the daemon the command line names (--url, --token-file)."""
    try:
        with Client(_url(ctx), token=_token(ctx), timeout=2) as client:
            return [q["name"] for q in client.list_queues() if q["name"].startswith(incomplete)]
    except (MqError, click.UsageError):
        return []


def queue_argument(command):
    return click.argument("queue", shell_complete=_complete_queues)(command)


def data_dir_options(command):
    command = click.option(
        "--pidfile", type=click.Path(dir_okay=False), help="Pidfile (default: <data-dir>/mqd.pid)."
    )(command)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        envvar="MQD_DATA_DIR",
        help="The daemon's data directory (env MQD_DATA_DIR; default ./data).",
    )(command)


# -- the group -----------------------------------------------------------------------------------


@click.group(cls=MqctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help=f"mqd to talk to (env MQ_URL; default {DEFAULT_URL}).")
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="File holding mqd's access token (or MQ_TOKEN)."
)
@click.version_option(__version__, prog_name="mqctl")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token_file: str | None) -> None:
    """Drive mq, the durable message queue: queues and messages, and the mqd daemon itself.

    \b
    Exit status: 0 ok, 1 nothing received, 2 usage error, 3 mqd not running,
    4 mqd not answering, 5 no such queue or receipt, 6 refused as invalid, 7 mqd failed,
    8 not allowed (access token), 130 interrupted.
    """
    # --url and --token-file given here are read from ctx.find_root().params by the subcommands.


# -- the daemon's life ---------------------------------------------------------------------------


def _store_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith(STORE_URL_SCHEMES):
        raise click.BadParameter("give a postgresql:// URL (leave it out for the embedded SQLite store)")
    return value


def daemon_options(command):
    """What mqctl start and restart pass on to mqd."""
    for option in reversed(
        [
            click.option("--host", help="Address mqd listens on (default 127.0.0.1)."),
            click.option("--port", type=click.IntRange(0, 65535), help="Port mqd listens on (default 8000)."),
            click.option(
                "--store",
                metavar="URL",
                callback=_store_url,
                help="postgresql://…: queues in PostgreSQL (see docs/scaling.md).",
            ),
            data_dir_options,
            click.option(
                "--log-file",
                type=click.Path(dir_okay=False),
                help="Daemon log (default: <data-dir>/mqd.log).",
            ),
            click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for mqd."),
        ]
    ):
        command = option(command)
    return command


def _named(ctx: click.Context, data_dir: str | None, pidfile: str | None):
    """The daemon this command is about (see mqctl/identify.py for the rule)."""
    from . import identify

    from_flag = click.core.ParameterSource.COMMANDLINE
    url_flag = ctx.params.get("url") or ctx.find_root().params.get("url")
    return identify.named(
        data_dir,
        pidfile,
        url_flag or os.environ.get("MQ_URL"),
        data_dir_from_flag=ctx.get_parameter_source("data_dir") == from_flag,
        url_from_flag=bool(url_flag),
    )


def _paths_of(ctx: click.Context, target) -> Any:
    """The data directory of the daemon named by URL, for restart (it must run from a pidfile)."""
    from . import daemon, identify

    if identify.settled(target).paths is not None:
        return target.paths
    found = identify.local_daemon(target.url, _token(ctx))
    if isinstance(found, daemon.Paths):
        return found
    if found is None and target.by_default:
        return target.paths  # nothing runs anywhere: start it in ./data
    where = "nothing answers there" if found is None else "it was not started by mqctl start"
    raise daemon.DaemonError(f"cannot restart mqd at {target.url}: {where}; name its --data-dir")


@cli.command()
@daemon_options
def start(host, port, store, data_dir, pidfile, log_file, timeout) -> None:
    """Start mqd in the background and wait until it answers."""
    from . import daemon

    paths = daemon.Paths.resolve(data_dir, pidfile, log_file)
    settings = daemon.StartSettings.now({"host": host, "port": port, "store": store}, log_file)
    running, started = daemon.start(paths, settings, timeout)
    if started:
        click.echo(f"mqd started (pid {running.pid}) at {running.url}")
    else:
        click.echo(f"mqd is already running (pid {running.pid}) at {running.url}")


@cli.command()
@data_dir_options
@url_option
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for mqd to exit.")
@click.option("--force", is_flag=True, help="SIGKILL mqd if it has not exited by the timeout.")
@click.pass_context
def stop(ctx, data_dir, pidfile, url, timeout, force) -> None:
    """Stop mqd (SIGTERM) and wait until it has exited: the daemon of --data-dir, or the one
    answering at --url. Stopping one that is not running succeeds (exit 0)."""
    from . import daemon, identify

    target = identify.settled(_named(ctx, data_dir, pidfile))
    if target.paths is not None:
        stopped = daemon.stop(target.paths, timeout=timeout, force=force)
        if stopped is None:
            click.echo(f"mqd is not running (no mqd pidfile in {target.paths.pidfile.parent})")
            return
    else:
        found = identify.local_daemon(target.url, _token(ctx))
        if found is None:
            click.echo(f"mqd is not running at {target.url}")
            return
        if isinstance(found, daemon.Paths):
            stopped = daemon.stop(found, timeout=timeout, force=force)
        else:
            daemon.terminate(found, timeout=timeout, force=force)
            stopped = daemon.Running(found, target.url)
    click.echo(f"mqd stopped (pid {stopped.pid})" if stopped else "mqd is not running")


@cli.command()
@daemon_options
@url_option
@click.pass_context
def restart(ctx, host, port, store, data_dir, pidfile, log_file, timeout, url) -> None:
    """Stop mqd if it runs, then start it again as it was started (by mqctl start), with the
    options given here changing those."""
    from . import daemon

    paths = _paths_of(ctx, _named(ctx, data_dir, pidfile))
    recorded = daemon.recorded_settings(paths) or daemon.StartSettings({}, {})
    settings = recorded.overridden({"host": host, "port": port, "store": store}, log_file)
    daemon.stop(paths, timeout=timeout)
    running, _ = daemon.start(paths.with_log_file(settings.log_file), settings, timeout)
    click.echo(f"mqd started (pid {running.pid}) at {running.url}")


@cli.command()
@data_dir_options
@url_option
@json_option()
@click.pass_context
def status(ctx, data_dir, pidfile, url, as_json) -> None:
    """Whether mqd runs and answers (exit 0), is not running (3), or does not answer (4).

    It speaks of the daemon of --data-dir (its pidfile) or of the one at --url, whichever is
    named; with neither, of the daemon of ./data, or else of the one at the default URL (so a
    daemon started by systemd is found too).
    """
    from . import identify

    report = identify.inquire(_named(ctx, data_dir, pidfile), _token(ctx))
    if as_json:
        click.echo(output.json_line(report.as_dict()))
    else:
        click.echo(_status_line(report))
    if report.wants_token:
        sys.exit(EXIT_NOT_ALLOWED)
    if not report.running:
        sys.exit(EXIT_NOT_RUNNING)
    if not report.answering:
        sys.exit(EXIT_NO_ANSWER)


def _status_line(report) -> str:
    if not report.running:
        return f"mqd is not running ({report.problem})"
    if report.wants_token:
        return f"mqd is running at {report.url} but wants an access token: set MQ_TOKEN or --token-file"
    if not report.answering:
        return f"mqd (pid {report.pid}) is running but does not answer: {report.problem}"
    state = report.state
    store = state.get("store") or {}
    kind = {"sqlite": "SQLite in", "postgresql": "PostgreSQL at"}.get(store.get("kind"), "store")
    return (
        f"mqd {state.get('version', '')} is running (pid {state.get('pid')}) at {report.url}: "
        f"up {output.duration(state.get('uptime_seconds'))}, {kind} {store.get('location')}, "
        f"{output.counted(state['queues'], 'queue')}, {output.counted(state['messages'], 'message')}"
    )


# -- queues --------------------------------------------------------------------------------------


SETTING_OPTIONS = (
    click.option(
        "--max-attempts",
        type=click.IntRange(1, MAX_ATTEMPTS),
        help="Deliveries before a message is dead-lettered.",
    ),
    click.option(
        "--dead-letter-queue",
        metavar="QUEUE",
        shell_complete=_complete_queues,
        help="Where messages go after --max-attempts (and expired or dropped ones).",
    ),
    click.option(
        "--dedup-window",
        type=click.FloatRange(0, MAX_DEDUP_WINDOW_SECONDS),
        help="Seconds an idempotency key is remembered (300).",
    ),
    click.option(
        "--message-ttl",
        type=click.FloatRange(0.001, MAX_TTL_SECONDS),
        help="Seconds a message sent without --ttl may wait before it expires.",
    ),
    click.option("--max-messages", type=click.IntRange(1), help="The most messages the queue holds."),
    click.option("--max-bytes", type=click.IntRange(1), help="The most bytes of content the queue holds."),
    click.option(
        "--overflow",
        type=click.Choice(["reject", "drop_oldest"]),
        help="Beyond --max-messages/--max-bytes: refuse sends (reject), or drop the head (drop_oldest).",
    ),
    click.option("--max-in-flight", type=click.IntRange(1), help="The most messages leased at once."),
    click.option("--max-rate", type=click.FloatRange(0.01, MAX_RATE), help="The most deliveries per second."),
)


def setting_options(command):
    for option in reversed(SETTING_OPTIONS):
        command = option(command)
    return command


def _given(settings: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in settings.items() if value is not None}


@cli.command()
@queue_argument
@setting_options
@url_option
@json_option("Print the queue as JSON.")
@click.pass_context
def create(ctx, queue, url, as_json, **settings) -> None:
    """Create QUEUE (nothing happens if it exists with the same settings; see docs/policies.md)."""
    body, created = _client(ctx).create_queue(queue, **_given(settings))
    if as_json:
        click.echo(output.json_line(body))
    else:
        click.echo(f"created queue '{queue}'" if created else f"queue '{queue}' already exists")


@cli.command(name="set")
@queue_argument
@setting_options
@click.option(
    "--clear",
    "cleared",
    multiple=True,
    type=click.Choice(CLEARABLE_SETTINGS),
    help="Remove this limit (repeatable).",
)
@url_option
@json_option("Print the queue as JSON.")
@click.pass_context
def set_command(ctx, queue, cleared, url, as_json, **settings) -> None:
    """Change QUEUE's settings: those given; the others stay as they are."""
    changes = {**_given(settings), **{name: None for name in cleared}}
    if not changes:
        raise click.UsageError("give a setting to change")
    body = _client(ctx).update_queue(queue, **changes)
    if as_json:
        click.echo(output.json_line(body))
    else:
        click.echo(f"changed queue '{queue}': " + ", ".join(f"{name}={body[name]}" for name in changes))


QUEUE_COLUMNS = (
    "name",
    "messages",
    "ready",
    "leased",
    "delayed",
    "dead_lettered",
    "oldest_ready_age_seconds",
)


@cli.command("list")
@url_option
@json_option("Print the queues as one JSON array.")
@click.pass_context
def list_queues(ctx, url, as_json) -> None:
    """List the queues with their depths (a table on a terminal, tab-separated otherwise)."""
    queues = _client(ctx).list_queues()
    if as_json:
        click.echo(output.json_line(queues))
    elif sys.stdout.isatty():
        rows = [[*(q[c] for c in QUEUE_COLUMNS[:-1]), output.duration(q[QUEUE_COLUMNS[-1]])] for q in queues]
        headers = ("NAME", "MESSAGES", "READY", "LEASED", "DELAYED", "DEAD", "OLDEST")
        click.echo(output.table(headers, rows, numeric={1, 2, 3, 4, 5}) if queues else "no queues")
    elif queues:
        click.echo(output.tab_separated([[q[c] for c in QUEUE_COLUMNS] for q in queues]))


@cli.command()
@queue_argument
@url_option
@json_option("Print the queue as JSON.")
@click.pass_context
def info(ctx, queue, url, as_json) -> None:
    """Show QUEUE's settings and counters."""
    body = _client(ctx).queue(queue)
    if as_json:
        click.echo(output.json_line(body))
    elif sys.stdout.isatty():
        width = max(len(k) for k in body)
        click.echo("\n".join(f"{k.ljust(width)}  {'-' if v is None else v}" for k, v in body.items()))
    else:
        click.echo(output.tab_separated(list(body.items())))


@cli.command()
@click.argument("exchange")
@click.argument("queues", nargs=-1, metavar="[QUEUE]...", shell_complete=_complete_queues)
@click.option("--delete", "remove", is_flag=True, help="Delete EXCHANGE (its queues stay).")
@url_option
@json_option("Print the exchanges as JSON.")
@click.pass_context
def exchange(ctx, exchange, queues, remove, url, as_json) -> None:
    """Make EXCHANGE deliver a copy of each message sent to it into each QUEUE (exactly these);
    without QUEUEs, show what it delivers into (see mqctl publish, docs/policies.md)."""
    client = _client(ctx)
    if remove:
        if queues:
            raise click.UsageError("--delete takes no QUEUE")
        client.delete_exchange(exchange)
        click.echo(f"deleted exchange '{exchange}'")
        return
    if queues:
        body, created = client.bind_exchange(exchange, queues)
        verb = "created" if created else "changed"
        click.echo(
            output.json_line(body)
            if as_json
            else f"{verb} exchange '{exchange}': {', '.join(body['queues'])}"
        )
        return
    found = next((e for e in client.exchanges() if e["name"] == exchange), None)
    if found is None:
        _fail(
            f"exchange '{exchange}' does not exist — create it with: mqctl exchange {exchange} QUEUE...",
            EXIT_NOT_FOUND,
        )
    click.echo(output.json_line(found) if as_json else "\n".join(found["queues"]))


@cli.command()
@click.argument("exchange")
@click.argument("message", required=False)
@click.option("--json", "as_json", is_flag=True, help="The message is a JSON value, not a string.")
@click.option("--key", help="Idempotency key (per queue, as for send).")
@click.option("--priority", type=click.IntRange(0, MAX_PRIORITY), default=0, help="0 (default) to 9.")
@click.option("--group", help="The group of each copy, in its queue.")
@click.option("--ttl", type=click.FloatRange(0.001, MAX_TTL_SECONDS), help="Seconds each copy may wait.")
@url_option
@click.pass_context
def publish(ctx, exchange, message, as_json, key, priority, group, ttl, url) -> None:
    """Send MESSAGE (or standard input) into every queue of EXCHANGE in one commit; prints
    "QUEUE<TAB>ID" for each copy."""
    from . import sending

    if message is None:
        message = sending.read_one_message(sys.stdin)
    options = {
        name: value for name, value in {"priority": priority, "group": group, "ttl": ttl}.items() if value
    }
    if as_json:
        problem = sending.json_problem(message)
        if problem:
            raise click.UsageError(f"MESSAGE is not JSON ({problem})")
        ids = _client(ctx).publish(exchange, json_text=message, key=key, **options)
    else:
        ids = _client(ctx).publish(exchange, message, key=key, **options)
    click.echo(output.tab_separated(list(ids.items())))


@cli.command()
@queue_argument
@url_option
@click.pass_context
def delete(ctx, queue, url) -> None:
    """Delete QUEUE and every message in it."""
    _client(ctx).delete_queue(queue)
    click.echo(f"deleted queue '{queue}'")


@cli.command()
@queue_argument
@url_option
@click.pass_context
def purge(ctx, queue, url) -> None:
    """Remove every message from QUEUE, keeping the queue."""
    removed = _client(ctx).purge(queue)
    click.echo(f"purged {output.counted(removed, 'message')} from '{queue}'")


# -- messages ------------------------------------------------------------------------------------


@cli.command()
@queue_argument
@click.argument("message", required=False)
@click.option("--lines", is_flag=True, help="Send each line of standard input as its own message.")
@click.option("-0", "--null", "null", is_flag=True, help="Like --lines, split on NUL instead (find -print0).")
@click.option(
    "--json", "as_json", is_flag=True, help="The message (or each line) is a JSON value, not a string."
)
@click.option(
    "--delay",
    type=click.FloatRange(0, MAX_DELAY_SECONDS),
    default=0,
    help="Seconds before the message can be received.",
)
@click.option("--key", help="Idempotency key: a repeat within the dedup window is not enqueued again.")
@click.option(
    "--priority",
    type=click.IntRange(0, MAX_PRIORITY),
    default=0,
    help="0 (default) to 9: higher is received first.",
)
@click.option("--group", help="Messages of one group are received in order, one leased at a time.")
@click.option(
    "--ttl", type=click.FloatRange(0.001, MAX_TTL_SECONDS), help="Seconds it may wait before it expires."
)
@url_option
@click.pass_context
def send(ctx, queue, message, lines, null, as_json, delay, key, priority, group, ttl, url) -> None:
    """Send MESSAGE to QUEUE (or standard input, as one message or one per line); prints its id."""
    if (lines or null) and message is not None:
        raise click.UsageError("give MESSAGE or --lines/--null, not both")
    if (lines or null) and key is not None:
        raise click.UsageError("--key names one message; it cannot be used with --lines/--null")
    from . import sending

    client = _client(ctx)
    options = {"delay": delay, "priority": priority, "group": group, "ttl": ttl}
    options = {name: value for name, value in options.items() if value}
    if lines or null:
        sent = sending.send_stream(client, queue, b"\0" if null else b"\n", as_json, options)
        if sys.stderr.isatty():
            click.echo(f"sent {output.counted(sent, 'message')} to '{queue}'", err=True)
        return
    if message is None:
        message = sending.read_one_message(sys.stdin)
        if not message:
            raise click.UsageError(
                "standard input is empty, so there is nothing to send; "
                f"to send an empty message, give it as an argument: mqctl send {queue} ''"
            )
    if as_json:
        problem = sending.json_problem(message)
        if problem:
            raise click.UsageError(f"MESSAGE is not JSON ({problem})")
        sent = client.send(queue, json_text=message, key=key, **options)
    else:
        sent = client.send(queue, message, key=key, **options)
    click.echo(sent)


@cli.command()
@queue_argument
@click.option("-n", "--count", type=click.IntRange(1), help="Up to this many messages, oldest first.")
@click.option(
    "--wait", type=click.FloatRange(0, MAX_WAIT_SECONDS), default=0, help="Seconds to wait for one."
)
@click.option(
    "--lease", type=click.FloatRange(1, MAX_LEASE_SECONDS), help="Lease instead of removing (then ack)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print each whole message (id, content, ...) as a JSON line."
)
@click.option("-0", "--null", "null", is_flag=True, help="End each message with NUL instead of a newline.")
@click.option("-f", "--follow", is_flag=True, help="Keep receiving and printing as messages arrive.")
@url_option
@click.pass_context
def receive(ctx, queue, count, wait, lease, as_json, null, follow, url) -> None:
    """Receive messages from QUEUE and print their content; exit 1 if there was none."""
    from . import receiving

    client, show = _client(ctx), receiving.printer(as_json, null)
    if follow:
        received = receiving.follow(client, queue, count, lease, show)
    else:
        received = receiving.receive(client, queue, count, wait, lease, show)
    sys.exit(EXIT_OK if received else EXIT_EMPTY)


@cli.command()
@queue_argument
@click.option(
    "-n", "--count", type=click.IntRange(1, MAX_BATCH), default=1, help="How many messages to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print each whole message as a JSON line.")
@click.option("-0", "--null", "null", is_flag=True, help="End each message with NUL instead of a newline.")
@url_option
@click.pass_context
def peek(ctx, queue, count, as_json, null, url) -> None:
    """Show the next messages of QUEUE without receiving them; exit 1 if there is none."""
    from . import receiving

    messages = [message.data for message in _client(ctx).peek(queue, count)]
    show = receiving.printer(as_json, null)
    for message in messages:
        show(message)
    sys.exit(EXIT_OK if messages else EXIT_EMPTY)


@cli.command()
@queue_argument
@click.argument("receipt")
@url_option
@click.pass_context
def ack(ctx, queue, receipt, url) -> None:
    """Acknowledge a leased message: it is done and gone."""
    _client(ctx).ack(queue, receipt)


@cli.command()
@queue_argument
@click.argument("receipt")
@click.option(
    "--delay",
    type=click.FloatRange(0, MAX_DELAY_SECONDS),
    default=0,
    help="Seconds before it can be received again.",
)
@url_option
@click.pass_context
def release(ctx, queue, receipt, delay, url) -> None:
    """Give a leased message back before its lease ends."""
    _client(ctx).release(queue, receipt, delay)


@cli.command()
@queue_argument
@click.argument("receipt")
@click.option("--lease", type=click.FloatRange(1, MAX_LEASE_SECONDS), required=True, help="Seconds from now.")
@url_option
@click.pass_context
def extend(ctx, queue, receipt, lease, url) -> None:
    """Make a lease end LEASE seconds from now."""
    _client(ctx).extend(queue, receipt, lease)


@cli.command()
@queue_argument
@url_option
@click.pass_context
def redrive(ctx, queue, url) -> None:
    """Move dead letters back to the queues they came from (QUEUE: the dead-letter queue or a source)."""
    moved = _client(ctx).redrive(queue)
    click.echo(f"moved {output.counted(moved['moved'], 'message')} back")


@contextlib.contextmanager
def _stopped_cleanly_by_sigterm() -> Iterator[None]:
    """SIGTERM as Ctrl-C while a file is being written: its partial copy is removed (exit 130)."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@url_option
@click.pass_context
def backup(ctx, file, url) -> None:
    """Write a consistent copy of mqd's whole store to FILE while it serves (SQLite; see
    docs/backups.md). FILE appears only once the copy is complete and checked."""
    with _stopped_cleanly_by_sigterm():
        info = _client(ctx).backup(file)
    click.echo(
        f"backup of {output.counted(info.messages, 'message')} (ids up to {info.highest_id}) "
        f"as of {output.moment(info.taken_at)} written to {file} ({output.size(info.size)})"
    )


@cli.command(name="export")
@click.argument("queues", nargs=-1)
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to FILE (it appears once complete) instead of standard output.",
)
@url_option
@click.pass_context
def export_command(ctx, queues, output_path, url) -> None:
    """Write QUEUES (default: all) and their messages as JSON lines, for mqctl import into
    another mqd (see docs/backups.md)."""
    from . import moving

    with _stopped_cleanly_by_sigterm(), moving.written(output_path) as out:
        exported, messages = moving.export(_client(ctx), out, queues)
    click.echo(
        f"exported {output.counted(messages, 'message')} of {output.counted(exported, 'queue')}", err=True
    )


@cli.command(name="import")
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@url_option
@click.pass_context
def import_command(ctx, file, url) -> None:
    """Load an export (FILE, or standard input) into mqd: queues declared, messages stored as
    they were under new ids. Running it again stores nothing twice."""
    from . import moving

    declared, imported, skipped = moving.import_(_client(ctx), file)
    again = f" ({skipped} were there already)" if skipped else ""
    click.echo(
        f"imported {output.counted(imported, 'message')} into {output.counted(declared, 'queue')}{again}"
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@queue_argument
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--lease",
    type=click.FloatRange(1, MAX_LEASE_SECONDS),
    default=60,
    show_default=True,
    help="Seconds each message is leased; extended while its command still runs.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Commands running at once.",
)
@click.option(
    "--drain", is_flag=True, help="Exit once the queue has nothing ready instead of waiting for more."
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=30,
    show_default=True,
    help="Seconds running commands get to finish after SIGTERM/SIGINT before they are stopped.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(0, MAX_DELAY_SECONDS),
    default=0,
    help="Seconds before a failed message can be received again.",
)
@url_option
@click.pass_context
def run(ctx, queue, command, lease, concurrency, drain, grace, retry_delay, url) -> None:
    """Run COMMAND for each message of QUEUE: content on stdin, MQ_QUEUE, MQ_MESSAGE_ID and
    MQ_ATTEMPTS in its environment. Exit 0 acknowledges; anything else releases it for a retry
    (and the queue's dead-letter rule applies). Stopped by SIGTERM it exits 0, by Ctrl-C 130.

    \b
    mqctl run jobs -- ./process-one.sh
    mqctl run jobs --concurrency 4 --drain -- sh -c 'convert "$(cat)" out/$MQ_MESSAGE_ID.png'
    """
    from .worker import Worker

    _client(ctx)  # registers the queue for error hints
    worker = Worker(
        _url(ctx),
        queue,
        command,
        token=_token(ctx),
        lease=lease,
        concurrency=concurrency,
        drain=drain,
        grace=grace,
        retry_delay=retry_delay,
    )
    try:
        worker.run()
    finally:
        click.echo(f"mqctl run: {worker.summary.line()}", err=True)
    if worker.interrupted:  # stopped by Ctrl-C (SIGTERM is a service's ordinary stop: 0)
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("-n", "--iterations", type=click.IntRange(1), help="Stop after this many refreshes.")
@url_option
@click.pass_context
def top(ctx, interval, iterations, url) -> None:
    """A live view of the queues: depths and rates (in, out, acked per second), redrawn in place."""
    from . import top as live_view

    live_view.run(_client(ctx), interval, iterations)  # until -n runs out, or Ctrl-C (130)


def _bash_completion_keeps_urls_whole() -> None:
    """Bash splits words at ':' (COMP_WORDBREAKS), so ``--url http://127.0.0.1:8300`` reaches
    click's completion as ``http : //127.0.0.1 : 8300``; join such pieces back before click
    reads the command line, so queue names are asked of the daemon the line names."""
    from click.shell_completion import BashComplete, add_completion_class, split_arg_string

    class UrlKeepingBashComplete(BashComplete):
        def get_completion_args(self) -> tuple[list[str], str]:
            words = split_arg_string(os.environ["COMP_WORDS"])
            current = int(os.environ["COMP_CWORD"])
            incomplete = words[current] if current < len(words) else ""
            joined: list[str] = []
            for index, word in enumerate(words[1:current], start=1):
                if joined and (word == ":" or words[index - 1] == ":"):
                    joined[-1] += word
                else:
                    joined.append(word)
            return joined, incomplete

    add_completion_class(UrlKeepingBashComplete, "bash")


def main() -> None:
    """Run mqctl. Usage errors, click's own included, are one line as every other error is."""
    if os.environ.get("_MQCTL_COMPLETE", "").startswith("bash"):
        _bash_completion_keeps_urls_whole()
    try:
        returned = cli.main(prog_name="mqctl", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "mqctl"
        _fail(f"{exc.format_message()} (see: {where} --help)", EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(returned if isinstance(returned, int) else EXIT_OK)
