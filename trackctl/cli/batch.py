"""The options `assign --batch` and `track --batch` share (their typer declarations); what they do
with the input and the answers is in trackctl/cli/batch_io.py, which the lean path uses without typer."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


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
