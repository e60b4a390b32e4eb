"""trackctl carrier stats and trackctl shipments: what was asked of carriers, and finding shipments."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, call, connection, fmt_value
from .carrier import carrier_app

STATS_COLUMNS = ["carrier", "requests", "failed", "rate_limited", "numbers", "latency_p50_ms", "latency_p95_ms",
                 "registered"]
SHIPMENT_COLUMNS = ["code", "order_id", "carrier", "status", "updated_at", "stale"]


@carrier_app.command("stats")
def stats_cmd(
    ctx: typer.Context,
    since: str = typer.Option("24h", "--since", metavar="DURATION", help="Window to count over (e.g. 1h, 24h, 7d)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Requests made to each polled carrier: failed, rate limited, numbers asked, latency, registered.

    The counts are the HTTP requests the carrier's server received from trackctl; `registered`
    (17track) is the numbers registered, each a unit of the account's quota.

    Example: trackctl carrier stats --since 1h --format json
    """
    from datetime import timedelta

    from ..carrier_stats import carrier_stats
    from ..names import parse_duration
    from .output import emit

    window = timedelta(seconds=parse_duration(since))
    emit(call(ctx, carrier_stats, window), STATS_COLUMNS, fmt_value(fmt))


@app.command("shipments")
def shipments_cmd(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", metavar="S,...", help="Only these statuses (comma-separated)."),
    carrier: Optional[str] = typer.Option(None, "--carrier", help="Only this carrier (name or id)."),
    stale: bool = typer.Option(False, "--stale", help="Only shipments flagged stale."),
    no_news_for: Optional[str] = typer.Option(None, "--no-news-for", metavar="DURATION",
                                              help="Only shipments with no news for this long (e.g. 5d)."),
    since: Optional[str] = typer.Option(None, "--since", metavar="DURATION",
                                        help="Only shipments with news (or assigned) within this long (e.g. 24h)."),
    order: Optional[str] = typer.Option(None, "--order", help="Only this order's shipments."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many (most recently updated first)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """List shipments: the problem view.

    Example: trackctl shipments --status exception --since 24h        # exceptions today

    Example: trackctl shipments --status failed_attempt --carrier jadlog

    Example: trackctl shipments --no-news-for 5d --format json
    """
    from datetime import timedelta

    from ..carrier_stats import find_shipments
    from ..names import parse_duration
    from .output import emit

    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    quiet = timedelta(seconds=parse_duration(no_news_for)) if no_news_for else None
    recent = timedelta(seconds=parse_duration(since)) if since else None
    with connection(ctx) as conn:
        rows = find_shipments(conn, statuses=statuses, carrier=carrier, stale=stale, no_news_for=quiet,
                              since=recent, order_id=order, limit=limit)
    emit(rows, SHIPMENT_COLUMNS, fmt_value(fmt))
