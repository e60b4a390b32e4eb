"""trackctl carrier: the freight carriers codes are assigned for."""

from __future__ import annotations

from typing import Optional

import typer

from . import FORMAT_HELP, Format, app, connection, fmt_value, say

carrier_app = typer.Typer(help="Freight carriers (referenced by name or numeric id).", no_args_is_help=True)
app.add_typer(carrier_app, name="carrier")

COLUMNS = ["id", "name", "pool"]


@carrier_app.command("add")
def add_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Lowercase name, e.g. correios."),
    carrier_id: Optional[int] = typer.Option(None, "--id", help="Numeric id (freightcarrier_id); default next free."),
    pool: str = typer.Option("default", "--pool", help="Pool its codes come from."),
) -> None:
    """Add a carrier.

    Example: trackctl carrier add correios --id 3 --pool default
    """
    from ..carriers import add_carrier

    with connection(ctx) as conn:
        carrier = add_carrier(conn, name, carrier_id, pool)
    say(f"added carrier {carrier.name} (id {carrier.id}, pool {carrier.pool})")


@carrier_app.command("list")
def list_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List carriers.

    Example: trackctl carrier list --format json
    """
    from ..carriers import list_carriers
    from ..output import emit

    with connection(ctx) as conn:
        emit(list_carriers(conn), COLUMNS, fmt_value(fmt))
