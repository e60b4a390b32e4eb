"""trackctl notify: deliver outbox events to webhook subscribers."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value

REPORT_COLUMNS = ["delivered", "failed", "dead", "disabled", "lost_leases", "released", "breakers", "seconds"]


@app.command("notify")
def notify_cmd(
    ctx: typer.Context,
    budget: Optional[str] = typer.Option(
        None, "--budget", metavar="DURATION",
        help="Keep delivering (retries and new events included) for up to this long, e.g. 45s; "
             "without it, stop as soon as nothing is due."),
    follow: bool = typer.Option(False, "--follow", help="Keep running and deliver new events as they come "
                                                        "(until --budget or Ctrl-C)."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, max=512,
                                    help="Requests in flight at once to one subscriber (each has its own lane; "
                                         "its --max-in-flight caps it too)."),
    timeout: str = typer.Option("10s", "--timeout", metavar="DURATION",
                                help="Total time one request may take (connect, send, answer); "
                                     "connecting gets at most 3 s of it."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Deliver due webhook deliveries: signed POSTs, retried on each subscriber's schedule.

    A delivery is done only after a 2xx; after its last attempt it is dead (see 'trackctl webhook
    replay'); 410 Gone disables the subscriber. Safe to run on several hosts at once. Each
    subscriber has its own lane and breaker: one that never answers slows only itself. Ctrl-C or
    SIGTERM ends the run within a second or two; unfinished deliveries stay pending.

    Example (cron): * * * * * trackctl notify --budget 30s
    """
    from .. import jobs
    from ..logs import get_logger
    from ..names import parse_duration
    from .output import emit_one
    from .jobs import progress, start_job

    budget_s = float(parse_duration(budget)) if budget is not None else None
    timeout_s = float(parse_duration(timeout))
    log = get_logger("notify")

    def on_outcome(outcome, new_status: str) -> None:
        c = outcome.claim
        if outcome.ok:
            log.debug("delivery %s (%s) to webhook %s: HTTP %s", c.id, c.event_id, c.subscriber_id, outcome.http_status)
        elif new_status == "dead":
            log.warning("delivery %s (%s) to webhook %s is dead after its last attempt: %s",
                        c.id, c.event_id, c.subscriber_id, outcome.error)
        else:
            log.debug("delivery %s (%s) to webhook %s failed (%s): %s", c.id, c.event_id, c.subscriber_id,
                      new_status, outcome.error)

    start_job(ctx)
    with connection(ctx) as conn, progress("notify", unit="attempts") as bar:

        def observe(outcome, new_status: str) -> None:
            bar(1)
            on_outcome(outcome, new_status)

        # SIGINT/SIGTERM set the stop flag the engine checks (trackctl/interrupts.py): it abandons
        # its requests, releases its rows, and the run is recorded with its counts.
        result = jobs.notify(conn, budget=budget_s, follow=follow, concurrency=concurrency, timeout=timeout_s,
                             on_outcome=observe)
    report = result.data
    for sub_id in report.disabled_ids:
        log.warning("webhook %s is disabled: its endpoint answered 410 Gone (enable it again with "
                    "'trackctl webhook enable %s')", sub_id, sub_id)
    emit_one(report, REPORT_COLUMNS, fmt_value(fmt))
    result.raise_problem()
