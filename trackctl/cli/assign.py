"""trackctl assign: one code for one order, or a batch from stdin."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputRejected, UsageError
from .app import app, connection, pipe_output, settings, warn


class BatchFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


class InputFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    jsonl = "jsonl"


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
    input_file: Optional[Path] = typer.Option(None, "--input", help="Batch input file instead of stdin."),
    input_format: InputFormat = typer.Option(InputFormat.auto, "--input-format",
                                             help="Batch input: csv, jsonl, or auto (per line)."),
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


def _flushing(records: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
    """Pass the input records through, flushing stdout when the input pauses: by the time the
    batch asks for the record after an IDLE, it has written the answers of every line before it,
    so they reach the reader (a co-process, `tail -f | ... | consumer`) before the read that waits."""
    from ..batch_input import IDLE

    for record in records:
        yield record
        if record is IDLE:
            sys.stdout.flush()


def _batch(ctx: typer.Context, input_file: Optional[Path], input_format: str, fmt: str) -> None:
    import csv

    from ..assign_batch import assign_lines
    from ..batch_input import parse_records
    from .jobs import progress

    if input_file is None and sys.stdin.isatty():
        raise UsageError("--batch reads lines from stdin, which is a terminal",
                         hint="pipe the lines in, or use --input FILE")
    try:
        stream = open(input_file, "rb") if input_file else sys.stdin.buffer
    except OSError as exc:
        raise UsageError(f"cannot read {input_file}: {exc.strerror}") from exc
    from ..entry import write_assignment

    rejected = assigned = inline = 0
    writer = csv.writer(sys.stdout, lineterminator="\n")
    with stream, connection(ctx) as conn, pipe_output(), progress("assign", unit="lines") as bar:
        records = _flushing(parse_records(stream, input_format, follow=True))
        for n, outcome in enumerate(assign_lines(conn, records, overlap=True), 1):
            if n % 1000 == 0:  # the bar redraws ten times a second; per-line updates would only cost
                bar(1000)
            if outcome.error is not None:
                rejected += 1
                sys.stderr.write(f"line {outcome.line}: {outcome.error}\n")
                continue
            a = outcome.assignment
            assigned += 1
            inline += a.generated_inline
            write_assignment(fmt, a, writer)
    if inline:
        warn(f"pools ran dry: generated {inline} codes inline; run 'trackctl refill' or raise the targets")
    if assigned == 0 and rejected == 0:
        warn("no input lines")
    if rejected:
        raise InputRejected(f"{rejected} of {assigned + rejected} lines rejected (see above); the others were assigned",
                            hint="fix those lines and rerun them: assigning is idempotent")
