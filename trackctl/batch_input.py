"""Parsing `assign --batch` input: CSV `order,carrier[,parcel]` or JSON lines, line by line.

Every line is judged on its own, so one bad line never stops the others, and lines are read
with a length cap, so a hostile input cannot make trackctl hold more than one capped line.

Read from a file descriptor (`follow`), the records also say when the input pauses: once every
line that had arrived has been handed over and no more bytes are ready, an IDLE record comes
before the read that waits. The batch ends its chunk there, so a program that writes one line to
a running `trackctl assign --batch` (or `tail -f`) gets its answer without closing the input.
"""

from __future__ import annotations

import csv
import json
import os
import select
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from .errors import InvalidValue
from .names import check_order_id, check_parcel

MAX_LINE_BYTES = 8192
FORMATS = ("auto", "csv", "jsonl")
HEADER_ORDER = {"order", "order_id"}
READ_SIZE = 1 << 16
# The record that says "no more input is ready now": (0, {}) compared by identity, never a line.
IDLE: tuple[int, dict] = (0, {})


def _ready(fd: int) -> bool:
    """True when a read of `fd` would not wait (data, end of input, or an error to report)."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True  # let the read itself say what is wrong


def _line(body: bytes, limit: int) -> bytes | None:
    """A line's text without its end, or None when it is over the limit (a CR before LF is the end's)."""
    if len(body) - body.endswith(b"\r") > limit:
        return None
    return body.rstrip(b"\r\n")


def read_fd_lines(fd: int, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None] | tuple[int, dict]]:
    """Yield what read_lines yields, from a file descriptor, with IDLE when the input pauses.

    Reads go straight to the descriptor (os.read), never through a buffered reader that could hold
    lines back while it waits to fill its buffer; at most one capped line is held.
    """
    number = 0
    partial = b""
    skipping = False  # inside a line already known to be over the limit: drop its bytes
    handed = False  # a line went out since the last IDLE
    while True:
        if handed and not _ready(fd):
            handed = False
            yield IDLE
        data = os.read(fd, READ_SIZE)
        if not data:
            break
        parts = data.split(b"\n")
        last = parts.pop()  # the bytes after the last end of line (b"" if the data ended with one)
        for part in parts:
            number += 1
            handed = True
            if skipping:
                skipping, partial = False, b""
                yield number, None
            else:
                body, partial = partial + part, b""
                yield number, _line(body, limit)
        if not skipping:
            partial += last
            if len(partial) > limit + 1:  # over the limit even if a CR ends it: stop keeping it
                skipping, partial = True, b""
    if skipping or partial:
        yield number + 1, None if skipping else _line(partial, limit)


def read_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, raw line without its end); None stands for a line over the limit."""
    number = 0
    while True:
        raw = stream.readline(limit + 2)  # room for a line of exactly the limit and its CRLF ending
        if not raw:
            return
        number += 1
        ended = raw.endswith(b"\n")
        body = raw[:-1] if ended else raw
        if len(body) - body.endswith(b"\r") > limit:
            while not ended:  # skip the rest of the over-long line without keeping it
                more = stream.readline(limit)
                ended = not more or more.endswith(b"\n")
            yield number, None
            continue
        yield number, raw.rstrip(b"\r\n")


def _parcel(value: object) -> int:
    if isinstance(value, str):
        digits = value.strip(" \t")
        # isdigit() alone admits '²', which int() refuses; and int() refuses over 4300 digits.
        if not (digits.isascii() and digits.isdigit()):
            raise InvalidValue(f"parcel must be a whole number, got {value[:20]!r}")
        value = int(digits) if len(digits) <= 9 else 0  # 0: refused below as out of range
    return check_parcel(value)  # type: ignore[arg-type]


def csv_fields(text: str) -> list[str]:
    """Return the comma-separated fields of one line (quoted ones as CSV reads them)."""
    fields = text.split(",") if '"' not in text else next(csv.reader([text]))
    # Spaces and tabs around a field are the writer's layout; anything else str.strip() would take
    # (NEL, the \x1c-\x1f separators) is part of the value, for check_order_id to judge.
    return [f.strip(" \t") for f in fields]


def json_object(text: str, fields: str) -> dict:
    """Return the JSON object on one line, or raise InvalidValue (`fields`: what it must hold)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidValue(f"not valid JSON ({exc.args[0].split(':')[0]})") from None
    except RecursionError:  # a line of thousands of '[' fits in the length cap
        raise InvalidValue("not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise InvalidValue(f"a JSON line must be an object with {fields}")
    return value


def json_carrier(value: object) -> str:
    """Return a JSON line's carrier (a name or a numeric id) as text, or raise InvalidValue."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidValue("carrier must be a name or a numeric id")
    return str(value)


def is_header(text: str, first: set[str]) -> bool:
    """True for a CSV line naming the columns: one of `first`, then carrier (or carrier_id)."""
    head = [f.strip(" \t").lower() for f in text.split(",")]
    return len(head) in (2, 3) and head[0] in first and head[1] in ("carrier", "carrier_id")


def parse_csv(text: str) -> dict:
    fields = csv_fields(text)
    if len(fields) not in (2, 3):
        raise InvalidValue(f"expected 2 or 3 comma-separated fields (order,carrier[,parcel]), got {len(fields)}")
    record = {"order_id": check_order_id(fields[0]), "carrier": fields[1]}
    if not fields[1]:
        raise InvalidValue("carrier is empty")
    if len(fields) == 3 and fields[2]:
        record["parcel"] = _parcel(fields[2])
    return record


def parse_json(text: str) -> dict:
    value = json_object(text, "order_id and carrier")
    order, carrier = value.get("order_id"), value.get("carrier")
    if order is None:
        raise InvalidValue("missing order_id")
    if carrier is None:
        raise InvalidValue("missing carrier")
    if isinstance(order, bool) or not isinstance(order, (str, int)):
        raise InvalidValue("order_id must be a string or an integer")
    carrier = json_carrier(carrier)
    record = {"order_id": check_order_id(str(order)), "carrier": carrier}
    if not carrier:
        raise InvalidValue("carrier is empty")
    if value.get("parcel") is not None:
        record["parcel"] = _parcel(value["parcel"])
    return record


def _is_header(text: str) -> bool:
    return is_header(text, HEADER_ORDER)


def parse_records(stream: BinaryIO, input_format: str = "auto", *,
                  follow: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for every non-blank line; a bad line's record is {"error": reason}.

    In `auto` format a line that starts with `{` is JSON and any other is CSV. A first CSV
    line that reads `order,carrier` (or `order_id,carrier`) is a header and is skipped.
    With `follow` the stream's file descriptor is read directly and IDLE is yielded whenever the
    input pauses (see the module's docstring).
    """
    if input_format not in FORMATS:
        raise InvalidValue(f"unknown input format {input_format!r}", hint="use auto, csv or jsonl")
    items = read_fd_lines(stream.fileno()) if follow else read_lines(stream)
    yield from decode_records(items, input_format, parse_csv, parse_json, _is_header)


def decode_records(items: Iterable, input_format: str, csv_record: Callable[[str], dict],
                   json_record: Callable[[str], dict], is_header: Callable[[str], bool]) -> Iterator:
    """Turn (line number, raw bytes) items into (line number, record) by the given line grammar.

    The rules every batch input shares (`assign --batch`, `track --batch`): the length cap and
    UTF-8, a byte-order mark on line 1, blank lines skipped, `auto` reading a line that starts with
    `{` as JSON, a header only as the first CSV line; a bad line's record is {"error": reason}.
    IDLE items pass through.
    """
    seen_data = False
    for item in items:
        if item is IDLE:
            yield IDLE
            continue
        number, raw = item
        if raw is None:
            yield number, {"error": f"line is longer than {MAX_LINE_BYTES} bytes"}
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, {"error": "not valid UTF-8"}
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        as_json = input_format == "jsonl" or (input_format == "auto" and text.lstrip().startswith("{"))
        if not seen_data and not as_json and is_header(text):
            seen_data = True
            continue
        seen_data = True
        try:
            yield number, json_record(text) if as_json else csv_record(text)
        except InvalidValue as exc:
            yield number, {"error": exc.message}
        except csv.Error as exc:
            yield number, {"error": f"malformed CSV ({exc})"}
