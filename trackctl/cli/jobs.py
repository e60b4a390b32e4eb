"""What every cron-able command shares on the CLI side: logging and signals set up, a progress bar.

The jobs themselves (their run records, outcomes, counts and exit codes) are library functions in
trackctl/jobs.py. A command is:

    start_job(ctx)
    with connection(ctx) as conn, progress("refill", unit="codes") as bar:
        result = jobs.refill(conn, pool, progress=bar)
    emit(result.data, ...)
    result.raise_problem()      # the error line and exit code of a partial or failed run

`progress(...)` gives the callback domain functions accept: `callback(advanced, expected=None)`.
On a terminal (stderr) it drives a rich progress bar; in a pipe, under cron or with JSON logs it
does nothing, so scripts and log files never see control characters.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Optional

import typer

from .app import settings, setup_logging

ProgressCallback = Callable[..., None]


def start_job(ctx: typer.Context) -> None:
    """Set up logging and route SIGINT/SIGTERM to the stop flag the jobs check (trackctl/interrupts.py).

    SIGTERM (from `timeout` in the crontab, systemd, kill) and Ctrl-C then end the job promptly
    with its run recorded (counts so far, partial or failed, "interrupted by SIGINT"), exit 130
    or 143.
    """
    from .. import interrupts

    setup_logging(settings(ctx))
    interrupts.install()


def interactive() -> bool:
    """True when stderr is a terminal and logs are text: the place for bars and live views."""
    from .logsetup import log_format

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
