"""trackctl track: start tracking numbers a carrier issued (one, or a batch from stdin)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .app import app, connection, pipe_output
from .batch import BatchFormat, InputFile, InputFormat, InputFormatOption


def _line(fmt: str, t) -> str:
    """One tracked shipment as its output line: CSV (code,carrier,order_id) or a JSON line."""
    if fmt == "jsonl":
        from .output import json_line

        return json_line({"code": t.code, "carrier": t.carrier, "order_id": t.order_id,
                          "new": t.new, "source": t.source}) + "\n"
    from ..entry import csv_field

    return f"{csv_field(t.code)},{csv_field(t.carrier)},{csv_field(t.order_id or '')}\n"


@app.command("track")
def track_cmd(
    ctx: typer.Context,
    code: Optional[str] = typer.Argument(None, help="The carrier's tracking number (5-50 letters, digits, '-')."),
    carrier: Optional[str] = typer.Option(None, "--carrier", help="Carrier name or numeric id."),
    order: Optional[str] = typer.Option(None, "--order", help="Order id the number belongs to (optional)."),
    batch: bool = typer.Option(False, "--batch", help="Read code,carrier[,order] lines from stdin (or --input)."),
    input_file: InputFile = None,
    input_format: InputFormatOption = InputFormat.auto,
    fmt: Optional[BatchFormat] = typer.Option(
        None, "--format", show_default=False,
        help="csv (code,carrier,order) or jsonl (code, carrier, order_id, new, source); default: csv for a "
             "batch, the bare code for one number."),
) -> None:
    """Start tracking a number the carrier issued (UPS 1Z..., a DHL waybill, a Jadlog number).

    It becomes a shipment like any assigned code: polled, with status, timeline and events.
    Idempotent; a code already tracked with another carrier is refused. Prints the code:

      trackctl track 1Z999AA10123456784 --carrier ups --order 42

      printf '1Z999AA10123456784,ups,42\\n10084531234,jadlog\\n' | trackctl track --batch
    """
    if batch or input_file is not None:
        if code is not None or carrier is not None or order is not None:
            raise UsageError("--batch reads codes from input; do not also give CODE, --carrier or --order")
        _batch(ctx, input_file, input_format.value, (fmt or BatchFormat.csv).value)
        return
    if code is None or carrier is None:
        raise UsageError("give CODE and --carrier, or --batch", hint="e.g. trackctl track 1Z999AA10123456784 --carrier ups")
    from ..track import track

    with connection(ctx) as conn:
        result = track(conn, code, carrier, order)
    if fmt is None:
        sys.stdout.write(result.code + "\n")
    else:
        sys.stdout.write(_line(fmt.value, result))


def _batch(ctx: typer.Context, input_file: Optional[Path], input_format: str, fmt: str) -> None:
    from ..track import parse_records, track_lines
    from .batch_io import Answers, conclude, open_input, write_outcomes
    from .jobs import progress

    stream = open_input(input_file)
    with stream, connection(ctx) as conn, pipe_output(), progress("track", unit="lines") as bar:
        # One answer at a time, flushed: each reaches the reader at once, even while input pauses.
        tracked, rejected = write_outcomes(track_lines(conn, parse_records(stream, input_format)),
                                           lambda o: _line(fmt, o.tracked), bar, Answers(hold=1))
    conclude(tracked, rejected, done="are tracked", again="tracking")
