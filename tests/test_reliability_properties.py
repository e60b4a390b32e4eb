"""Property tests of issue 7: durations, carrier names, cursors and the status state machine give
a result or a clear rejection (a TrackctlError), never another exception or a half-write.
Batch lines and order ids are covered in tests/test_input_properties.py."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.carriers.base import STATUSES, TERMINAL, CarrierEvent
from trackctl.errors import InvalidValue, TrackctlError, TransitionRefused
from trackctl.events import parse_cursor
from trackctl.names import check_carrier_name, parse_duration
from trackctl.pools import refill
from trackctl.shipments import apply_status_change, cancel, mark

pytestmark = pytest.mark.faults

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(st.integers(0, 999_999_999), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " ", "  "]))
def test_every_well_formed_duration_parses_to_its_seconds(n, unit, pad):
    assert parse_duration(f"{pad}{n}{pad}{unit}{pad}") == n * UNITS[unit]


@given(st.text(max_size=30))
def test_any_text_is_a_duration_or_a_clear_rejection(text):
    try:
        seconds = parse_duration(text)
    except InvalidValue as exc:
        assert "invalid duration" in str(exc) and "\n" not in exc.message
    else:
        assert isinstance(seconds, int) and seconds >= 0
        assert re.fullmatch(r"\s*\d{1,9}\s*[smhdw]?\s*", text)


@given(st.text(max_size=40))
def test_any_text_is_a_carrier_name_or_a_clear_rejection(text):
    try:
        assert check_carrier_name(text) == text
    except InvalidValue as exc:
        assert "invalid carrier name" in exc.message and "\n" not in exc.message and len(exc.message) < 400
    else:
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", text)


@given(st.one_of(st.text(max_size=40), st.integers(-10**20, 10**20).map(str), st.none()))
def test_any_cursor_is_a_position_or_a_clear_rejection(text):
    try:
        pos = parse_cursor(text)
    except InvalidValue as exc:
        assert "invalid cursor" in exc.message
    else:
        assert 0 <= pos < 10**18


def test_garbage_cursors_on_the_command_line_are_usage_errors(cli):
    for bad in ["abc", "-1", "1e5", "9" * 40, "１２", "0x10", "1 2", "\t"]:
        r = cli("events", "--after", bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (bad, r)


# -- the status state machine ----------------------------------------------------------------

BASE = datetime(2026, 11, 20, tzinfo=timezone.utc)
ops = st.lists(st.one_of(
    st.tuples(st.just("carrier"), st.sampled_from(sorted(STATUSES) + ["XX-99"]), st.integers(0, 50)),
    st.tuples(st.just("mark"), st.sampled_from(sorted(STATUSES)), st.just(0)),
    st.tuples(st.just("cancel"), st.just("cancelled"), st.just(0)),
), min_size=1, max_size=12)


def snapshot(conn, shipment_id):
    status = conn.execute("SELECT status FROM sequencing.tracking WHERE id = %s", (shipment_id,)).fetchone()[0]
    events = conn.execute("SELECT count(*) FROM sequencing.tracking_event WHERE shipment_id = %s",
                          (shipment_id,)).fetchone()[0]
    changes = conn.execute("SELECT count(*) FROM sequencing.outbox WHERE shipment_id = %s "
                           "AND type = 'shipment.status_changed'", (shipment_id,)).fetchone()[0]
    return status, events, changes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops)
def test_any_sequence_of_events_and_manual_changes_gives_a_valid_status_or_a_clear_refusal(conn, sequence):
    if not conn.execute("SELECT 1 FROM sequencing.carrier WHERE name = 'acme'").fetchone():
        add_carrier(conn, "acme")
        refill(conn)
    code = assign(conn, f"sm-{uuid.uuid4().hex[:12]}", "acme").code
    shipment_id = conn.execute("SELECT id FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()[0]
    for n, (kind, status, minutes) in enumerate(sequence):
        before = snapshot(conn, shipment_id)
        try:
            if kind == "carrier":
                known = status in STATUSES
                event = CarrierEvent(f"ev-{n}", BASE + timedelta(minutes=minutes), status if known else None,
                                     status, None, None)
                apply_status_change(conn, shipment_id, [event])
            elif kind == "mark":
                mark(conn, code, status)
            else:
                cancel(conn, code)
        except TransitionRefused as exc:
            assert kind != "carrier" and before[0] in TERMINAL | {before[0]} or status == "pending", exc
            assert snapshot(conn, shipment_id) == before  # refused: nothing written
            assert "\n" not in exc.message
            continue
        except TrackctlError as exc:  # any other clear rejection must also leave nothing behind
            assert snapshot(conn, shipment_id) == before, exc
            continue
        after = snapshot(conn, shipment_id)
        assert after[0] in STATUSES
        assert after[1] - before[1] in (0, 1)
        assert after[2] - before[2] == (1 if after[0] != before[0] else 0)  # one event per change, in the same write
        if kind != "carrier" and before[0] in TERMINAL:
            assert after == before  # a manual change never moves a terminal shipment
