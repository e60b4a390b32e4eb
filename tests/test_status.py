"""`trackctl status CODE` and `trackctl status --order ORDER`: one shipment, or every shipment of an order."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import InvalidValue, NotFound
from trackctl.pools import refill
from trackctl.status import shipment_by_code, shipments_by_order


@pytest.fixture
def shipped(conn):
    """Order 42 has a correios code (parcels 1 and 2) and a jadlog code."""
    add_carrier(conn, "correios", 3)
    add_carrier(conn, "jadlog", 7)
    refill(conn)
    return {"correios": assign(conn, "42", "correios").code,
            "correios-2": assign(conn, "42", "correios", parcel=2).code,
            "jadlog": assign(conn, "42", "jadlog").code}


def test_shipment_by_code_starts_pending(conn, shipped):
    s = shipment_by_code(conn, shipped["jadlog"])
    assert (s.code, s.order_id, s.carrier, s.parcel, s.status, s.label, s.pool) == (
        shipped["jadlog"], "42", "jadlog", 1, "pending", "Pedido recebido", "default")
    assert isinstance(s.assigned_at, datetime) and s.assigned_at.tzinfo is not None
    assert s.shipping_date is None


def test_shipments_by_order_lists_every_carrier_and_parcel(conn, shipped):
    assert [(s.carrier, s.parcel, s.code) for s in shipments_by_order(conn, "42")] == [
        ("correios", 1, shipped["correios"]), ("correios", 2, shipped["correios-2"]), ("jadlog", 1, shipped["jadlog"])]


def test_lookups_of_unknown_free_and_invalid_values(conn, shipped):
    free = conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NULL LIMIT 1").fetchone()[0]
    with pytest.raises(NotFound, match="is free"):
        shipment_by_code(conn, free)
    for code in ("no-such-code", "nul\x00code", "ab\udcffcd"):
        with pytest.raises(NotFound, match="no shipment"):
            shipment_by_code(conn, code)
    with pytest.raises(NotFound, match="has no tracking code"):
        shipments_by_order(conn, "43")
    with pytest.raises(InvalidValue):
        shipments_by_order(conn, "x" * 65)


def test_cli_status_code_plain(cli, shipped):
    r = cli("status", shipped["correios"], "--format", "plain")
    assert r.returncode == 0, r
    fields = dict(line.split("\t", 1) for line in r.stdout.splitlines())
    assert fields["code"] == shipped["correios"]
    assert (fields["order_id"], fields["carrier"], fields["parcel"], fields["status"]) == ("42", "correios", "1", "pending")
    assert datetime.fromisoformat(fields["assigned_at"])
    assert r.stderr == ""


def test_cli_status_code_json(cli, shipped):
    r = cli("status", shipped["jadlog"], "--format", "json")
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert {k: doc[k] for k in ("code", "order_id", "carrier", "parcel", "status", "label", "pool")} == {
        "code": shipped["jadlog"], "order_id": "42", "carrier": "jadlog", "parcel": 1, "status": "pending",
        "label": "Pedido recebido", "pool": "default"}
    assert datetime.fromisoformat(doc["assigned_at"]).tzinfo is not None


def test_cli_status_order_plain_and_json(cli, shipped):
    r = cli("status", "--order", "42")
    assert r.returncode == 0, r
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [(row[0], row[1], row[2], row[3], row[4]) for row in rows] == [
        (shipped["correios"], "42", "correios", "1", "pending"),
        (shipped["correios-2"], "42", "correios", "2", "pending"),
        (shipped["jadlog"], "42", "jadlog", "1", "pending")]
    r = cli("status", "--order", "42", "--format", "json")
    assert r.returncode == 0, r
    assert [(d["code"], d["carrier"], d["parcel"], d["status"]) for d in json.loads(r.stdout)] == [
        (shipped["correios"], "correios", 1, "pending"), (shipped["correios-2"], "correios", 2, "pending"),
        (shipped["jadlog"], "jadlog", 1, "pending")]


def test_cli_status_order_json_and_csv_carry_each_shipments_events(cli, conn, shipped):
    from trackctl.shipments import mark

    mark(conn, shipped["jadlog"], "in_transit")
    r = cli("status", "--order", "42", "--format", "json")
    assert r.returncode == 0, r
    events = {d["code"]: [e["status"] for e in d["events"]] for d in json.loads(r.stdout)}
    assert events == {shipped["correios"]: [], shipped["correios-2"]: [], shipped["jadlog"]: ["in_transit"]}
    lines = cli("status", "--order", "42", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["events"] != [] for line in lines] == [False, False, True]
    rows = list(csv.DictReader(io.StringIO(cli("status", "--order", "42", "--format", "csv").stdout)))
    assert [(row["code"], row["event_status"]) for row in rows] == [
        (shipped["correios"], ""), (shipped["correios-2"], ""), (shipped["jadlog"], "in_transit")]


def test_cli_numeric_order_ids_work_as_they_are(cli, conn, shipped):
    code = cli("assign", "0042", "correios").stdout.strip()
    assert code not in shipped.values()
    r = cli("status", "--order", "0042", "--format", "json")
    assert [d["code"] for d in json.loads(r.stdout)] == [code]


@pytest.mark.parametrize("args, message", [
    (("status", "no-such-code"), "trackctl: error: no shipment with code 'no-such-code'"),
    (("status", "--order", "43"), "trackctl: error: order '43' has no tracking code"),
])
def test_cli_unknown_code_or_order_is_exit_1_with_a_clear_message(cli, shipped, args, message):
    r = cli(*args)
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr.startswith(message) and len(r.stderr.splitlines()) == 1, r


def test_cli_free_code_says_it_is_free(cli, conn, shipped):
    free = conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NULL LIMIT 1").fetchone()[0]
    r = cli("status", free)
    assert r.returncode == 1, r
    assert "is free" in r.stderr


def test_cli_code_that_is_not_valid_utf8_is_not_found(cli, shipped):
    import os
    import subprocess

    from conftest import trackctl_command

    proc = subprocess.run(trackctl_command() + ["status", os.fsencode("ab\udcffcd")], capture_output=True,
                          env=cli.env)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(b"trackctl: error: no shipment with code"), proc


@pytest.mark.parametrize("args", [("status", "abc", "--order", "42"), ("status", "--order", "x" * 65),
                                  ("status", "--order", "a\x1bb")])
def test_cli_status_usage_errors_exit_2(cli, shipped, args):
    r = cli(*args)
    assert r.returncode == 2, r
    assert r.stdout == ""
