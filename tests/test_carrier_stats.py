"""`trackctl carrier stats`, its metrics and health warning, and `trackctl shipments` (issue 13.5)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from carrier_server import CarrierServer, Reply, http_json_event  # noqa: E402
from track17_server import Track17Server, event  # noqa: E402

from trackctl.assign import assign
from trackctl.carrier_stats import carrier_stats, find_shipments
from trackctl.carriers import add_carrier
from trackctl.health import run_checks
from trackctl.poll import poll
from trackctl.pools import refill
from trackctl.shipments import mark
from trackctl.track import track


def test_stats_match_what_the_server_received(conn, cli):
    with CarrierServer() as server:
        add_carrier(conn, "acme", adapter="http-json", url=server.url)
        refill(conn)
        codes = [assign(conn, f"o{i}", "acme").code for i in range(12)]
        for c in codes[:8]:
            server.history(c, [http_json_event("e1", "in_transit", "2026-11-20T09:15:00-03:00")])
        server.script(codes[8], Reply(status=500))
        server.script(codes[9], Reply(status=503))
        server.script(codes[10], Reply(status=429, headers={"Retry-After": "1"}))
        poll(conn, budget=30)
        received = len(server.requests)
        r = cli("carrier", "stats", "--format", "json")
        assert r.returncode == 0, r
        [row] = json.loads(r.stdout)
        assert row["carrier"] == "acme" and row["requests"] == received
        assert row["failed"] == 2 and row["rate_limited"] == 1
        assert row["numbers"] == received and row["registered"] is None
        assert row["latency_p50_ms"] is not None and row["latency_p95_ms"] >= row["latency_p50_ms"]
        text = cli("metrics").stdout
        assert f'trackctl_carrier_http_requests_total{{carrier="acme",outcome="ok"}} {received - 3}.0' in text
        assert 'trackctl_carrier_http_requests_total{carrier="acme",outcome="failed"} 2.0' in text
        assert f'trackctl_carrier_numbers_total{{carrier="acme"}} {received}.0' in text
        assert cli("carrier", "stats", "--since", "bad").returncode == 2


def test_17track_stats_show_registrations(conn):
    with Track17Server(key="k") as server:
        add_carrier(conn, "jadlog", 20, adapter="17track", url=server.url, token_env="K17")
        for i in range(45):
            track(conn, f"JD{i:08d}", "jadlog")
        server.track("JD00000001", "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
        poll(conn, budget=60, environ={"K17": "k"})
        [s] = carrier_stats(conn)
        assert s.requests == len(server.calls) and s.registered == server.register_units == 45
        assert s.numbers == server.numbers_asked("gettrackinfo") == 45 and s.failed == 0


def test_health_warns_when_a_carrier_fails_too_often(conn):
    with CarrierServer() as server:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, breaker_threshold=1000)
        refill(conn)
        codes = [assign(conn, f"o{i}", "acme").code for i in range(12)]
        assert not [p for p in run_checks(conn) if p.check == "carrier_failures"]
        for c in codes:
            server.script(c, Reply(status=500))
        poll(conn, budget=30)
        problems = [p for p in run_checks(conn) if p.check == "carrier_failures"]
        assert len(problems) == 1 and "carrier acme: 12 of 12 requests" in problems[0].message


def test_shipments_filters(conn, cli):
    add_carrier(conn, "ups", 10)
    add_carrier(conn, "jadlog", 11)
    track(conn, "1Z999AA10123456784", "ups", "42")
    track(conn, "JD00000001", "jadlog", "43")
    track(conn, "JD00000002", "jadlog")
    mark(conn, "JD00000001", "failed_attempt")
    mark(conn, "1Z999AA10123456784", "exception")
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '6 days', stale_at = now() "
                 "WHERE tracking_id = 'JD00000002'")
    assert [s.code for s in find_shipments(conn, statuses=["exception"], since=__import__("datetime").timedelta(hours=24))] \
        == ["1Z999AA10123456784"]
    assert [s.code for s in find_shipments(conn, statuses=["failed_attempt"], carrier="jadlog")] == ["JD00000001"]
    r = cli("shipments", "--no-news-for", "5d", "--format", "json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == [{"code": "JD00000002", "order_id": None, "carrier": "jadlog", "status": "pending",
                                     "updated_at": json.loads(r.stdout)[0]["updated_at"], "stale": True}]
    r = cli("shipments", "--stale", "--format", "json")
    assert [x["code"] for x in json.loads(r.stdout)] == ["JD00000002"]
    r = cli("shipments", "--order", "42", "--format", "json")
    assert [x["code"] for x in json.loads(r.stdout)] == ["1Z999AA10123456784"]
    r = cli("shipments", "--limit", "1", "--format", "json")
    assert len(json.loads(r.stdout)) == 1 and set(json.loads(r.stdout)[0]) == {
        "code", "order_id", "carrier", "status", "updated_at", "stale"}
    r = cli("shipments", "--status", "lost")
    assert r.returncode == 2 and "unknown status" in r.stderr, r
    r = cli("shipments", "--carrier", "nope")
    assert r.returncode == 1, r
