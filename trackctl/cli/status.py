"""trackctl status: one shipment by code, or the shipments of an order."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from . import FORMAT_HELP, Format, app, connection, fmt_value

COLUMNS = ["code", "order_id", "carrier", "parcel", "status", "label", "pool", "assigned_at", "shipping_date"]


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    code: Optional[str] = typer.Argument(None, help="Tracking code."),
    order: Optional[str] = typer.Option(None, "--order", help="Show every shipment of this order instead."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Show a shipment: code, order, carrier, status, assigned time.

    Example: trackctl status 5f0c6a0e-8a4e-4b7c-9a43-2f1e2d3c4b5a --format json

    Example: trackctl status --order 42
    """
    from ..output import emit, emit_one
    from ..status import shipment_by_code, shipments_by_order

    if (code is None) == (order is None):
        raise UsageError("give a CODE or --order ORDER", hint="e.g. trackctl status --order 42")
    with connection(ctx) as conn:
        if code is not None:
            emit_one(shipment_by_code(conn, code), COLUMNS, fmt_value(fmt))
        else:
            emit(shipments_by_order(conn, order), COLUMNS, fmt_value(fmt))
