"""The trackctl command line: thin typer functions over the library, and the error boundary."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from enum import Enum
from typing import Optional

import typer

from .. import __version__
from ..errors import EXIT_DATABASE, EXIT_ERROR, EXIT_USAGE, TrackctlError

APP_SETTINGS = dict(
    name="trackctl",
    help="Parcel-tracking operations on PostgreSQL: code pools, assignment, carriers, outbox.\n\n"
         "Example: CODE=$(trackctl assign 42 correios)",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app = typer.Typer(**APP_SETTINGS)


class Format(str, Enum):
    table = "table"
    plain = "plain"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


FORMAT_HELP = "Output format: table (default on a terminal), plain (default in a pipe), json, jsonl, csv."


def fmt_value(fmt: Optional[Format]) -> Optional[str]:
    return fmt.value if fmt else None


class LogFormat(str, Enum):
    text = "text"
    json = "json"


# Set by the root callback: with json, every stderr line (messages, warnings, errors) is a JSON record.
_log_format = "text"
_log_format_chosen = False  # False until the root callback has read the option and the environment


def _log(level: int, message: str) -> None:
    from ..logs import get_logger

    get_logger("cli").log(level, message)


def say(message: str) -> None:
    """Write an informational message to stderr."""
    if _log_format == "json":
        _log(20, message)
        return
    sys.stderr.write(f"trackctl: {message}\n")


def warn(message: str) -> None:
    if _log_format == "json":
        _log(30, message)
        return
    sys.stderr.write(f"trackctl: warning: {message}\n")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"trackctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Optional[str] = typer.Option(
        None, "--database-url", metavar="URL", show_default=False,
        help="PostgreSQL URL; default $TRACKCTL_DATABASE_URL (also read from ./.env), else the embedded server."),
    home: Optional[str] = typer.Option(
        None, "--home", metavar="DIR", show_default=False,
        help="Where the embedded server lives; default $TRACKCTL_HOME, else ~/.local/share/trackctl."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    log_format: Optional[LogFormat] = typer.Option(
        None, "--log-format", show_default=False, case_sensitive=False,
        help="Log lines on stderr: text (default) or json (one object per line); default $TRACKCTL_LOG_FORMAT."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """trackctl keeps tracking codes, shipments and their events in PostgreSQL.

    Example: CODE=$(trackctl assign 42 correios)
    """
    from ..config import load_settings

    ctx.obj = load_settings(database_url, home, debug)
    _set_log_format(log_format.value if log_format else os.environ.get("TRACKCTL_LOG_FORMAT"), ctx.obj)


def _set_log_format(value: Optional[str], conf) -> None:
    global _log_format, _log_format_chosen
    value = (value or "text").strip().lower()
    if value not in ("text", "json"):
        from ..errors import UsageError

        raise UsageError(f"unknown log format {value[:20]!r} in TRACKCTL_LOG_FORMAT", hint="use text or json")
    _log_format, _log_format_chosen = value, True
    if value == "json":  # text logging is set up lazily, by the commands that log
        setup_logging(conf)


def setup_logging(conf=None) -> None:
    """Send log records to stderr in the chosen format; the database password is never shown."""
    from ..logs import configure, register_secret

    if conf is not None and conf.database_url:
        from psycopg.conninfo import conninfo_to_dict

        with contextlib.suppress(Exception):
            register_secret(conninfo_to_dict(conf.database_url).get("password"))
    configure(_log_format, debug=bool(conf and conf.debug))


def settings(ctx: typer.Context):
    return ctx.find_root().obj


@contextlib.contextmanager
def connection(ctx: typer.Context, *, check_schema: bool = True) -> Iterator:
    """Open a connection for one command and close it afterwards."""
    from ..db import connect

    conn = connect(settings(ctx), check_schema=check_schema)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def pipe_output() -> Iterator[None]:
    """End quietly (exit 0) when the reader of stdout goes away, as `| head` does."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at interpreter exit cannot fail again
        raise typer.Exit(0)


def _register() -> None:
    from . import assign, carrier, cron, db, demo, health, metrics, pool, runs, status  # noqa: F401  (commands register on import)
    from . import poll, shipment  # noqa: F401  (issue 4: poll, sweep-stale, cancel, mark)
    from . import stats, track  # noqa: F401  (issue 13: track, carrier stats, shipments)
    from . import events, notify, outbox, webhook  # noqa: F401  (issue 5: events, notify, outbox, webhook)


_register()


def redact_text(text: str) -> str:
    from ..logs import redact

    return redact(text)


def _report(exc: BaseException, debug: bool) -> int:
    from ..logs import redact

    if debug:
        import traceback

        # A chained psycopg error can quote the connection string back, password and all.
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    message, code = _describe(exc)
    return _error_line(redact(message), code)  # psycopg's part of a message is not ours to trust


def _error_line(message: str, code: int) -> int:
    """Write the one error line (a JSON record with JSON logs) and return the exit code."""
    # Before the root callback has run (a bad root option) the environment decides.
    chosen = _log_format if _log_format_chosen else os.environ.get("TRACKCTL_LOG_FORMAT", "").strip().lower()
    if chosen == "json":
        from ..logs import configure, get_logger

        configure("json")
        get_logger("cli").error(message, extra={"exit_code": code})
    else:
        sys.stderr.write(f"trackctl: error: {message}\n")
    return code


def _describe(exc: BaseException) -> tuple[str, int]:
    """Return the one line and the exit code for a failure that reached the top."""
    if isinstance(exc, TrackctlError):
        return str(exc), exc.exit_code
    import psycopg

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.OperationalError):
        return (f"lost the database connection: {first} "
                "(check the server and retry; work already committed is kept)"), EXIT_DATABASE
    if isinstance(exc, (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)):
        # psycopg prepares statements it runs often; a pooler in transaction mode that does not
        # keep them hands the next execution to a server connection that never saw them.
        return (f"the database connection lost a prepared statement ({first}): a connection pooler in "
                "transaction mode? (set TRACKCTL_PREPARED_STATEMENTS=off, see docs/SCALING.md)"), EXIT_ERROR
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        # A number from the command line that the database cannot hold (ids and limits are checked
        # where they are known; this catches the rest).
        return f"a number is out of range: {first} (check the numbers given)", EXIT_USAGE
    return f"unexpected {type(exc).__name__}: {first} (rerun with --debug for details)", EXIT_ERROR


def _command_named(argv: list[str]) -> Optional[str]:
    """Return the command the arguments name after the root options, or None (none, or help first)."""
    import inspect

    valued = set()  # root options that take a value: skip that value too
    for param in inspect.signature(root).parameters.values():
        info = param.default
        if isinstance(info, typer.models.OptionInfo) and not isinstance(info.default, bool):
            valued.update(info.param_decls)
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help", "--"):
            return None
        if arg in valued:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def app_for(argv: list[str]) -> typer.Typer:
    """Return the app with only the command `argv` names (the whole app when it names none we know).

    typer builds every registered command from its signature on each start, a cost that grows
    with each command added; `trackctl assign` runs once per order from scripts, so a run builds
    just its own command. Options, help and errors are the same: it is the same registration.
    """
    name = _command_named(argv)
    commands = [c for c in app.registered_commands if c.name == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if name is None or not (commands or groups) or any(c.name is None for c in app.registered_commands):
        return app
    one = typer.Typer(**APP_SETTINGS)
    one.registered_callback = app.registered_callback
    one.registered_commands = commands
    one.registered_groups = groups
    return one


# click's exception classes, wherever this typer takes click from (vendored since typer 0.22).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _report_usage(exc: Exception) -> int:
    """One line for a command line click could not parse, naming the --help to read."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return exc.exit_code
    # pydantic's wording ("Value error, ...") is typer's, not ours; the hint follows the sentence.
    message = " ".join(exc.format_message().split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = _command_named(sys.argv[1:])
    path = ctx.command_path if ctx is not None else f"trackctl {command}" if command else "trackctl"
    return _error_line(f"{message} (see '{path} --help')", exc.exit_code)


def main() -> None:
    """Console entry point: run the app and turn every failure into one line and an exit code."""
    from .. import telemetry

    if telemetry.wanted():  # issue 15: one trace per command, flushed within a bound at exit
        telemetry.start(_command_named(sys.argv[1:]))
    code: object = 1
    try:
        code = _run()
    except SystemExit as exc:
        code = exc.code
    finally:
        warning = telemetry.finish(code)
        if warning:
            with contextlib.suppress(Exception):
                warn(warning)
    sys.exit(code)


def _run() -> object:
    """Run the app; return the exit code (each failure reported as one line)."""
    debug = "--debug" in sys.argv[1:]
    try:
        # Not standalone: click's own reports of unparsable command lines (a usage block, a blank
        # line and an `Error:` line) come here and leave as one line like every other error.
        code = app_for(sys.argv[1:])(standalone_mode=False)
    except SystemExit as exc:
        from ..errors import Interrupted

        if isinstance(exc, Interrupted):  # SIGINT/SIGTERM (interrupts.py): one line, exit 130 or 143
            return _error_line(redact_text(str(exc)), exc.exit_code)
        raise
    except KeyboardInterrupt:
        sys.stderr.write("trackctl: interrupted\n")
        return 130
    except typer.Abort:
        sys.stderr.write("trackctl: aborted\n")
        return 1
    except _CLICK_ERROR as exc:
        return _report_usage(exc)
    except Exception as exc:  # the error boundary: nothing below prints its own failure
        return _report(exc, debug)
    return code if isinstance(code, int) else 0
