"""Property-based tests: any batch input line gives a record or a clear rejection, never an exception;
accepted lines read back exactly what was written; and through the real batch path on a real
database every good line is assigned once, every bad line rejected with its number, nothing else."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trackctl.assign import assign_lines
from trackctl.batch_input import MAX_LINE_BYTES, parse_records
from trackctl.errors import InvalidValue
from trackctl.names import ORDER_ID_MAX, check_order_id
from trackctl.pools import refill

pytestmark = pytest.mark.faults


def records(data: bytes, fmt: str = "auto") -> list[tuple[int, dict]]:
    return list(parse_records(io.BytesIO(data), fmt))


def follows_the_order_id_rule(value: str) -> bool:
    """README: 1 to 64 characters without control characters (C0, DEL and C1: Unicode Cc, and the
    line and paragraph separators) or surrounding spaces; and text that UTF-8 can hold."""
    return (1 <= len(value) <= ORDER_ID_MAX and value == value.strip()
            and not any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" or "\ud800" <= c <= "\udfff"
                        for c in value))


def is_valid_record(record: dict) -> bool:
    if "error" in record:
        return isinstance(record["error"], str) and record["error"] != "" and "\n" not in record["error"]
    return (set(record) <= {"order_id", "carrier", "parcel"} and follows_the_order_id_rule(record["order_id"])
            and record["carrier"] != "" and 1 <= record.get("parcel", 1) <= 999)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["auto", "csv", "jsonl"]))
def test_any_bytes_give_records_or_one_line_rejections(data, fmt):
    out = records(data, fmt)
    numbers = [n for n, _ in out]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all(is_valid_record(r) for _, r in out), out


@pytest.mark.parametrize("order", ["a\x85b", "\x80", "x\x9f", "a\x7f", "a\x01", " a", "a\u2029", "x" * 65, ""])
def test_the_record_oracle_refuses_the_order_ids_check_order_id_refuses(order):
    with pytest.raises(InvalidValue):
        check_order_id(order)
    assert not is_valid_record({"order_id": order, "carrier": "correios"})


# -- CSV lines read back exactly -------------------------------------------------------------
#
# A generated line: order and carrier fields, each written plain or quoted (RFC 4180: inside
# quotes a quote is doubled, commas are data), an optional parcel field and optional extra fields.
# Plain fields hold no quote or comma (a comma there is a field separator: see `extra`). No field
# holds a line break (LF or CR), so the lines are the generated rows.

FIELD = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=70)
PARCEL = st.one_of(st.none(), st.integers(-3, 1200).map(str), st.sampled_from(["", " 7 ", "²", "1e2", "0x1", "٣"]))
CSV_ROW = st.tuples(FIELD, FIELD, st.booleans(), st.booleans(), PARCEL, st.integers(0, 2))


def write_field(value: str, quoted: bool) -> tuple[str, str]:
    """Return (the field as written, the value it stands for)."""
    if quoted:
        return '"' + value.replace('"', '""') + '"', value
    plain = value.replace('"', "").replace(",", "")
    return plain, plain


def expected_csv(order: str, carrier: str, parcel: str | None, extra: int) -> dict | None:
    """The record a line of these fields must give, or None when it must be rejected."""
    # Only spaces and tabs around a field are layout (README): anything else is part of the value.
    fields = [order.strip(" \t"), carrier.strip(" \t")] + ([parcel.strip(" \t")] if parcel is not None else []) \
        + ["x"] * extra
    if len(fields) not in (2, 3) or not follows_the_order_id_rule(fields[0]) or not fields[1]:
        return None
    record = {"order_id": fields[0], "carrier": fields[1]}
    if len(fields) == 3 and fields[2]:
        if not (fields[2].isascii() and fields[2].isdigit() and 1 <= int(fields[2]) <= 999):
            return None
        record["parcel"] = int(fields[2])
    return record


@settings(max_examples=400, deadline=None)
@given(st.lists(CSV_ROW, max_size=20))
@example([("41", "correios", False, False, None, 0), ('a "quoted", id', " jadlog ", True, True, "2", 0)])
@example([("order", "carrier", False, False, None, 0), ("42", "correios", False, False, None, 0)])  # a header
def test_csv_lines_are_either_accepted_unchanged_or_rejected(rows):
    lines, wanted = [], []
    for number, (order, carrier, quote_order, quote_carrier, parcel, extra) in enumerate(rows, 1):
        order_text, order_value = write_field(order, quote_order)
        carrier_text, carrier_value = write_field(carrier, quote_carrier)
        parts = [order_text, carrier_text] + ([parcel] if parcel is not None else []) + ["x"] * extra
        lines.append(",".join(parts))
        if number == 1 and not quote_order:
            order_value = order_value.removeprefix("\ufeff")  # a byte order mark opens the input, not the id
        header = (number == 1 and not quote_order and not quote_carrier and len(parts) in (2, 3)
                  and order_value.strip(" \t").lower() in ("order", "order_id")
                  and carrier_value.strip(" \t").lower() in ("carrier", "carrier_id"))
        if not header:  # README: a first line `order,carrier` is an optional header
            wanted.append((number, expected_csv(order_value, carrier_value, parcel, extra)))
    data = "".join(line + "\n" for line in lines).encode()
    out = records(data, "csv")
    assert [n for n, _ in out] == [n for n, _ in wanted], f"one result per data line:\n{lines}\n{out}"
    for (number, record), (_, expected) in zip(out, wanted):
        line = lines[number - 1]
        if expected is None:
            assert "error" in record and is_valid_record(record), f"line {number} {line!r} accepted: {record}"
        else:
            assert record == expected, f"line {number} {line!r} read as {record}, written as {expected}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=80), st.text(max_size=20)), max_size=20))
def test_any_csv_text_gives_valid_records_or_one_line_rejections(rows):
    data = "".join(f"{o},{c}\n" for o, c in rows).encode("utf-8", "surrogatepass")
    for _, record in records(data, "csv"):
        assert is_valid_record(record), record


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["order_id", "carrier", "parcel", "x"]),
                                st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                                          st.text(max_size=70), st.lists(st.integers(), max_size=2))),
                max_size=20))
def test_json_lines_are_either_accepted_or_rejected(objects):
    data = "".join(json.dumps(o) + "\n" for o in objects).encode()
    out = records(data, "jsonl")
    assert len(out) == len(objects)
    for (_, record), obj in zip(out, objects):
        assert is_valid_record(record)
        if "error" not in record:
            assert record["order_id"] == str(obj["order_id"])


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=100))
@example("a\x85b")
@example("\x9f")
def test_order_ids_are_accepted_exactly_when_they_follow_the_rules(value):
    try:
        assert check_order_id(value) == value
        accepted = True
    except InvalidValue as exc:
        assert exc.message
        accepted = False
    assert accepted == follows_the_order_id_rule(value), repr(value)


def test_a_line_over_the_cap_is_rejected_and_the_next_line_still_parses():
    data = b"1," + b"x" * (MAX_LINE_BYTES * 3) + b"\n2,correios\n"
    out = records(data)
    assert out[0][0] == 1 and "longer than" in out[0][1]["error"]
    assert out[1] == (2, {"order_id": "2", "carrier": "correios"})


# -- the batch path on a real database -------------------------------------------------------
#
# Lines of one example share a fresh prefix in their order ids, bad lines included, so whatever a
# bad line might have half-written would show up under the prefix.

CARRIERS = {"correios": (3, "correios"), "3": (3, "correios"), "03": (3, "correios"),
            "jadlog": (7, "jadlog"), "7": (7, "jadlog")}
SUFFIX = st.text(st.sampled_from("abcXYZ019-_.çé€ 中"), max_size=6).map(str.strip)
GOOD_LINE = st.tuples(st.just("good"), st.sampled_from(["csv", "jsonl"]), st.integers(0, 5), SUFFIX,
                      st.sampled_from(sorted(CARRIERS)), st.sampled_from([None, 1, 2, 3]))
BAD_KINDS = ["empty order", "C0 control", "C1 control", "too long", "unknown carrier", "parcel 0", "parcel 1000",
             "parcel text", "four fields", "bad json", "json without carrier", "json order list", "not utf-8",
             "empty carrier"]
BAD_LINE = st.tuples(st.just("bad"), st.sampled_from(BAD_KINDS), st.integers(0, 5))


def good_line(prefix: str, fmt: str, k: int, suffix: str, carrier: str, parcel: int | None) -> tuple[bytes, tuple]:
    """Return a good line and the (order, carrier id, carrier name, parcel) it must be assigned."""
    order = f"{prefix}-g{k}{suffix}"
    if fmt == "csv":
        text = f"{order},{carrier}" + (f",{parcel}" if parcel is not None else "")
    else:
        text = json.dumps({"order_id": order, "carrier": carrier, **({"parcel": parcel} if parcel else {})},
                          ensure_ascii=k % 2 == 0)
    return text.encode(), (order, *CARRIERS[carrier], parcel or 1)


def bad_line(prefix: str, kind: str, k: int) -> bytes:
    order = f"{prefix}-b{k}"
    return {
        "empty order": ",correios",
        "C0 control": f"{order}\x01,correios",
        "C1 control": f"{order}\x85x,jadlog",  # inside: at an edge NEL is whitespace, trimmed
        "too long": f"{order}{'x' * ORDER_ID_MAX},correios",
        "unknown carrier": f"{order},nosuch",
        "parcel 0": f"{order},correios,0",
        "parcel 1000": f"{order},correios,1000",
        "parcel text": f"{order},jadlog,two",
        "four fields": f"{order},correios,1,x",
        "bad json": '{"order_id": "' + order + '", "carrier": ',
        "json without carrier": json.dumps({"order_id": order}),
        "json order list": json.dumps({"order_id": [order], "carrier": "correios"}),
        "empty carrier": f"{order}, ",
    }.get(kind, f"{order},correios").encode() if kind != "not utf-8" else order.encode() + b"\xff\xfe,correios"


SHIPMENTS_OF = """
SELECT t.order_id, t.freightcarrier_id, t.parcel, t.tracking_id,
       (SELECT array_agg(o.payload->>'code') FROM sequencing.outbox o
        WHERE o.shipment_id = t.id AND o.type = 'tracking.assigned')
FROM sequencing.tracking t WHERE t.order_id LIKE %s
"""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(GOOD_LINE, BAD_LINE), min_size=1, max_size=14),
       chunk_size=st.sampled_from([1, 3, 5000]), overlap=st.booleans())
def test_batch_lines_through_the_library_assign_good_lines_once_and_reject_bad_ones_whole(
        stocked, lines, chunk_size, overlap):
    conn = stocked
    refill(conn)  # tops the pool up again after the previous examples
    prefix = f"bt{uuid.uuid4().hex[:10]}"
    raw, expected = [], []  # expected: per line, ("good", key) or ("bad", kind)
    for line in lines:
        if line[0] == "good":
            text, key = good_line(prefix, *line[1:])
            raw.append(text)
            expected.append(("good", key))
        else:
            raw.append(bad_line(prefix, line[1], line[2]))
            expected.append(("bad", line[1]))
    data = b"".join(r + b"\n" for r in raw)
    outcomes = list(assign_lines(conn, parse_records(io.BytesIO(data), "auto"), chunk_size, overlap=overlap))
    context = "\n".join(f"{n}: {r!r}" for n, r in enumerate(raw, 1))
    assert [o.line for o in outcomes] == list(range(1, len(raw) + 1)), f"one outcome per line, in order:\n{context}"
    codes: dict[tuple, str] = {}
    for outcome, (kind, what) in zip(outcomes, expected):
        where = f"line {outcome.line} {raw[outcome.line - 1]!r}: {outcome}"
        if kind == "bad":
            assert outcome.assignment is None and outcome.error and "\n" not in outcome.error, where
            continue
        a = outcome.assignment
        assert outcome.error is None and a is not None, where
        order, _, carrier, parcel = what
        assert (a.order_id, a.carrier, a.parcel) == (order, carrier, parcel), where
        key = (order, what[1], parcel)
        assert a.new == (key not in codes), f"{where}: new must be true exactly on the key's first line"
        assert codes.setdefault(key, a.code) == a.code, f"{where}: the same order, carrier and parcel got two codes"
    assert len(set(codes.values())) == len(codes), f"a code given twice: {codes}"
    stored = {(o, c, p): (code, events) for o, c, p, code, events in conn.execute(SHIPMENTS_OF, (prefix + "%",))}
    assert {k: v[0] for k, v in stored.items()} == codes, f"the database holds other assignments:\n{context}"
    assert all(events == [code] for code, events in stored.values()), f"not one tracking.assigned event each: {stored}"
