"""The one path of status changes (events, cancel, mark, stale) and the status timeline."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.carriers.base import CarrierEvent
from trackctl.errors import InvalidValue, NotFound, TransitionRefused
from trackctl.pools import refill
from trackctl.shipments import apply_status_change, cancel, mark
from trackctl.status import shipment_timeline

T = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def ev(key: str, status: str | None, minutes: int, raw: str | None = None, **kw) -> CarrierEvent:
    return CarrierEvent(key, T + timedelta(minutes=minutes), status, raw or status or "?", **kw)


@pytest.fixture
def shipment(conn):
    add_carrier(conn, "acme")
    refill(conn)
    code = assign(conn, "42", "acme").code
    sid = conn.execute("SELECT id FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()[0]
    return sid, code


def status_of(conn, code: str) -> str:
    return conn.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()[0]


def test_events_are_stored_once_and_the_status_follows_the_newest_by_carrier_time(conn, shipment):
    sid, code = shipment
    change = apply_status_change(conn, sid, [ev("b", "out_for_delivery", 60), ev("a", "in_transit", 0)])
    assert (change.previous_status, change.status, change.new_events, change.changed) == (
        "pending", "out_for_delivery", 2, True)
    assert change.occurred_at == T + timedelta(minutes=60)
    again = apply_status_change(conn, sid, [ev("a", "in_transit", 0), ev("b", "out_for_delivery", 60)])
    assert (again.new_events, again.changed) == (0, False)
    late = apply_status_change(conn, sid, [ev("c", "exception", 30, description="late news")])
    assert (late.new_events, late.status) == (1, "out_for_delivery")
    assert conn.execute("SELECT count(*) FROM sequencing.tracking_event").fetchone()[0] == 3


def test_ties_on_the_carrier_time_go_to_the_status_further_along(conn, shipment):
    sid, code = shipment
    change = apply_status_change(conn, sid, [ev("d", "delivered", 5), ev("o", "out_for_delivery", 5)])
    assert change.status == "delivered"


def test_unknown_statuses_are_history_but_do_not_move_the_shipment(conn, shipment):
    sid, code = shipment
    change = apply_status_change(conn, sid, [ev("x", None, 10, raw="ZZ-99")])
    assert (change.new_events, change.status) == (1, "pending")
    assert conn.execute("SELECT status, raw_status FROM sequencing.tracking_event").fetchall() == [(None, "ZZ-99")]


def test_a_failing_event_write_leaves_nothing_behind(conn, shipment):
    sid, code = shipment
    with pytest.raises(psycopg.errors.CheckViolation):
        apply_status_change(conn, sid, [ev("ok", "in_transit", 0), ev("bad", "delivered", 5, location="x" * 501)])
    assert status_of(conn, code) == "pending"
    assert conn.execute("SELECT count(*) FROM sequencing.tracking_event").fetchone()[0] == 0


def test_history_cannot_be_rewritten(conn, shipment):
    sid, _ = shipment
    apply_status_change(conn, sid, [ev("a", "in_transit", 0)])
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="history"):
        conn.execute("UPDATE sequencing.tracking_event SET status = 'delivered'")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("""INSERT INTO sequencing.tracking_event (shipment_id, dedupe_key, source, occurred_at, raw_status)
                        VALUES (%s, 'a', 'carrier', now(), 'x')""", (sid,))


def test_stale_is_flagged_only_without_news_and_cleared_by_news(conn, shipment):
    sid, code = shipment
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '40 days' WHERE id = %s", (sid,))
    assert not apply_status_change(conn, sid, (), stale_after=timedelta(days=60)).flagged_stale
    flagged = apply_status_change(conn, sid, (), stale_after=timedelta(days=30))
    assert (flagged.flagged_stale, flagged.stale) == (True, True)
    assert not apply_status_change(conn, sid, (), stale_after=timedelta(days=30)).flagged_stale  # once
    fresh = apply_status_change(conn, sid, [ev("a", "in_transit", 0)], stale_after=timedelta(days=30))
    assert (fresh.stale, fresh.status) == (False, "in_transit")
    assert conn.execute("SELECT stale_at FROM sequencing.tracking WHERE id = %s", (sid,)).fetchone()[0] is None


# -- cancel and mark ----------------------------------------------------------------------------


def test_cancel_by_code_and_again_is_a_no_op(conn, shipment):
    sid, code = shipment
    (change,) = cancel(conn, code, note="customer gave up")
    assert (change.previous_status, change.status) == ("pending", "cancelled")
    (again,) = cancel(conn, code)
    assert not again.changed and again.new_events == 0
    row = conn.execute("SELECT source, status, description FROM sequencing.tracking_event").fetchall()
    assert row == [("manual", "cancelled", "customer gave up")]


def test_cancelling_a_delivered_parcel_is_refused(conn, shipment, cli):
    sid, code = shipment
    apply_status_change(conn, sid, [ev("d", "delivered", 0)])
    with pytest.raises(TransitionRefused, match="a delivered shipment cannot be cancelled"):
        cancel(conn, code)
    r = cli("cancel", code)
    assert r.returncode == 1, r
    assert r.stderr.startswith(f"trackctl: error: shipment {code} is delivered: a delivered shipment cannot be cancelled")
    assert r.stdout == ""
    assert status_of(conn, code) == "delivered"


def test_cancel_an_order_cancels_all_its_shipments_or_none(conn, shipment, cli):
    sid, code = shipment
    add_carrier(conn, "other")
    second = assign(conn, "42", "other").code
    third = assign(conn, "42", "acme", parcel=2).code
    mark(conn, third, "returned")
    r = cli("cancel", "42")
    assert r.returncode == 1 and "nothing was cancelled" in r.stderr, r
    assert [status_of(conn, c) for c in (code, second, third)] == ["pending", "pending", "returned"]
    r = cli("cancel", "44")
    assert r.returncode == 1 and "no shipment with code or order id '44'" in r.stderr, r
    mine = [assign(conn, "43", "acme").code, assign(conn, "43", "other").code]
    mark(conn, mine[1], "in_transit")
    r = cli("cancel", "43", "--format", "csv")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["code,order_id,carrier,previous_status,status",
                                     f"{mine[0]},43,acme,pending,cancelled",
                                     f"{mine[1]},43,other,in_transit,cancelled"]
    assert "cancelled 2 shipments" in r.stderr
    r = cli("cancel", "43")
    assert r.returncode == 0 and "cancelled 0 shipments; 2 already cancelled" in r.stderr, r


def test_mark_records_a_manual_status_and_refuses_nonsense(conn, shipment, cli):
    sid, code = shipment
    r = cli("mark", code, "in_transit", "--note", "handed to the driver")
    assert r.returncode == 0, r
    assert r.stdout == f"{code}\t42\tacme\tpending\tin_transit\n"
    r = cli("mark", code, "pending")
    assert r.returncode == 1 and "cannot go back to pending" in r.stderr, r
    r = cli("mark", code, "lost")
    assert r.returncode == 2 and "unknown status 'lost'" in r.stderr, r
    assert cli("mark", code, "delivered").returncode == 0
    r = cli("mark", code, "delivered")
    assert r.returncode == 0 and "already delivered" in r.stderr, r
    r = cli("mark", code, "in_transit")
    assert r.returncode == 1 and "a delivered shipment cannot be marked in_transit" in r.stderr, r
    r = cli("mark", "42", "delivered")
    assert r.returncode == 1 and "mark takes a tracking code" in r.stderr, r
    assert [s for (s,) in conn.execute("SELECT status FROM sequencing.tracking_event ORDER BY id")] == [
        "in_transit", "delivered"]


def test_a_manual_change_is_newest_even_when_the_carrier_clock_runs_ahead(conn, shipment):
    sid, code = shipment
    future = datetime.now(timezone.utc) + timedelta(hours=2)
    apply_status_change(conn, sid, [CarrierEvent("f", future, "out_for_delivery", "out_for_delivery")])
    change = mark(conn, code, "failed_attempt")
    assert change.status == "failed_attempt" and change.occurred_at > future


def test_a_free_or_unknown_code_cannot_be_marked(conn, shipment):
    free = conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NULL LIMIT 1").fetchone()[0]
    with pytest.raises(NotFound, match="is free"):
        mark(conn, free, "delivered")
    with pytest.raises(NotFound):
        cancel(conn, "nope")
    with pytest.raises(InvalidValue, match="note"):
        mark(conn, shipment[1], "delivered", note="x\x00y")


# -- the timeline -------------------------------------------------------------------------------


def test_status_shows_the_timeline_in_every_format(conn, shipment, cli):
    sid, code = shipment
    apply_status_change(conn, sid, [
        ev("b", "out_for_delivery", 60, description="Saiu", location="SAO PAULO/SP"),
        ev("a", "in_transit", 0, description="Hub", location="Cajamar, SP"),
        ev("z", None, 30, raw="XX-01"),
    ])
    tl = shipment_timeline(conn, code)
    assert [e.status for e in tl.events] == ["in_transit", None, "out_for_delivery"]
    assert [e.label for e in tl.events] == ["Em trânsito", None, "Saiu para entrega"]
    doc = json.loads(cli("status", code, "--format", "json").stdout)
    assert {k: doc[k] for k in ("code", "order_id", "carrier", "status", "stale")} == {
        "code": code, "order_id": "42", "carrier": "acme", "status": "out_for_delivery", "stale": False}
    assert doc["events"] == [
        {"occurred_at": "2026-11-20T10:00:00+00:00", "status": "in_transit", "description": "Hub",
         "location": "Cajamar, SP", "raw_status": "in_transit"},
        {"occurred_at": "2026-11-20T10:30:00+00:00", "status": None, "description": None, "location": None,
         "raw_status": "XX-01"},
        {"occurred_at": "2026-11-20T11:00:00+00:00", "status": "out_for_delivery", "description": "Saiu",
         "location": "SAO PAULO/SP", "raw_status": "out_for_delivery"},
    ]
    assert json.loads(cli("status", code, "--format", "jsonl").stdout)["events"] == doc["events"]
    plain = cli("status", code).stdout.splitlines()
    assert f"code\t{code}" in plain and "status\tout_for_delivery" in plain and "label\tSaiu para entrega" in plain
    assert [line for line in plain if line.startswith("event\t")] == [
        "event\t2026-11-20T10:00:00+00:00\tin_transit\tEm trânsito\tHub\tCajamar, SP",
        "event\t2026-11-20T10:30:00+00:00\t\t(XX-01)\t\t",
        "event\t2026-11-20T11:00:00+00:00\tout_for_delivery\tSaiu para entrega\tSaiu\tSAO PAULO/SP",
    ]
    rows = list(csv.DictReader(cli("status", code, "--format", "csv").stdout.splitlines()))
    assert len(rows) == 3
    assert {(r["code"], r["order_id"], r["carrier"], r["status"]) for r in rows} == {
        (code, "42", "acme", "out_for_delivery")}  # every row carries the shipment itself
    assert [(r["event_occurred_at"], r["event_status"], r["event_raw_status"]) for r in rows] == [
        ("2026-11-20T10:00:00+00:00", "in_transit", "in_transit"), ("2026-11-20T10:30:00+00:00", "", "XX-01"),
        ("2026-11-20T11:00:00+00:00", "out_for_delivery", "out_for_delivery")]
    assert rows[0]["event_location"] == "Cajamar, SP" and rows[2]["event_label"] == "Saiu para entrega"


def test_a_new_shipment_has_an_empty_timeline(conn, shipment, cli):
    sid, code = shipment
    doc = json.loads(cli("status", code, "--format", "json").stdout)
    assert (doc["status"], doc["events"], doc["stale"]) == ("pending", [], False)
    (row,) = csv.DictReader(cli("status", code, "--format", "csv").stdout.splitlines())
    assert (row["code"], row["order_id"], row["status"], row["event_status"]) == (code, "42", "pending", "")


# -- cancel ORDER --carrier C (issue 11, "also expected") ----------------------------------------


def test_cancel_with_a_carrier_cancels_only_that_carriers_codes_of_the_order(conn, shipment, cli):
    _, acme_code = shipment
    add_carrier(conn, "other")
    other = [assign(conn, "42", "other", parcel=n).code for n in (1, 2)]
    changes = cancel(conn, "42", carrier="other")
    assert sorted(c.code for c in changes) == sorted(other)
    assert [status_of(conn, c) for c in other] == ["cancelled", "cancelled"]
    assert status_of(conn, acme_code) == "pending"

    r = cli("cancel", "42", "--carrier", "acme", "--format", "csv")
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[1:] == [f"{acme_code},42,acme,pending,cancelled"]
    assert r.stderr == "trackctl: cancelled 1 shipment\n"


def test_cancel_with_a_carrier_refuses_unknown_carriers_and_orders_without_it(conn, shipment, cli):
    from trackctl.errors import UnknownCarrier

    _, code = shipment
    add_carrier(conn, "other")
    with pytest.raises(UnknownCarrier):
        cancel(conn, "42", carrier="nosuch")
    r = cli("cancel", "42", "--carrier", "nosuch")
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert r.stderr.startswith("trackctl: error: unknown carrier 'nosuch' (known: acme, other")

    r = cli("cancel", "42", "--carrier", "other")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r
    assert "order '42' has no shipment with carrier other: nothing was cancelled" in r.stderr
    r = cli("cancel", code, "--carrier", "other")  # a code of another carrier
    assert r.returncode == 1 and f"code {code} belongs to carrier acme, not other" in r.stderr, r
    r = cli("cancel", "nosuch-order", "--carrier", "acme")
    assert r.returncode == 1 and "no shipment with code or order id 'nosuch-order'" in r.stderr, r
    assert status_of(conn, code) == "pending"
