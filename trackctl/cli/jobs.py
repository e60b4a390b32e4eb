"""What every cron-able command shares: its run recorded, its logs bound to the run, a progress bar.

A command becomes a recorded job with one `with`:

    with connection(ctx) as conn, recorded(ctx, conn, "refill") as run:
        results = refill(conn, pool, progress=bar)
        run.count(generated=...)
        if nothing_could_be_done: run.skip("another host holds the lock")

`progress(...)` gives the callback domain functions accept: `callback(advanced, expected=None)`.
On a terminal (stderr) it drives a rich progress bar; in a pipe, under cron or with JSON logs it
does nothing, so scripts and log files never see control characters.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Optional

import typer

from ..errors import Terminated
from . import settings, setup_logging

ProgressCallback = Callable[..., None]


def _terminated(signum: int, frame: object) -> None:
    raise Terminated("terminated by SIGTERM", hint="the job ran past its time limit, or was stopped")


@contextlib.contextmanager
def recorded(ctx: typer.Context, conn, job: str) -> Iterator:
    """Record the run of `job` on `conn` around the block; yield the run's recorder.

    SIGTERM (from `timeout` in the crontab, systemd, kill) ends the job through the usual error
    path, so its run is stored as failed rather than left running.
    """
    from ..runs import recorded_run

    setup_logging(settings(ctx))
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with recorded_run(conn, job) as run:
            yield run
    finally:
        signal.signal(signal.SIGTERM, previous)


def interactive() -> bool:
    """True when stderr is a terminal and logs are text: the place for bars and live views."""
    from ..console import log_format

    try:
        return sys.stderr.isatty() and log_format() == "text"
    except (AttributeError, ValueError):
        return False


def _noop(advanced: int = 1, expected: Optional[int] = None) -> None:
    pass


@contextlib.contextmanager
def progress(description: str, total: Optional[int] = None, unit: str = "") -> Iterator[ProgressCallback]:
    """Yield `callback(advanced=1, expected=None)`: a rich bar on a terminal, nothing elsewhere.

    Domain code calls `callback(n)` when n more units are done and `callback(0, expected=n)` when
    it learns that n more units are coming (the bar's total grows; without any, it just counts).
    """
    if not interactive():
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(advanced: int = 1, expected: Optional[int] = None) -> None:
            if expected:
                bar.update(task, total=(bar.tasks[0].total or 0) + expected)
            if advanced:
                bar.advance(task, advanced)

        yield advance
