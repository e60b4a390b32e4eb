"""Rendering records for people (rich tables, only on a terminal) and programs (plain, csv, json)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from typing import Any, TextIO

FORMATS = ("table", "plain", "json", "jsonl", "csv")
WHOLE_COLUMNS = {"code", "tracking_id", "order_id", "id", "event_id", "cursor"}
WORD_MAX = 30  # a word longer than this may be folded in a narrow column
FLEX_MIN = 24  # a column of free text is never narrower than this: it wraps between words, not per letter
URL_MAX = 40  # a URL longer than this shows its start and end in a table (plain and json give it whole)
SHORT_ID = 8  # characters a table shows of an id in TableLayout.short (as git shows commits)
GAP = 2  # characters between two columns of a table (one of padding, one of divider)
UNBROKEN = {"url"}  # cut to size already (URL_MAX): shown on one line


@dataclass(frozen=True)
class TableLayout:
    """How a command's records read as a table on a terminal (other formats give every field whole).

    `drop`: columns left out, in this order, while the table is wider than the terminal; `short`:
    columns of long ids shown by their first characters; `labels`: shorter column headers.
    """
    drop: Sequence[str] = ()
    short: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


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
    if isinstance(value, Mapping):  # never Python's repr: KEY=VALUE pairs, as they are typed
        return " ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def table_text(value: Any, column: str = "", layout: TableLayout | None = None) -> str:
    """Return a value as a table cell: local time to the second, short floats, URLs and ids cut to size."""
    if isinstance(value, datetime):
        local = value.astimezone() if value.tzinfo else value
        return local.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    text = _text(value)
    if column == "url" and len(text) > URL_MAX:
        return shorten_url(text)
    if layout is not None and column in layout.short and len(text) > SHORT_ID + 1:
        return text[:SHORT_ID]
    return text


def shorten_url(url: str, limit: int = URL_MAX) -> str:
    """Return `scheme://host/…/end` of a long URL within `limit` characters."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    head = f"{scheme}{sep}{host}{slash}" if sep else ""
    if not head or len(head) + 2 > limit:
        return url[: limit - 1] + "…"
    room = limit - len(head) - 1
    return head + "…" + (url[len(head):][-room:] if room > 0 else "")


def json_line(record: Mapping) -> str:
    return json.dumps(record, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def emit(items: Iterable[Any], columns: Sequence[str], fmt: str | None = None, *,
         out: TextIO | None = None, title: str | None = None, layout: TableLayout | None = None,
         console: Any = None) -> None:
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
        _table(list(records), columns, out, title, layout=layout, console=console)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _flat(record: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (key, value) of a record with nested mappings as dotted keys (options.step)."""
    for key, value in record.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def emit_one(item: Any, columns: Sequence[str] | None, fmt: str | None = None, *, out: TextIO | None = None,
             console: Any = None) -> None:
    """Write one record: an object in json, `key<TAB>value` lines in plain, a two-column table on a terminal.

    Nested mappings (adapter options, intervals) become one line per entry, `options.step`, in
    plain and table; json keeps them as objects.
    """
    out = out or sys.stdout
    fmt = fmt or default_format(out)
    record = as_record(item, columns)
    if fmt == "json":
        json.dump(record, out, default=_json_default, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt in ("jsonl", "csv"):
        emit([record], list(record), fmt, out=out)
    elif fmt == "plain":
        for key, value in _flat(record):
            out.write(f"{key}\t{_text(value)}\n")
    else:
        rows = [{"field": k, "value": table_text(v, k)} for k, v in _flat(record)]
        _table(rows, ["field", "value"], out, None, show_header=False, console=console)


def _fit(widths: dict[str, int], minimums: dict[str, int], room: int) -> dict[str, int]:
    """Narrow the widest flexible column a character at a time, never below its minimum, to fit `room`."""
    widths = dict(widths)
    for _ in range(max(0, sum(widths.values()) - room)):
        flexible = [c for c in widths if widths[c] > minimums[c]]
        if not flexible:
            break
        widths[max(flexible, key=lambda c: widths[c])] -= 1
    return widths


def layout_columns(records: list[dict], columns: Sequence[str], width: int,
                   layout: TableLayout | None = None) -> tuple[list[str], dict[str, int], list[list[str]]]:
    """Return the columns a table of `width` characters shows, their widths, and the cell texts.

    Codes and ids are never cut or wrapped; short values keep their width; free text wraps
    between words but never below FLEX_MIN characters. Columns in `layout.drop` go first, then
    the rightmost ones, until the rest fit.
    """
    layout = layout or TableLayout()
    label = {c: layout.labels.get(c, c) for c in columns}
    cells = {c: [table_text(r.get(c), c, layout) for r in records] for c in columns}
    natural = {c: max([len(label[c])] + [len(line) for x in cells[c] for line in (x.splitlines() or [""])])
               for c in columns}
    # Free text wraps between words, never narrower than FLEX_MIN nor than its longest word (up to
    # WORD_MAX: a longer one is folded), so a host name or a key=value pair is never broken.
    longest = {c: max([0] + [len(w) for x in cells[c] for w in x.split()]) for c in columns}
    minimum = {c: natural[c] if c in WHOLE_COLUMNS or c in UNBROKEN or natural[c] <= FLEX_MIN
               else max(FLEX_MIN, len(label[c]), min(longest[c], WORD_MAX)) for c in columns}
    shown = list(columns)
    order = [c for c in layout.drop if c in shown] + [c for c in reversed(columns) if c not in layout.drop]

    def needed(cols: list[str]) -> int:
        return sum(minimum[c] for c in cols) + GAP * (len(cols) - 1)

    for c in order:
        if needed(shown) <= width or len(shown) == 1:
            break
        shown.remove(c)
    widths = _fit({c: natural[c] for c in shown}, minimum, width - GAP * (len(shown) - 1))
    rows = [[cells[c][i] for c in shown] for i in range(len(records))]
    return shown, widths, rows


def _table(records: list[dict], columns: Sequence[str], out: TextIO, title: str | None,
           show_header: bool = True, layout: TableLayout | None = None, console: Any = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(file=out)
    shown, widths, rows = layout_columns(records, columns, console.width, layout)
    labels = (layout.labels if layout else {})
    table = Table(title=title, show_header=show_header, header_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i, c in enumerate(shown):
        sample = next((r.get(c) for r in records if r.get(c) is not None), None)
        numeric = isinstance(sample, (int, float)) and not isinstance(sample, bool)
        table.add_column(labels.get(c, c), width=widths[c], justify="right" if numeric else "left",
                         no_wrap=c in WHOLE_COLUMNS or c in UNBROKEN, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
