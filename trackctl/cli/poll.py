"""trackctl poll and trackctl sweep-stale: keep open shipments up to date from their carriers."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value, warn

SUMMARY_COLUMNS = ["carrier", "adapter", "polled", "ok", "failed", "rate_limited", "new_events", "changed",
                   "stale", "note"]
STALE_COLUMNS = ["code", "order_id", "carrier", "status", "last_event_at"]
FAILURES_SHOWN = 20


@app.command("poll")
def poll_cmd(
    ctx: typer.Context,
    carrier: Optional[str] = typer.Option(None, "--carrier", help="Only this carrier (default: every carrier with an adapter)."),
    budget: str = typer.Option("50s", "--budget", metavar="DURATION",
                               help="Stop starting new requests after this long (e.g. 45s); requests under way finish."),
    all_due: bool = typer.Option(False, "--all", help="Poll every open shipment now, due or not (never terminal or stale ones)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Fetch every due, unfinished shipment from its carrier and record new events.

    Prints one summary line per carrier. Exits 6 when any request failed (failures are listed
    on stderr; the run is recorded as partial, or failed when no request succeeded); everything
    that succeeded is recorded either way. Ctrl-C or SIGTERM abandons the requests under way and
    gives their shipments back for the next run (exit 130 or 143). Several hosts may run it at
    once: they share the due shipments and each carrier's concurrency cap.

    Example (cron): * * * * * trackctl poll --budget 30s

    Example: trackctl poll --carrier correios --all --format json
    """
    from .. import jobs
    from ..names import parse_duration
    from .output import emit
    from .jobs import progress, start_job

    seconds = parse_duration(budget)
    start_job(ctx)
    with connection(ctx) as conn, progress("poll", unit="requests") as bar:
        result = jobs.poll(conn, carrier=carrier, budget=seconds, all_due=all_due, progress=bar)
    report = result.data
    for f in report.failures[:FAILURES_SHOWN]:
        warn(f"poll: {f.carrier}{' ' + f.code if f.code else ''}: {_as_typed(f.problem, f.carrier) or f.reason}")
    if len(report.failures) > FAILURES_SHOWN:
        warn(f"poll: ... and {len(report.failures) - FAILURES_SHOWN} more failures")
    emit([replace(c, problem=None, note=_as_typed(c.problem, c.carrier) or c.note) for c in report.carriers],
         SUMMARY_COLUMNS, fmt_value(fmt))
    result.raise_problem()


def _as_typed(problem, carrier: str) -> str | None:
    """Why a carrier could not be polled, its settings named as the flags that set them."""
    if problem is None:
        return None
    from ..console import flag
    from ..logs import redact

    return redact(problem.render(flag)).removeprefix(f"carrier {carrier}: ")


@app.command("sweep-stale")
def sweep_stale_cmd(
    ctx: typer.Context,
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Flag open shipments with no news for longer than their carrier's stale-after (default 30 days).

    Stale shipments are no longer polled; `trackctl status` and `trackctl health` show them.
    A new event (or `trackctl mark`) clears the flag.

    Example (cron): 7 * * * * trackctl sweep-stale
    """
    from .. import jobs
    from .output import emit
    from .jobs import start_job

    start_job(ctx)
    with connection(ctx) as conn:
        result = jobs.sweep_stale(conn)
    emit(result.data, STALE_COLUMNS, fmt_value(fmt))
    result.raise_problem()
