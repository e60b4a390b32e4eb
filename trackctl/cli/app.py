"""The typer app: its root options, what every command shares (settings, a connection, quiet
exit on a closed stdout), the registration of the command modules, and building only the command
a run names (`app_for`). Running it, and its error boundary, is `boundary.py`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, Optional, TypeVar

import typer

from .. import __version__
from ..console import StdoutClosed, say, stdout_gone, warn  # noqa: F401  (the commands' stderr lines)
from .logsetup import set_log_format, setup_logging  # noqa: F401  (setup_logging: for the commands that log)

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
T = TypeVar("T")


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
    set_log_format(log_format.value if log_format else os.environ.get("TRACKCTL_LOG_FORMAT"), ctx.obj)


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


def call(ctx: typer.Context, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Return `function(conn, *args, **kwargs)` over a connection opened for it and closed after:
    most commands are one such call between reading their options and showing the result."""
    with connection(ctx) as conn:
        return function(conn, *args, **kwargs)


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


def command_named(argv: list[str]) -> Optional[str]:
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
    name = command_named(argv)
    commands = [c for c in app.registered_commands if c.name == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if name is None or not (commands or groups) or any(c.name is None for c in app.registered_commands):
        return app
    one = typer.Typer(**APP_SETTINGS)
    one.registered_callback = app.registered_callback
    one.registered_commands = commands
    one.registered_groups = groups
    return one
