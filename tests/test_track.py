"""`trackctl track`: numbers a carrier issued become shipments like assigned codes (issue 13.1)."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from conftest import trackctl_command

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import AlreadyExists, InvalidValue, UnknownCarrier
from trackctl.shipments import mark
from trackctl.status import shipment_by_code
from trackctl.track import track

UPS = "1Z999AA10123456784"


@pytest.fixture
def carriers(conn):
    add_carrier(conn, "ups", 10)
    add_carrier(conn, "jadlog", 11)
    return conn


def outbox(conn, type_):
    return [r[0] for r in conn.execute(
        "SELECT payload FROM sequencing.outbox WHERE type = %s ORDER BY id", (type_,))]


def test_track_creates_external_shipment_and_registered_event(carriers):
    conn = carriers
    t = track(conn, UPS, "ups", "42")
    assert (t.code, t.carrier, t.order_id, t.new, t.source) == (UPS, "ups", "42", True, "external")
    s = shipment_by_code(conn, UPS)
    assert (s.status, s.carrier, s.pool, s.parcel, s.order_id) == ("pending", "ups", None, None, "42")
    [payload] = outbox(conn, "tracking.registered")
    assert payload["code"] == UPS and payload["order_id"] == "42" and payload["carrier"] == "ups"
    assert payload["source"] == "external" and payload["registered_at"].endswith("Z")
    # due at once, like an assigned code
    assert conn.execute("SELECT next_poll_at = '-infinity' FROM sequencing.tracking WHERE tracking_id = %s",
                        (UPS,)).fetchone()[0]


def test_track_is_idempotent_and_refuses_conflicts(carriers):
    conn = carriers
    track(conn, UPS, "ups", "42")
    again = track(conn, UPS, "10")  # by id, order not repeated
    assert not again.new and again.order_id == "42"
    assert not track(conn, UPS, "ups", "42").new
    assert len(outbox(conn, "tracking.registered")) == 1
    with pytest.raises(AlreadyExists, match="already tracked with carrier ups"):
        track(conn, UPS, "jadlog")
    with pytest.raises(AlreadyExists, match="for order 42"):
        track(conn, UPS, "ups", "43")
    with pytest.raises(UnknownCarrier):
        track(conn, "ABCDE1", "nope")


def test_track_without_order_and_the_shipment_model(carriers):
    conn = carriers
    t = track(conn, "10084531234", "jadlog")
    assert t.order_id is None
    change = mark(conn, "10084531234", "in_transit")
    assert change.changed and change.status == "in_transit"
    [ev] = outbox(conn, "shipment.status_changed")
    assert ev["code"] == "10084531234" and ev["order_id"] is None
    with pytest.raises(AlreadyExists, match="for no order"):
        track(conn, "10084531234", "jadlog", "7")


@pytest.mark.parametrize("bad", ["ABCD", "A" * 51, "1Z 999", "1Z_999AA", "código1", "", "AB\nCDE"])
def test_track_validates_codes(carriers, bad):
    with pytest.raises(InvalidValue):
        track(carriers, bad, "ups")
    assert carriers.execute("SELECT count(*) FROM sequencing.tracking WHERE source = 'external'").fetchone()[0] == 0


def test_schema_holds_the_invariants(carriers):
    conn = carriers
    with pytest.raises(psycopg.errors.CheckViolation):  # an external row with a pool
        conn.execute("INSERT INTO sequencing.tracking (tracking_id, source, pool_id, freightcarrier_id, status, "
                     "assigned_at) VALUES ('ABCDEF', 'external', 1, 10, 'pending', now())")
    with pytest.raises(psycopg.errors.CheckViolation):  # bad code format
        conn.execute("INSERT INTO sequencing.tracking (tracking_id, source, freightcarrier_id, status, assigned_at) "
                     "VALUES ('AB CD EF', 'external', 10, 'pending', now())")
    with pytest.raises(psycopg.errors.CheckViolation):  # a pool row without pool
        conn.execute("INSERT INTO sequencing.tracking (tracking_id) VALUES ('x-y-z')")
    track(conn, UPS, "ups")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):  # carrier fixed for good
        conn.execute("UPDATE sequencing.tracking SET freightcarrier_id = 11 WHERE tracking_id = %s", (UPS,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("DELETE FROM sequencing.tracking WHERE tracking_id = %s", (UPS,))


def test_pool_codes_keep_working_and_cannot_be_retracked_elsewhere(carriers):
    from trackctl.pools import refill

    conn = carriers
    refill(conn)
    a = assign(conn, "9", "ups")
    same = track(conn, a.code, "ups")
    assert not same.new and same.source == "pool" and same.order_id == "9"
    with pytest.raises(AlreadyExists):
        track(conn, a.code, "jadlog")
    free = conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NULL LIMIT 1").fetchone()[0]
    with pytest.raises(AlreadyExists, match="free code"):
        track(conn, free, "ups")


def test_concurrent_track_processes_make_one_shipment(carriers, cli):
    procs = [subprocess.Popen([*trackctl_command(), "track", UPS,
                               "--carrier", "ups"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert all(o[0].decode().strip() == UPS for o in outs)
    assert len(outbox(carriers, "tracking.registered")) == 1


def test_cli_track_and_status(carriers, cli):
    r = cli("track", UPS, "--carrier", "ups", "--order", "42")
    assert r.returncode == 0 and r.stdout == UPS + "\n", r
    r = cli("status", UPS, "--format", "json")
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert doc["status"] == "pending" and doc["carrier"] == "ups" and doc["pool"] is None
    r = cli("track", UPS, "--carrier", "jadlog")
    assert r.returncode == 1 and r.stderr.startswith("trackctl: error: code 1Z999AA10123456784 is already tracked"), r
    r = cli("track", "bad code", "--carrier", "ups")
    assert r.returncode == 2 and "invalid tracking number" in r.stderr, r
    r = cli("track", UPS)
    assert r.returncode == 2, r


def test_cli_track_batch(carriers, cli):
    data = ("code,carrier,order\n"
            f"{UPS},ups,42\n"
            '{"code": "10084531234", "carrier": "jadlog"}\n'
            "bad code,ups\n"
            f"{UPS},jadlog\n"
            "\n"
            "ABCDE-12345,11,77\n")
    r = cli("track", "--batch", "--format", "jsonl", input=data)
    assert r.returncode == 3, r
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["code"] for x in lines] == [UPS, "10084531234", "ABCDE-12345"]
    assert lines[2]["carrier"] == "jadlog" and lines[2]["order_id"] == "77"
    err = r.stderr.splitlines()
    assert err[0].startswith("line 4: invalid tracking number") and err[1].startswith("line 5: code 1Z999")
    assert "2 of 5 lines rejected" in err[-1]
    r = cli("track", "--batch", input=f"{UPS},ups\n")  # again: idempotent, exit 0, csv by default
    assert r.returncode == 0 and r.stdout == f"{UPS},ups,42\n", r
    r = cli("track", "--batch", UPS, input="")
    assert r.returncode == 2, r


def test_cli_track_batch_answers_each_line_while_input_pauses(carriers, cli, tmp_path):

    p = subprocess.Popen([*trackctl_command(), "track", "--batch"], env=cli.env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(f"{UPS},ups\n".encode())
    p.stdin.flush()
    first = p.stdout.readline()  # the answer comes although stdin stays open
    assert first == f"{UPS},ups,\n".encode()
    p.stdin.write(b"10084531234,jadlog\n")
    p.stdin.close()
    rest = p.stdout.read()
    assert p.wait(timeout=60) == 0 and rest == b"10084531234,jadlog,\n"
