"""Running the typer app: every failure becomes one line on stderr and an exit code.

`main` is what the console script runs for every command line but the plain `assign ORDER
CARRIER` (trackctl/entry.py). The wording of a failure is trackctl.console's (`report`,
`error_line`), shared with that lean path; here are only what the typer app adds: command lines
click could not parse, aborts, and tracing around the run.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from ..console import StdoutClosed, end_output, error_line, guard_stdout, interrupted, report, stopped, warn
from .app import app_for, command_named


def _is_no_args_help(exc: typer.TyperException) -> bool:
    """True for a group run without a command (`trackctl pool`): click raises a usage error whose
    message is that group's help, which is then the whole answer."""
    ctx = getattr(exc, "ctx", None)
    return ctx is not None and exc.format_message() == ctx.get_help()


def _report_usage(exc: typer.TyperException) -> int:
    """One line for a command line click could not parse, naming the --help to read."""
    if _is_no_args_help(exc):
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return exc.exit_code
    # pydantic's wording ("Value error, ...") is typer's, not ours; the hint follows the sentence.
    message = " ".join(exc.format_message().split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = command_named(sys.argv[1:])
    path = ctx.command_path if ctx is not None else f"trackctl {command}" if command else "trackctl"
    return error_line(f"{message} (see '{path} --help')", exc.exit_code)


def main() -> None:
    """Run the app and turn every failure into one line and an exit code (trackctl.entry calls it
    for every command line but the plain `assign ORDER CARRIER`)."""
    from .. import telemetry

    if telemetry.wanted():  # issue 15: one trace per command, flushed within a bound at exit
        telemetry.start(command_named(sys.argv[1:]))
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
    except SystemExit as exc:  # SIGINT/SIGTERM (interrupts.py): one line, exit 130 or 143
        code = stopped(exc)
    except StdoutClosed:
        code = 0
    except KeyboardInterrupt:
        code = interrupted()
    except typer.Abort:
        sys.stderr.write("trackctl: aborted\n")
        code = 1
    except typer.TyperException as exc:  # click's exceptions (typer vendors click since 0.22)
        code = _report_usage(exc)
    except Exception as exc:  # the error boundary: nothing below prints its own failure
        code = report(exc, debug)
    if not end_output():
        code = 0 if code in (0, None) else code
    return code
