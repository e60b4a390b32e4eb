"""trackctl cancel and trackctl mark: status changes made by a person."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, call, fmt_value, say

COLUMNS = ["code", "order_id", "carrier", "previous_status", "status"]


@app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="ORDER|CODE", help="A tracking code, or an order id (all its shipments)."),
    note: Optional[str] = typer.Option(None, "--note", help="Why; stored as the event's description."),
    carrier: Optional[str] = typer.Option(None, "--carrier", help="Only this carrier's shipments of the order (name or id)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Cancel a shipment, or every shipment of an order; refused for delivered or returned ones.

    All or nothing for an order. Cancelled shipments are no longer polled, and their code is
    not handed out again ('trackctl assign ORDER CARRIER --next-parcel' takes a new one).

    Example: trackctl cancel 42 --note "customer cancelled"

    Example: trackctl cancel 42 --carrier jadlog
    """
    from .output import emit
    from ..shipments import cancel

    changes = call(ctx, cancel, ref, note, carrier=carrier)
    done = [c for c in changes if c.changed]
    already = len(changes) - len(done)
    say(f"cancelled {len(done)} shipment{'s' if len(done) != 1 else ''}"
        + (f"; {already} already cancelled" if already else ""))
    emit(changes, COLUMNS, fmt_value(fmt))


@app.command("mark")
def mark_cmd(
    ctx: typer.Context,
    code: str = typer.Argument(..., help="Tracking code."),
    status: str = typer.Argument(..., help="in_transit, out_for_delivery, failed_attempt, available_for_pickup, "
                                          "exception, delivered, returned or cancelled."),
    note: Optional[str] = typer.Option(None, "--note", help="Stored as the event's description."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Record a status by hand (for carriers without an API); refused when it makes no sense.

    Delivered, returned and cancelled are final, and nothing goes back to pending. Marking
    a stale shipment clears its stale flag.

    Example: trackctl mark AA123456785BR delivered --note "signed by J. Silva"
    """
    from .output import emit
    from ..shipments import mark

    change = call(ctx, mark, code, status, note)
    if not change.new_events:
        say(f"shipment {change.code} is already {change.status}")
    emit([change], COLUMNS, fmt_value(fmt))
