"""The outbox: one event per change, written in the change's transaction, and its retention."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import psycopg
import pytest

from trackctl import outbox
from trackctl.assign import assign, assign_lines
from trackctl.carriers import add_carrier
from trackctl.errors import InvalidValue
from trackctl.shipments import cancel, mark, sweep_stale

EVENT_ID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ASSIGNED_KEYS = {"code", "order_id", "carrier", "pool", "assigned_at"}


def events(conn, type_: str | None = None) -> list[dict]:
    """Every event as `trackctl events` prints it, oldest first."""
    rows = conn.execute("SELECT sequencing.event_line(o) FROM sequencing.outbox o "
                        "WHERE %s::text IS NULL OR o.type = %s ORDER BY o.id", (type_, type_)).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_a_new_assignment_writes_one_tracking_assigned_event(stocked):
    a = assign(stocked, "42", "correios")
    [event] = events(stocked)
    assert set(event) == {"id", "type", "timestamp", "data", "cursor"}
    assert EVENT_ID.match(event["id"]) and RFC3339.match(event["timestamp"])
    assert event["type"] == "tracking.assigned"
    assert set(event["data"]) == ASSIGNED_KEYS
    assert event["data"]["code"] == a.code and event["data"]["order_id"] == "42"
    assert event["data"]["carrier"] == "correios" and event["data"]["pool"] == "default"
    assert RFC3339.match(event["data"]["assigned_at"])
    shipment = stocked.execute("SELECT id FROM sequencing.tracking WHERE tracking_id = %s", (a.code,)).fetchone()[0]
    assert stocked.execute("SELECT shipment_id FROM sequencing.outbox").fetchone()[0] == shipment


def test_assigning_the_same_order_again_writes_no_event(stocked):
    assign(stocked, "42", "correios")
    assign(stocked, "42", "correios")
    assign(stocked, "42", "jadlog")
    assert [e["data"]["carrier"] for e in events(stocked)] == ["correios", "jadlog"]


def test_batch_writes_one_event_per_new_assignment_in_input_order(stocked):
    assign(stocked, "2", "correios")  # already assigned: no second event
    records = [(1, {"order_id": "1", "carrier": "correios"}), (2, {"order_id": "2", "carrier": "correios"}),
               (3, {"order_id": "3", "carrier": "jadlog"}), (4, {"order_id": "1", "carrier": "correios"})]
    outcomes = list(assign_lines(stocked, records))
    assert [o.assignment.new for o in outcomes] == [True, False, True, False]
    got = events(stocked)
    assert [(e["data"]["order_id"], e["data"]["carrier"]) for e in got] == [("2", "correios"), ("1", "correios"),
                                                                           ("3", "jadlog")]
    assert len({e["id"] for e in got}) == 3
    assert [e["data"]["code"] for e in got[1:]] == [outcomes[0].assignment.code, outcomes[2].assignment.code]


def test_codes_generated_inline_from_a_dry_pool_write_their_events_too(conn):
    add_carrier(conn, "correios")  # the default pool is empty: codes are made on the spot
    single = assign(conn, "1", "correios")
    batch = list(assign_lines(conn, [(1, {"order_id": "2", "carrier": "correios"}),
                                     (2, {"order_id": "3", "carrier": "correios"})]))
    assert single.generated_inline and all(o.assignment.generated_inline for o in batch)
    assert [e["data"]["code"] for e in events(conn)] == [single.code] + [o.assignment.code for o in batch]


def test_a_rolled_back_change_leaves_neither_the_assignment_nor_its_event(stocked, db_url):
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute(f"LISTEN {outbox.CHANNEL}")
    with pytest.raises(RuntimeError), stocked.transaction():
        assign(stocked, "42", "correios")
        assert len(events(stocked)) == 1  # visible inside the transaction
        raise RuntimeError("the caller fails after the assignment")
    assert events(stocked) == []
    assert stocked.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id IS NOT NULL").fetchone()[0] == 0
    assert list(listener.notifies(timeout=0.2)) == []  # no wake-up for a change that never happened
    assign(stocked, "42", "correios")
    assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
    listener.close()


def test_record_writes_an_event_and_rejects_unknown_types(conn):
    event_id = outbox.record(conn, "shipment.stale", {"code": "X", "order_id": "1", "carrier": "c",
                                                      "status": "pending", "last_event_at": None})
    assert EVENT_ID.match(event_id)
    with pytest.raises(InvalidValue, match="unknown event type"):
        outbox.record(conn, "shipment.exploded", {})
    # Migration 0013: the id is the row's (no second event can have it), and no new row can be
    # given a stored one, neither a copy of this one nor one of the issued ids' form.
    for stored in (event_id, "evt_01JD3Q8Z8X7K2M4N5P6R7S8T9V"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO sequencing.outbox (legacy_event_id, type, payload) "
                         "VALUES (%s, 'shipment.stale', '{}')", (stored,))
    row_id = conn.execute("SELECT id FROM sequencing.outbox o WHERE sequencing.event_id(o) = %s",
                          (event_id,)).fetchone()[0]
    assert event_id == f"evt_{row_id:026X}"
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):  # its id is its row's, for good
        conn.execute("UPDATE sequencing.outbox SET id = DEFAULT WHERE id = %s", (row_id,))


def test_status_changes_cancellations_and_stale_flags_write_their_events(stocked):
    a = assign(stocked, "42", "correios")
    b = assign(stocked, "43", "correios")
    mark(stocked, a.code, "in_transit", note="handed over")
    cancel(stocked, "43")
    [moved, cancelled] = events(stocked, "shipment.status_changed")
    assert set(moved["data"]) == {"code", "order_id", "carrier", "status", "previous_status", "label",
                                  "occurred_at", "description", "location"}
    assert (moved["data"]["code"], moved["data"]["previous_status"], moved["data"]["status"]) == \
        (a.code, "pending", "in_transit")
    assert moved["data"]["label"] == "Em trânsito" and RFC3339.match(moved["data"]["occurred_at"])
    assert (cancelled["data"]["code"], cancelled["data"]["status"], cancelled["data"]["label"]) == \
        (b.code, "cancelled", "Cancelado")

    stocked.execute("UPDATE sequencing.carrier SET stale_after = interval '1 hour'")
    stocked.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '2 hours', "
                    "last_event_at = now() - interval '2 hours' WHERE tracking_id = %s", (a.code,))
    assert len(sweep_stale(stocked)) == 1
    [stale] = events(stocked, "shipment.stale")
    assert set(stale["data"]) == {"code", "order_id", "carrier", "status", "last_event_at"}
    assert (stale["data"]["code"], stale["data"]["status"]) == (a.code, "in_transit")
    assert RFC3339.match(stale["data"]["last_event_at"])
    assert sweep_stale(stocked) == []  # flagged once: no second event


def test_a_refused_manual_change_writes_no_event(stocked):
    a = assign(stocked, "42", "correios")
    mark(stocked, a.code, "delivered")
    before = len(events(stocked))
    with pytest.raises(Exception, match="delivered"):
        cancel(stocked, a.code)
    assert len(events(stocked)) == before


# --- retention -------------------------------------------------------------------------------

def _age_all(conn, days: int = 40) -> None:
    conn.execute("UPDATE sequencing.outbox SET created_at = now() - make_interval(days => %s)", (days,))


def _subscriber(conn, url: str = "http://127.0.0.1:9/hook") -> int:
    from trackctl.webhooks import add_subscriber

    return add_subscriber(conn, url).id


def test_prune_removes_old_events_everyone_is_done_with_and_never_a_pending_one(stocked):
    sub = _subscriber(stocked)
    for order in ("1", "2", "3", "4"):
        assign(stocked, order, "correios")
    assign(stocked, "5", "correios")  # stays young
    _age_all(stocked)
    stocked.execute("UPDATE sequencing.outbox SET created_at = now() WHERE payload->>'order_id' = '5'")
    stocked.execute("""UPDATE sequencing.webhook_delivery d SET status = 'done', delivered_at = now(),
                       next_attempt_at = NULL FROM sequencing.outbox o
                       WHERE o.id = d.outbox_id AND o.payload->>'order_id' IN ('1', '2', '5')""")
    stocked.execute("""UPDATE sequencing.webhook_delivery d SET status = 'dead', next_attempt_at = NULL
                       FROM sequencing.outbox o WHERE o.id = d.outbox_id AND o.payload->>'order_id' = '3'""")
    # order 4's delivery is still pending
    assert outbox.prune(stocked, timedelta(days=30)) == 2
    left = sorted(e["data"]["order_id"] for e in events(stocked))
    assert left == ["3", "4", "5"]
    assert outbox.prune(stocked, timedelta(days=30), include_dead=True) == 1
    assert sorted(e["data"]["order_id"] for e in events(stocked)) == ["4", "5"]
    assert stocked.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE subscriber_id = %s",
                           (sub,)).fetchone()[0] == 2


def test_prune_keeps_what_a_consumer_group_has_not_been_handed_or_acknowledged(stocked, db_url):
    from trackctl.events import Collector

    for order in range(1, 7):
        assign(stocked, str(order), "correios")
    _age_all(stocked)
    with psycopg.connect(db_url, autocommit=True) as c:
        collector = Collector(c, "billing")
        collector.join()
        first = collector.take(2)
        assert collector.ack(first)
        second = collector.take(2)  # taken, never acknowledged
        assert [json.loads(line)["data"]["order_id"] for _, line in second.events] == ["3", "4"]
        assert outbox.prune(stocked, timedelta(days=30)) == 2  # only the acknowledged 1 and 2
    assert sorted(int(e["data"]["order_id"]) for e in events(stocked)) == [3, 4, 5, 6]


def test_prune_cli_is_a_recorded_job(cli, conn):
    conn.execute("INSERT INTO sequencing.outbox (type, payload, created_at) "
                 "SELECT 'shipment.stale', '{}', now() - interval '40 days' FROM generate_series(1, 3)")
    r = cli("outbox", "prune", "--older-than", "30d", "--format", "json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"removed": 3}
    assert conn.execute("SELECT outcome, counts FROM sequencing.run WHERE job = 'outbox-prune'").fetchone() == \
        ("ok", {"removed": 3})
    bad = cli("outbox", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr


def test_an_event_names_an_assigned_shipment_and_keeps_it(conn):
    # Migration 0011 checks an event's shipment once per statement (in the outbox's statement
    # trigger) instead of a foreign key per row: an event names an assigned shipment or none,
    # and keeps naming it.
    add_carrier(conn, "acme")
    code = assign(conn, "keep-1", "acme").code
    shipment, event = conn.execute(
        "SELECT t.id, o.id FROM sequencing.tracking t JOIN sequencing.outbox o ON o.shipment_id = t.id "
        "WHERE t.tracking_id = %s", (code,)).fetchone()
    free = conn.execute("SELECT id FROM sequencing.tracking WHERE order_id IS NULL LIMIT 1").fetchone()
    missing = conn.execute("SELECT max(id) + 1 FROM sequencing.tracking").fetchone()[0]
    insert = "INSERT INTO sequencing.outbox (type, shipment_id, payload) VALUES ('test.event', %s, '{}')"
    for bad in ([missing] + ([free[0]] if free else [])):
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(insert, (bad,))
    conn.execute(insert, (None,))  # an event of no shipment
    conn.execute(insert, (shipment,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("UPDATE sequencing.outbox SET shipment_id = %s WHERE id = %s", (missing, event))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):  # tracking_keep_assignment
        conn.execute("DELETE FROM sequencing.tracking WHERE id = %s", (shipment,))
