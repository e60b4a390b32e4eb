"""Tracking numbers trackctl did not issue: `trackctl track CODE --carrier C [--order O]`.

A carrier-issued number (UPS `1Z...`, a DHL waybill, a Jadlog number) becomes a shipment like
any code claimed from a pool: same status model, timeline, polling, outbox events. It has no
pool and no parcel number, and its order is optional. Tracking is idempotent: the same code with
the same carrier (and order) again returns the shipment it already is; a code tracked with
another carrier, or for another order, is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import psycopg

from . import queries
from .carriers import list_carriers, unknown_carrier
from .errors import AlreadyExists, InvalidValue, TrackctlError, UnknownCarrier
from .batch_input import csv_fields, decode_records, is_header, json_carrier, json_object, read_lines
from .names import carrier_ref_id, check_order_id

CODE = re.compile(r"[A-Za-z0-9-]{5,50}")
RETRIES = 3  # a concurrent `track` of the same code: look again
FORMATS = ("auto", "csv", "jsonl")
HEADER_CODE = {"code", "tracking_code", "tracking_number"}


SQL = queries.load("track")


@dataclass(frozen=True)
class Tracked:
    code: str  # the carrier's tracking number
    carrier: str  # the carrier's name
    order_id: str | None  # None for a number tracked without an order
    new: bool  # this call started tracking it
    source: str  # external (a carrier's number) or pool (a code trackctl issued)


@dataclass(frozen=True)
class TrackOutcome:
    """One input line's fate in a batch: a tracked shipment, or a rejection with its reason."""

    line: int  # the input line number, from 1 (blank lines counted)
    tracked: Tracked | None = None  # None when the line was rejected
    error: str | None = None  # why, in one line (shown as `line N: ...` on stderr)


def check_code(code: str) -> str:
    """Return a carrier's tracking number if it is 5-50 letters, digits or '-', else raise."""
    if not isinstance(code, str) or not CODE.fullmatch(code):
        shown = code[:60] if isinstance(code, str) else type(code).__name__
        raise InvalidValue(f"invalid tracking number {shown!r}",
                           hint="5-50 characters: letters, digits and '-', no spaces")
    return code


def track(conn: psycopg.Connection, code: str, carrier: str, order_id: str | None = None) -> Tracked:
    """Start tracking `code` with `carrier` (name or id); return the shipment. Idempotent.

    Raises InvalidValue (bad code or order), UnknownCarrier, or AlreadyExists when the code is
    already tracked with another carrier or for another order, or is a free code of a pool.
    """
    check_code(code)
    if order_id is not None:
        check_order_id(order_id)
    if not (carrier.isascii() and carrier.isprintable()):
        raise unknown_carrier(carrier, list_carriers(conn))
    params = {"code": code, "carrier": carrier, "carrier_id": carrier_ref_id(carrier), "order_id": order_id}
    for _ in range(RETRIES):
        try:
            row = conn.execute(SQL.track_one, params).fetchone()
        except psycopg.errors.UniqueViolation:
            continue
        if row is None:
            raise unknown_carrier(carrier, list_carriers(conn))
        carrier_id, name, inserted, source, old_order, old_carrier_id, old_carrier, pool = row
        if inserted:
            return Tracked(code, name, order_id, new=True, source="external")
        if source is None:
            continue  # another process inserted it after this statement's snapshot: look again
        if old_carrier_id is None:
            raise AlreadyExists(f"code {code} is a free code of pool {pool}, not a carrier's number",
                                hint="give it to an order with 'trackctl assign'")
        if old_carrier_id != carrier_id:
            raise AlreadyExists(f"code {code} is already tracked with carrier {old_carrier}",
                                hint="one code belongs to one carrier; check the carrier")
        if order_id is not None and old_order != order_id:
            held = f"order {old_order}" if old_order is not None else "no order"
            raise AlreadyExists(f"code {code} is already tracked for {held}",
                                hint="a tracked code keeps the order it was first given")
        return Tracked(code, name, old_order, new=False, source=source)
    raise TrackctlError(f"could not track {code} after {RETRIES} attempts",
                        hint="the database is under heavy contention; retry")


# ---------------------------------------------------------------------------------------------
# Batch input: CSV `code,carrier[,order]` or JSON lines {"code", "carrier", "order_id"}, judged
# line by line with the same reading rules as `assign --batch` (trackctl/batch_input.py).


def parse_csv(text: str) -> dict:
    fields = csv_fields(text)
    if len(fields) not in (2, 3):
        raise InvalidValue(f"expected 2 or 3 comma-separated fields (code,carrier[,order]), got {len(fields)}")
    if not fields[1]:
        raise InvalidValue("carrier is empty")
    record = {"code": check_code(fields[0]), "carrier": fields[1]}
    if len(fields) == 3 and fields[2]:
        record["order_id"] = check_order_id(fields[2])
    return record


def parse_json(text: str) -> dict:
    value = json_object(text, "code and carrier")
    code, carrier, order = value.get("code"), value.get("carrier"), value.get("order_id")
    if code is None:
        raise InvalidValue("missing code")
    if carrier is None:
        raise InvalidValue("missing carrier")
    if not isinstance(code, str):
        raise InvalidValue("code must be a string")
    carrier = json_carrier(carrier)
    record = {"code": check_code(code), "carrier": carrier}
    if not carrier:
        raise InvalidValue("carrier is empty")
    if order is not None:
        if isinstance(order, bool) or not isinstance(order, (str, int)):
            raise InvalidValue("order_id must be a string or an integer")
        record["order_id"] = check_order_id(str(order))
    return record


def _is_header(text: str) -> bool:
    return is_header(text, HEADER_CODE)


def parse_records(stream: BinaryIO, input_format: str = "auto") -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) per non-blank line; a bad line's record is {"error": reason}.

    Lines are read by `batch_input.read_lines` (the length cap of `assign --batch`); `auto`
    takes a line starting with `{` as JSON, any other as CSV; a first CSV line `code,carrier`
    is a header.
    """
    if input_format not in FORMATS:
        raise InvalidValue(f"unknown input format {input_format!r}", hint="use auto, csv or jsonl")
    yield from decode_records(read_lines(stream), input_format, parse_csv, parse_json, _is_header)


def track_lines(conn: psycopg.Connection, records: Iterable[tuple[int, dict]]) -> Iterator[TrackOutcome]:
    """Yield one outcome per record, in input order, each line tracked as soon as it is read.

    Each line is its own statement (autocommit): a line's answer never waits for later input,
    and a failing line changes nothing but itself.
    """
    for line, fields in records:
        if "error" in fields:
            yield TrackOutcome(line, error=fields["error"])
            continue
        try:
            tracked = track(conn, fields["code"], fields["carrier"], fields.get("order_id"))
        except (InvalidValue, AlreadyExists, UnknownCarrier) as exc:
            yield TrackOutcome(line, error=str(exc))
        else:
            yield TrackOutcome(line, tracked)
