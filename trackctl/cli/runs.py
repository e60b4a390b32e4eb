"""trackctl runs: the recorded runs of the cron-able commands."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value, pipe_output

runs_app = typer.Typer(invoke_without_command=True)  # its help is the callback's docstring, with examples
app.add_typer(runs_app, name="runs")

COLUMNS = ["id", "job", "host", "pid", "started_at", "finished_at", "seconds", "outcome", "counts", "error"]


def table_layout():
    """On a terminal: run ids by their first 8 characters; on a narrow one, what ran, when, how it ended."""
    from .output import TableLayout

    return TableLayout(drop=("finished_at", "pid", "host", "id", "counts"), short=("id",),
                       labels={"started_at": "started", "finished_at": "finished", "seconds": "secs"})


@runs_app.callback()
def runs_cmd(
    ctx: typer.Context,
    job: Optional[str] = typer.Option(None, "--job", help="Only runs of this job (refill, poll, notify, ...)."),
    limit: int = typer.Option(20, "--limit", help="At most this many runs, newest first."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """List recorded runs, newest first; a run whose process died shows outcome `died`.

    Example: trackctl runs --job refill --limit 5

    Example: trackctl runs prune --older-than 90d
    """
    if ctx.invoked_subcommand is not None:
        return
    from .output import emit
    from ..runs import counts_text, list_runs

    with connection(ctx) as conn:
        runs = list_runs(conn, job, limit)
    fmt_name = fmt_value(fmt)
    if fmt_name in ("json", "jsonl"):
        emit(runs, COLUMNS, fmt_name)
        return
    records = [{**{c: getattr(r, c) for c in COLUMNS}, "counts": counts_text(r.counts)} for r in runs]
    with pipe_output():
        emit(records, COLUMNS, fmt_name, layout=table_layout())


@runs_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option("90d", "--older-than", help="Age of the runs to delete: 90d, 12w, 48h."),
) -> None:
    """Delete finished runs older than the given age (a cron job of its own, recorded too).

    Example (cron): 43 3 * * * trackctl runs prune --older-than 90d
    """
    from datetime import timedelta

    from .. import jobs
    from ..names import parse_duration
    from .jobs import start_job

    age = timedelta(seconds=parse_duration(older_than))
    start_job(ctx)
    with connection(ctx) as conn:
        result = jobs.runs_prune(conn, age)
    result.raise_problem()
