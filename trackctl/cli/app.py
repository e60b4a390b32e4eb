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
# stderr lines and the error boundary live in trackctl.console, shared with the lean assign path
# (trackctl.entry); the commands import say, warn and setup_logging from here.
from ..console import describe as _describe, error_line as _error_line, report as _report  # noqa: F401
from ..console import (StdoutClosed, end_output, guard_stdout, interrupted, say, set_log_format as _set_log_format,  # noqa: F401
                       setup_logging, stdout_gone, warn)

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
    """End quietly (exit 0) when the reader of stdout goes away, as `| head` does.

    main() does the same for every command; this keeps a command's own cleanup (a batch's chunk in
    flight, a connection) on the ordinary exit path."""
    try:
        yield
        sys.stdout.flush()
    except (BrokenPipeError, StdoutClosed):
        stdout_gone()
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
    """Run the app and turn every failure into one line and an exit code (trackctl.entry calls it
    for every command line but the plain `assign ORDER CARRIER`)."""
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
    """Run the app; return the exit code (each failure reported as one line).

    A reader of stdout that goes away (`trackctl carrier list | head -1`) ends the run with exit 0
    and nothing on stderr, whenever it happens: during a write, a flush, or the final flush.
    """
    debug = "--debug" in sys.argv[1:]
    guard_stdout()
    try:
        # Not standalone: click's own reports of unparsable command lines (a usage block, a blank
        # line and an `Error:` line) come here and leave as one line like every other error.
        code = app_for(sys.argv[1:])(standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except SystemExit as exc:
        from ..errors import Interrupted

        if isinstance(exc, Interrupted):  # SIGINT/SIGTERM (interrupts.py): one line, exit 130 or 143
            code = _error_line(redact_text(str(exc)), exc.exit_code)
        else:
            code = exc.code
    except StdoutClosed:
        code = 0
    except KeyboardInterrupt:
        code = interrupted()
    except typer.Abort:
        sys.stderr.write("trackctl: aborted\n")
        code = 1
    except _CLICK_ERROR as exc:
        code = _report_usage(exc)
    except Exception as exc:  # the error boundary: nothing below prints its own failure
        code = _report(exc, debug)
    if not end_output():
        code = 0 if code in (0, None) else code
    return code
