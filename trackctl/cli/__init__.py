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
from ..errors import EXIT_DATABASE, EXIT_ERROR, TrackctlError

app = typer.Typer(
    name="trackctl",
    help="Parcel-tracking operations on PostgreSQL: code pools, assignment, carriers, outbox.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    table = "table"
    plain = "plain"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


FORMAT_HELP = "Output format: table (default on a terminal), plain (default in a pipe), json, jsonl, csv."


def fmt_value(fmt: Optional[Format]) -> Optional[str]:
    return fmt.value if fmt else None


def say(message: str) -> None:
    """Write an informational message to stderr."""
    sys.stderr.write(f"trackctl: {message}\n")


def warn(message: str) -> None:
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
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """trackctl keeps tracking codes, shipments and their events in PostgreSQL.

    Example: CODE=$(trackctl assign 42 correios)
    """
    from ..config import load_settings

    ctx.obj = load_settings(database_url, home, debug)


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
    from . import assign, carrier, db, demo, health, pool, status  # noqa: F401  (commands register on import)


_register()


def _report(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, TrackctlError):
        sys.stderr.write(f"trackctl: error: {exc}\n")
        return exc.exit_code
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sys.stderr.write(f"trackctl: error: lost the database connection: {first} "
                         "(check the server and retry; work already committed is kept)\n")
        return EXIT_DATABASE
    first = (str(exc).strip().splitlines() or [""])[0]
    sys.stderr.write(f"trackctl: error: unexpected {type(exc).__name__}: {first} (rerun with --debug for details)\n")
    return EXIT_ERROR


def main() -> None:
    """Console entry point: run the app and turn every failure into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("trackctl: interrupted\n")
        sys.exit(130)
    except Exception as exc:  # the error boundary: nothing below prints its own failure
        sys.exit(_report(exc, debug))
