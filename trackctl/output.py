"""Rendering records for people (rich tables, only on a terminal) and programs (plain, csv, json)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any, TextIO

FORMATS = ("table", "plain", "json", "jsonl", "csv")
WHOLE_COLUMNS = {"code", "tracking_id", "order_id", "id", "event_id", "cursor"}


def default_format(stream: TextIO | None = None) -> str:
    """Return `table` on a terminal and `plain` in a pipe."""
    stream = stream or sys.stdout
    try:
        return "table" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


def as_record(item: Any, columns: Sequence[str] | None = None) -> dict:
    data = asdict(item) if is_dataclass(item) else dict(item)
    return {c: data.get(c) for c in columns} if columns else data


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def json_line(record: Mapping) -> str:
    return json.dumps(record, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def emit(items: Iterable[Any], columns: Sequence[str], fmt: str | None = None, *,
         out: TextIO | None = None, title: str | None = None) -> None:
    """Write records in `fmt`: table (rich), plain (tab-separated, no header), csv, json or jsonl."""
    out = out or sys.stdout
    fmt = fmt or default_format(out)
    records = (as_record(i, columns) for i in items)
    if fmt == "jsonl":
        for r in records:
            out.write(json_line(r) + "\n")
    elif fmt == "json":
        json.dump(list(records), out, default=_json_default, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in records:
            writer.writerow([_text(r[c]) for c in columns])
    elif fmt == "plain":
        for r in records:
            out.write("\t".join(_text(r[c]) for c in columns) + "\n")
    elif fmt == "table":
        _table(list(records), columns, out, title)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def emit_one(item: Any, columns: Sequence[str] | None, fmt: str | None = None, *, out: TextIO | None = None) -> None:
    """Write one record: an object in json, `key<TAB>value` lines in plain, a two-column table on a terminal."""
    out = out or sys.stdout
    fmt = fmt or default_format(out)
    record = as_record(item, columns)
    if fmt == "json":
        json.dump(record, out, default=_json_default, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt in ("jsonl", "csv"):
        emit([record], list(record), fmt, out=out)
    elif fmt == "plain":
        for key, value in record.items():
            out.write(f"{key}\t{_text(value)}\n")
    else:
        _table([{"field": k, "value": _text(v)} for k, v in record.items()], ["field", "value"], out, None,
               show_header=False)


def _table(records: list[dict], columns: Sequence[str], out: TextIO, title: str | None,
           show_header: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=show_header, header_style="bold")
    rows = [[_text(r[c]) for c in columns] for r in records]
    for i, c in enumerate(columns):
        numeric = records and isinstance(records[0].get(c), int) and not isinstance(records[0].get(c), bool)
        if c in WHOLE_COLUMNS:  # codes and ids are copied from the screen: never cut, never wrapped
            width = max([len(c)] + [len(row[i]) for row in rows])
            table.add_column(c, no_wrap=True, min_width=width)
        else:  # a narrow terminal wraps a cell rather than hiding part of it
            table.add_column(c, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(file=out).print(table)
