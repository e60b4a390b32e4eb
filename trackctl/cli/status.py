"""trackctl status: one shipment by code, or the shipments of an order."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .app import FORMAT_HELP, Format, app, connection, fmt_value

COLUMNS = ["code", "order_id", "carrier", "parcel", "status", "label", "pool", "assigned_at", "shipping_date"]


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    code: Optional[str] = typer.Argument(None, help="Tracking code."),
    order: Optional[str] = typer.Option(None, "--order", help="Show every shipment of this order instead."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
    watch: bool = typer.Option(False, "--watch", help="Dashboard only: refresh until Ctrl-C (live on a terminal)."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, max=3600, help="Seconds between --watch refreshes."),
) -> None:
    """Show a shipment: code, order, carrier, status, assigned time.

    Example: trackctl status 5f0c6a0e-8a4e-4b7c-9a43-2f1e2d3c4b5a --format json

    Example: trackctl status --order 42

    With no CODE and no --order: the dashboard (pools, shipments by carrier and status, overdue
    polls, outbox backlog, dead deliveries, the last run of every job).

    Example: trackctl status --watch
    """
    from .output import emit
    from ..status import order_timelines, shipment_timeline

    if code is None and order is None:
        _dashboard(ctx, fmt_value(fmt), watch, interval)
        return
    if code is not None and order is not None:
        raise UsageError("give a CODE or --order ORDER", hint="e.g. trackctl status --order 42")
    if watch:
        raise UsageError("--watch refreshes the dashboard; give neither CODE nor --order with it")
    with connection(ctx) as conn:
        if code is not None:
            _timeline(shipment_timeline(conn, code), fmt_value(fmt))
        else:
            _order(order_timelines(conn, order), fmt_value(fmt))


EVENT_KEYS = ["occurred_at", "status", "description", "location", "raw_status"]
EVENT_COLUMNS = ["occurred_at", "status", "label", "description", "location"]


def _record(tl) -> dict:
    """The shipment's columns, its stale flag and its events: the json/jsonl shape."""
    record = {c: getattr(tl.shipment, c) for c in COLUMNS}
    record["stale"] = tl.stale
    record["events"] = [{k: getattr(e, k) for k in EVENT_KEYS} for e in tl.events]
    return record


def _csv_rows(tl) -> list[dict]:
    """One row per event, each carrying the shipment's own columns; a shipment without events is
    one row with empty event columns."""
    record = {c: getattr(tl.shipment, c) for c in COLUMNS}
    return [{**record, **{f"event_{k}": getattr(e, k) for k in CSV_EVENT_KEYS}} for e in tl.events] or [record]


CSV_EVENT_KEYS = [*EVENT_COLUMNS, "raw_status"]
CSV_COLUMNS = [*COLUMNS, *(f"event_{k}" for k in CSV_EVENT_KEYS)]


def _order(timelines: list, fmt: Optional[str]) -> None:
    """Write an order's shipments: with their events in json (an array), jsonl (a line each) and
    csv (a row per event); one row per shipment in plain and table."""
    from .output import default_format, emit

    fmt = fmt or default_format()
    if fmt in ("json", "jsonl"):
        emit([_record(tl) for tl in timelines], [*COLUMNS, "stale", "events"], fmt)
    elif fmt == "csv":
        emit([row for tl in timelines for row in _csv_rows(tl)], CSV_COLUMNS, "csv")
    else:
        emit([tl.shipment for tl in timelines], COLUMNS, fmt)


def _timeline(tl, fmt: Optional[str]) -> None:
    """Write one shipment and its events: fields then one line per event (plain), nested (json),
    one row per event with the shipment's columns and event_* columns (csv)."""
    import sys

    from .output import _text, default_format, emit, emit_one, json_line

    fmt = fmt or default_format()
    if fmt in ("json", "jsonl"):
        record = _record(tl)
        if fmt == "jsonl":
            sys.stdout.write(json_line(record) + "\n")
        else:
            emit_one(record, None, "json")
    elif fmt == "csv":
        emit(_csv_rows(tl), CSV_COLUMNS, "csv")
    else:
        record = {c: getattr(tl.shipment, c) for c in COLUMNS}
        if tl.stale:
            record["stale"] = f"since {_text(tl.stale_at)}: no news for too long, no longer polled"
        if tl.last_poll_error:
            record["last_poll_error"] = tl.last_poll_error
        if fmt == "plain":
            emit_one(record, None, "plain")
            for e in tl.events:
                label = e.label or f"({e.raw_status})"
                sys.stdout.write("\t".join(["event", _text(e.occurred_at), e.status or "", label,
                                             e.description or "", e.location or ""]) + "\n")
        else:
            emit_one(record, None, "table")
            rows = [{**{k: getattr(e, k) for k in EVENT_COLUMNS}, "label": e.label or f"({e.raw_status})"}
                    for e in tl.events]
            if rows:
                emit(rows, EVENT_COLUMNS, "table", title="events")


def _dashboard(ctx: typer.Context, fmt: Optional[str], watch: bool, interval: float) -> None:
    from ..dashboard import snapshot
    from .output import default_format
    from .app import pipe_output
    from .dashboard import show, watch as watch_dashboard

    fmt = fmt or default_format()
    with connection(ctx) as conn, pipe_output():
        if watch:
            watch_dashboard(conn, fmt, interval)
        else:
            show(snapshot(conn), fmt)
