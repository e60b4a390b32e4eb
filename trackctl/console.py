"""What the command line writes on stderr, and the error boundary: a failure becomes one line and an
exit code.

No typer, click or rich here: the lean `trackctl assign ORDER CARRIER` path (trackctl.entry) and
the typer app (trackctl.cli) share these functions, so both speak and fail alike.
"""

from __future__ import annotations

import os
import sys

from .cli.logsetup import effective_format, log_format  # the run's text or JSON stderr lines
from .errors import EXIT_DATABASE, EXIT_ERROR, EXIT_USAGE, TrackctlError


def _log(level: int, message: str) -> None:
    from .logs import get_logger

    get_logger("cli").log(level, message)


def say(message: str) -> None:
    """Write an informational message to stderr."""
    if log_format() == "json":
        _log(20, message)
        return
    sys.stderr.write(f"trackctl: {message}\n")


def warn(message: str) -> None:
    if log_format() == "json":
        _log(30, message)
        return
    sys.stderr.write(f"trackctl: warning: {message}\n")


def report(exc: BaseException, debug: bool) -> int:
    """Write the one line for a failure that reached the top (a traceback first with --debug); return the exit code."""
    from .logs import redact

    if debug:
        import traceback

        # A chained psycopg error can quote the connection string back, password and all.
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    message, code = describe(exc)
    return error_line(redact(message), code)  # psycopg's part of a message is not ours to trust


def error_line(message: str, code: int) -> int:
    """Write the one error line (a JSON record with JSON logs) and return the exit code."""
    if effective_format() == "json":  # before the root options were read, the environment's
        from .logs import configure, get_logger

        configure("json")
        get_logger("cli").error(message, extra={"exit_code": code})
    else:
        sys.stderr.write(f"trackctl: error: {message}\n")
    return code


# The command-line flag of a field an error names, where it is not `--` + the field with dashes.
FLAGS = {"credentials": "--credential", "options": "--option", "subscriber_id": "--subscriber"}


def flag(field: str) -> str:
    """The flag users give a library function's field with: budget -> --budget, max_in_flight -> --max-in-flight."""
    return FLAGS.get(field) or "--" + field.replace("_", "-")


def describe(exc: BaseException) -> tuple[str, int]:
    """Return the one line and the exit code for a failure that reached the top."""
    if isinstance(exc, TrackctlError):
        return exc.render(flag), exc.exit_code  # the fields it names, as the flags users typed
    import psycopg

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # psycopg prepares statements it runs often; a pooler in transaction mode that does not keep
    # them hands the next execution to a server connection that never saw them ("does not
    # exist"), or that prepared another client's statement under the same name ("bind message
    # supplies 3 parameters, but prepared statement "_pg3_1" requires 7", a protocol violation,
    # which psycopg files under OperationalError).
    lost = isinstance(exc, (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)) or (
        isinstance(exc, psycopg.errors.ProtocolViolation) and "prepared statement" in first)
    if lost:
        return (f"the database connection lost a prepared statement ({first}): a connection pooler in "
                "transaction mode? (set TRACKCTL_PREPARED_STATEMENTS=off, see docs/SCALING.md)"), EXIT_ERROR
    if isinstance(exc, psycopg.OperationalError):
        return (f"lost the database connection: {first} "
                "(check the server and retry; work already committed is kept)"), EXIT_DATABASE
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        # A number from the command line that the database cannot hold (ids and limits are checked
        # where they are known; this catches the rest).
        return f"a number is out of range: {first} (check the numbers given)", EXIT_USAGE
    return f"unexpected {type(exc).__name__}: {first} (rerun with --debug for details)", EXIT_ERROR


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`). Not an OSError, so that nothing between a
    command and the top mistakes it for a failure: click ends a run that meets EPIPE with exit 1."""


class _GuardedStdout:
    """sys.stdout, with a closed pipe raised as StdoutClosed from every write and flush."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise StdoutClosed() from exc

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise StdoutClosed() from exc

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Make a closed stdout pipe reach the top of the run as StdoutClosed (see end_output)."""
    if sys.stdout is not None and not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout)


def end_output() -> bool:
    """Flush stdout now, where a closed pipe can still be caught, rather than at interpreter exit.

    Return False (and make stdout harmless) when its reader has gone away."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        return True
    except (BrokenPipeError, StdoutClosed):
        stdout_gone()
        return False


def stdout_gone() -> None:
    """The reader of stdout went away (`| head`): point fd 1 at /dev/null so that no later write or
    the flush at interpreter exit fails again. The caller then exits 0, silently."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def interrupted() -> int:
    sys.stderr.write("trackctl: interrupted\n")
    return 130


def stopped(exc: SystemExit) -> int:
    """The one line of a command a signal stopped (errors.Interrupted: exit 130 or 143); any other
    SystemExit is an exit code of its own, returned as it is."""
    from .errors import Interrupted
    from .logs import redact

    if not isinstance(exc, Interrupted):
        return exc.code
    return error_line(redact(str(exc)), exc.exit_code)
