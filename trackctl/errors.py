"""Errors with an exit code and a hint; only the CLI's top level turns them into output.

Errors name the fields of the library's functions, not the CLI's flags: a message written
`f"{param('budget')} must be zero or more"` reads "budget must be zero or more" to a library caller
(`str(exc)`, `exc.message`, `exc.field == "budget"`), and the CLI's error boundary
(trackctl/console.py) shows the same error as "--budget must be zero or more" through `render()`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

# Exit codes are part of the public interface (README, "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3  # some input lines were rejected, the rest went through
EXIT_DATABASE = 4  # database unreachable
EXIT_SCHEMA = 5  # schema behind the code, or an applied migration was edited
EXIT_PARTIAL = 6  # some carrier requests failed; what succeeded was recorded
EXIT_GROUP_FULL = 7  # a consumer group already has its 6 live collectors
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2), Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), e.g. from `timeout` in the crontab


_MARK = "\x1f"  # around a field's name in an error's text (a control character no value carries)
_FIELD = re.compile(f"{_MARK}([a-z][a-z0-9_]*){_MARK}")


def param(name: str) -> str:
    """Name the field (a parameter of a library function) `name` in an error's message or hint."""
    return f"{_MARK}{name}{_MARK}"


class TrackctlError(Exception):
    """A failure the user can act on: one line of message, one line of hint.

    `fields` are the fields the text names (see param()), `field` the first of them (or the one
    given), `value` the offending value when the raiser gives it.
    """

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None, *, field: str | None = None,
                 value: object = None) -> None:
        self._text = (message, hint)
        self.fields = tuple(dict.fromkeys(_FIELD.findall(message + (hint or ""))))
        self.field = field or (self.fields[0] if self.fields else None)
        self.value = value
        self.message = _FIELD.sub(r"\1", message)
        self.hint = None if hint is None else _FIELD.sub(r"\1", hint)
        super().__init__(self.message)

    def render(self, name_of: Callable[[str], str] | None = None) -> str:
        """The one line (message and hint), each field named as `name_of(field)` gives it."""
        message, hint = self._text
        if name_of is not None:
            message = _FIELD.sub(lambda m: name_of(m.group(1)), message)
            hint = None if hint is None else _FIELD.sub(lambda m: name_of(m.group(1)), hint)
        else:
            message, hint = self.message, self.hint
        if not hint:
            return message
        if message.endswith(")"):  # "... (known: a, b)": the hint joins that parenthesis
            return f"{message[:-1]}; {hint})"
        return f"{message} ({hint})"

    def __str__(self) -> str:
        return self.render()

    def within(self, context: str) -> TrackctlError:
        """The same error (class, hint, fields, value) with `context` put before its message."""
        message, hint = self._text
        other = copy.copy(self)
        other._text = (context + message, hint)
        other.message = context + self.message
        other.args = (other.message,)
        return other


class UsageError(TrackctlError):
    exit_code = EXIT_USAGE


class InvalidValue(UsageError):
    """A value given on the command line or in input is malformed."""


class NotFound(TrackctlError):
    pass


class UnknownCarrier(NotFound):
    pass


class UnknownPool(NotFound):
    pass


class AlreadyExists(TrackctlError):
    pass


class PoolExhausted(TrackctlError):
    pass


class InUse(TrackctlError):
    """A pool or carrier that something still needs cannot be removed (nothing was changed)."""


class CodeCancelled(TrackctlError):
    """The code of (order, carrier, parcel) was cancelled: it is not handed out as a live code."""


class NotPollable(TrackctlError):
    """A carrier asked to be polled cannot be: no adapter (the exit code of a carrier that failed)."""

    exit_code = EXIT_PARTIAL


class DatabaseUnavailable(TrackctlError):
    exit_code = EXIT_DATABASE


class SchemaOutOfDate(TrackctlError):
    exit_code = EXIT_SCHEMA


class MigrationEdited(TrackctlError):
    exit_code = EXIT_SCHEMA


class InputRejected(TrackctlError):
    """Some input lines were rejected; the good ones were applied."""

    exit_code = EXIT_REJECTED


class Interrupted(SystemExit):
    """SIGINT or SIGTERM stopped the command: exit 128 + the signal's number (130, 143).

    A SystemExit, not an Exception: no `except Exception` on the way up swallows it, psycopg
    cancels the statement in flight when it passes through a query, and typer lets it through
    to the CLI's error boundary, which writes its one line (see interrupts.py).
    """

    def __init__(self, signum: int, message: str | None = None, hint: str | None = None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message or signal_reason(signum)
        self.hint = hint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def signal_reason(signum: int) -> str:
    """Return how a run stopped by `signum` reads: 'interrupted by SIGINT', 'terminated by SIGTERM'."""
    import signal

    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"terminated by {name}" if name == "SIGTERM" else f"interrupted by {name}"


class TransitionRefused(TrackctlError):
    """A manual status change that makes no sense (cancel a delivered parcel)."""


class PartialFailure(TrackctlError):
    """A run did part of its work: some requests failed, the rest was recorded."""

    exit_code = EXIT_PARTIAL


class GroupFull(TrackctlError):
    """A consumer group already has its 6 live collectors: the 7th is refused at once."""

    exit_code = EXIT_GROUP_FULL
