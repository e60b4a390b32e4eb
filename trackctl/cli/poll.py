"""trackctl poll and trackctl sweep-stale: keep open shipments up to date from their carriers."""

from __future__ import annotations

from typing import Optional

import typer

from . import FORMAT_HELP, Format, app, connection, fmt_value, warn

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
    on stderr); everything that succeeded is recorded either way. Several hosts may run it at
    once: they share the due shipments and each carrier's concurrency cap.

    Example (cron): * * * * * trackctl poll --budget 30s

    Example: trackctl poll --carrier correios --all --format json
    """
    from ..errors import PartialFailure
    from ..names import parse_duration
    from ..output import emit
    from ..poll import poll
    from .jobs import progress, recorded

    seconds = parse_duration(budget)
    with connection(ctx) as conn, recorded(ctx, conn, "poll") as run:
        with progress("poll", unit="requests") as bar:
            report = poll(conn, carrier=carrier, budget=seconds, all_due=all_due, progress=bar)
        run.count(carriers=len(report.carriers), polled=report.polled,
                  ok=sum(c.ok for c in report.carriers), failed=sum(c.failed for c in report.carriers),
                  rate_limited=sum(c.rate_limited for c in report.carriers),
                  new_events=sum(c.new_events for c in report.carriers),
                  changed=sum(c.changed for c in report.carriers), stale=sum(c.stale for c in report.carriers))
        # per carrier, for `trackctl metrics` (trackctl_poll_failures_recent)
        run.count(by_carrier={c.carrier: {"polled": c.polled, "failed": c.failed + c.rate_limited,
                                          "rate_limited": c.rate_limited}
                              for c in report.carriers})
    for f in report.failures[:FAILURES_SHOWN]:
        warn(f"poll: {f.carrier}{' ' + f.code if f.code else ''}: {f.reason}")
    if len(report.failures) > FAILURES_SHOWN:
        warn(f"poll: ... and {len(report.failures) - FAILURES_SHOWN} more failures")
    emit(report.carriers, SUMMARY_COLUMNS, fmt_value(fmt))
    if report.failed:
        what = [f"{report.failed_requests} of {report.polled} carrier requests failed"] if report.failed_requests else []
        if report.unavailable:
            what.append(f"{report.unavailable} carrier{'s' if report.unavailable > 1 else ''} could not be polled")
        raise PartialFailure(" and ".join(what) + " (see above); everything else was recorded",
                             hint="failed shipments back off and are retried by later runs; "
                                  "see 'trackctl carrier show NAME'")


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
    from ..output import emit
    from ..shipments import sweep_stale
    from .jobs import recorded

    with connection(ctx) as conn, recorded(ctx, conn, "sweep-stale") as run:
        changes = sweep_stale(conn)
        run.count(flagged=len(changes))
    emit(changes, STALE_COLUMNS, fmt_value(fmt))
