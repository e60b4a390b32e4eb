"""Property-based tests: any batch input line gives a record or a clear rejection, never an exception."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from trackctl.batch_input import MAX_LINE_BYTES, parse_records
from trackctl.errors import InvalidValue
from trackctl.names import ORDER_ID_MAX, check_order_id


def records(data: bytes, fmt: str = "auto") -> list[tuple[int, dict]]:
    return list(parse_records(io.BytesIO(data), fmt))


def is_valid_record(record: dict) -> bool:
    if "error" in record:
        return isinstance(record["error"], str) and record["error"] != "" and "\n" not in record["error"]
    order = record["order_id"]
    return (set(record) <= {"order_id", "carrier", "parcel"} and 1 <= len(order) <= ORDER_ID_MAX
            and order == order.strip() and all(ord(c) >= 32 and c != "\x7f" for c in order)
            and record["carrier"] != "" and 1 <= record.get("parcel", 1) <= 999)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["auto", "csv", "jsonl"]))
def test_any_bytes_give_records_or_one_line_rejections(data, fmt):
    out = records(data, fmt)
    numbers = [n for n, _ in out]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all(is_valid_record(r) for _, r in out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=80), st.text(max_size=20)), max_size=20))
def test_csv_lines_are_either_accepted_unchanged_or_rejected(rows):
    data = "".join(f"{o},{c}\n" for o, c in rows).encode("utf-8", "surrogatepass")
    for _, record in records(data, "csv"):
        assert is_valid_record(record)


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
def test_order_ids_are_accepted_exactly_when_they_follow_the_rules(value):
    try:
        assert check_order_id(value) == value
        accepted = True
    except InvalidValue as exc:
        assert exc.message
        accepted = False
    rule = (1 <= len(value) <= ORDER_ID_MAX and value == value.strip()
            and not any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in value))
    assert accepted == rule


def test_a_line_over_the_cap_is_rejected_and_the_next_line_still_parses():
    data = b"1," + b"x" * (MAX_LINE_BYTES * 3) + b"\n2,correios\n"
    out = records(data)
    assert out[0][0] == 1 and "longer than" in out[0][1]["error"]
    assert out[1] == (2, {"order_id": "2", "carrier": "correios"})
