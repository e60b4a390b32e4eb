"""trackctl assign: one code for one order, or a batch from stdin."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .app import app, connection, pipe_output, settings
from .batch import BatchFormat, InputFile, InputFormat, InputFormatOption


@app.command("assign")
def assign_cmd(
    ctx: typer.Context,
    order: Optional[str] = typer.Argument(None, help="Order id (1-64 characters, no control characters)."),
    carrier: Optional[str] = typer.Argument(None, help="Carrier name or numeric id."),
    parcel: Optional[int] = typer.Option(None, "--parcel", min=1, max=999, show_default=False,
                                         help="Parcel number for multi-parcel orders (idempotent per number) [default: 1]."),
    next_parcel: bool = typer.Option(False, "--next-parcel",
                                     help="Take a code for a new parcel (highest parcel number + 1). Not idempotent."),
    batch: bool = typer.Option(False, "--batch", help="Read order,carrier lines from stdin (or --input)."),
    input_file: InputFile = None,
    input_format: InputFormatOption = InputFormat.auto,
    fmt: Optional[BatchFormat] = typer.Option(
        None, "--format", show_default=False,
        help="csv (order,carrier,code) or jsonl (order_id, carrier, code, new, parcel); default: csv for a "
             "batch, the bare code for one order."),
) -> None:
    """Print the tracking code of ORDER with CARRIER, claiming a free one the first time.

    The same order and carrier always get the same code back. Only the code goes to stdout:

      CODE=$(trackctl assign 42 correios)

      trackctl assign 42 correios --parcel 2      # second parcel of order 42

      printf '41,correios\\n42,jadlog\\n' | trackctl assign --batch --format jsonl
    """
    if batch or input_file is not None:
        if order is not None or carrier is not None:
            raise UsageError("--batch reads orders from input; do not also give ORDER and CARRIER")
        if parcel is not None or next_parcel:
            raise UsageError("--parcel and --next-parcel are for one order",
                             hint="in a batch, give a line's parcel number in a third column: order,carrier,parcel")
        _batch(ctx, input_file, input_format.value, (fmt or BatchFormat.csv).value)
        return
    if order is None or carrier is None:
        raise UsageError("give ORDER and CARRIER, or --batch", hint="e.g. trackctl assign 42 correios")
    if next_parcel and parcel is not None:
        raise UsageError("give --parcel N or --next-parcel, not both")
    from ..entry import run_assign  # the lean path runs the same function (trackctl/entry.py)

    run_assign(settings(ctx), order, carrier, parcel=parcel, next_parcel=next_parcel,
               fmt=fmt.value if fmt else None)


def _batch(ctx: typer.Context, input_file: Optional[Path], input_format: str, fmt: str) -> None:
    from .batch_io import assign_answers, assign_concluded, open_input
    from .jobs import progress

    stream = open_input(input_file)
    with stream, connection(ctx) as conn, pipe_output(), progress("assign", unit="lines") as bar:
        counts = assign_answers(conn, stream, input_format, fmt, bar)
    assign_concluded(*counts)
