"""What `assign --batch` and `track --batch` share: the input formats, opening the input, and
writing each line's outcome (the answer on stdout, a rejection as `line N: reason` on stderr)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Optional

import typer

from ..errors import InputRejected, UsageError


class BatchFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


class InputFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    jsonl = "jsonl"


# The options both batch commands take alike.
InputFile = Annotated[Optional[Path], typer.Option("--input", help="Batch input file instead of stdin.")]
InputFormatOption = Annotated[InputFormat, typer.Option("--input-format", help="Batch input: csv, jsonl, or auto (per line).")]


def open_input(input_file: Optional[Path]) -> BinaryIO:
    """Return the batch's input: --input FILE, else stdin (refused when it is a terminal)."""
    if input_file is None and sys.stdin.isatty():
        raise UsageError("--batch reads lines from stdin, which is a terminal",
                         hint="pipe the lines in, or use --input FILE")
    try:
        return open(input_file, "rb") if input_file else sys.stdin.buffer
    except OSError as exc:
        raise UsageError(f"cannot read {input_file}: {exc.strerror}") from exc


def write_outcomes(outcomes: Iterable[Any], answer: Callable[[Any], Any], write: Callable[[Any], None],
                   bar: Callable[[int], None]) -> tuple[int, int]:
    """Write every outcome (`answer(outcome)` on stdout through `write`, or its error on stderr);
    return (answered, rejected)."""
    answered = rejected = 0
    for n, outcome in enumerate(outcomes, 1):
        if n % 1000 == 0:  # the bar redraws ten times a second; per-line updates would only cost
            bar(1000)
        if outcome.error is not None:
            rejected += 1
            sys.stderr.write(f"line {outcome.line}: {outcome.error}\n")
        else:
            answered += 1
            write(answer(outcome))
    return answered, rejected


def conclude(answered: int, rejected: int, *, done: str, again: str) -> None:
    """Warn about an empty input; raise InputRejected (exit 3) when any line was rejected."""
    from .app import warn

    if answered == 0 and rejected == 0:
        warn("no input lines")
    if rejected:
        raise InputRejected(f"{rejected} of {answered + rejected} lines rejected (see above); the others {done}",
                            hint=f"fix those lines and rerun them: {again} is idempotent")
