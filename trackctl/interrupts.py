"""How SIGINT and SIGTERM stop trackctl's long commands: promptly, and with their work accounted for.

`STOP` is the process's stop flag. The CLI calls `install()` (once; later calls change nothing)
for the commands that run for a while: the jobs (refill, poll, notify, sweep-stale, the prunes),
`demo`, `events` and `status --watch`. From then on a signal does one of two things:

- inside `cooperative()` (a loop that checks `STOP` often: poll's and notify's main threads, the
  demo's cycles, `events --follow`, `status --watch`) the first signal only sets `STOP`. The loop
  sees it within a second, stops starting work, gives back what it holds (leases, claims) and
  returns what it did, so the job layer can record the run with its counts;
- anywhere else (one SQL statement, a COPY), and for a second signal, it raises `Interrupted` at
  once. `Interrupted` is a SystemExit, so no `except Exception` swallows it, psycopg cancels the
  statement in flight and the transaction rolls back: nothing half-written stays.

The CLI's error boundary turns `Interrupted` into one error line and exit code 128 + signal
(130 for SIGINT, 143 for SIGTERM). Library callers that never call `install()` keep Python's
default handlers; they can pass their own flag (anything with `is_set()` and `wait(seconds)`,
`threading.Event` included) to the job functions instead.

Why a flag of our own rather than a `threading.Event`: a signal handler runs in the main thread
between two bytecodes, possibly while that thread is inside the Event's own lock (a plain Lock,
which the handler would then wait on for ever). This flag's condition uses a reentrant lock.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .errors import Interrupted, signal_reason

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set once a stop was asked for (by a signal, or by code); long loops check it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._set = False
        self.signum: int | None = None

    def set(self, signum: int | None = None) -> None:
        with self._cond:
            if not self._set and signum is not None:
                self.signum = signum
            self._set = True
            self._cond.notify_all()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the flag is set or `timeout` seconds pass; return whether it is set."""
        with self._cond:
            return self._cond.wait_for(lambda: self._set, timeout)

    def clear(self) -> None:
        with self._cond:
            self._set = False
            self.signum = None

    @property
    def reason(self) -> str:
        """How the stop reads in a run record: 'interrupted by SIGINT', 'terminated by SIGTERM'."""
        return signal_reason(self.signum) if self.signum is not None else "stopped"

    def interrupted(self, message: str | None = None, hint: str | None = None) -> Interrupted:
        """Return the exception that ends the command for this stop (exit 128 + signal)."""
        return Interrupted(self.signum if self.signum is not None else signal.SIGINT, message, hint)


STOP = StopFlag()
_installed = False
_cooperative = 0  # depth of cooperative() blocks the main thread is in
_deferred = 0  # depth of deferred() blocks: clean-up that must not be cut short


def _handle(signum: int, frame: object) -> None:
    first = not STOP.is_set()
    STOP.set(signum)
    if _deferred > 0 or (first and _cooperative > 0):
        return  # the loop (or the clean-up's caller) sees STOP and winds down with its counts
    raise Interrupted(signum)


def install() -> bool:
    """Route SIGINT and SIGTERM to `STOP` for the rest of the process; return whether they are.

    Only the main thread can install signal handlers; elsewhere this does nothing (False).
    """
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    _installed = True
    return True


def installed() -> bool:
    return _installed


@contextlib.contextmanager
def cooperative() -> Iterator[StopFlag]:
    """Inside the block the first signal only sets `STOP` (the block's loop checks it); yield STOP.

    Entered on entry already stopped (a signal came just before), the block raises at once.
    """
    global _cooperative
    if STOP.is_set():
        raise STOP.interrupted()
    _cooperative += 1
    try:
        yield STOP
    finally:
        _cooperative -= 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside the block no signal raises (it only sets `STOP`): for short clean-up that must finish."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
