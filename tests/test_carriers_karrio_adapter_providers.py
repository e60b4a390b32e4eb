"""UPS, FedEx, USPS, Canada Post, Royal Mail, DPD and GLS through `karrio:<provider>` and `--url`.

One local server (tests/karrio_server.py, bodies from tests/karrio_providers.py) answers each
provider's documented tracking shape, its token or login request and its "unknown number"
answer. Each test polls a known and an unknown number and checks what trackctl stored, that
`carrier stats` counts exactly the requests the server received (token requests included),
and one error of the provider's family.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import karrio_providers as kp  # noqa: E402
from karrio_server import KarrioServer, dhl_universal_shipment  # noqa: E402

from trackctl.carrier_stats import carrier_stats
from trackctl.carriers import add_carrier, carrier_states
from trackctl.poll import poll
from trackctl.track import track

pytest.importorskip("karrio.mappers.ups", reason="the carriers extra is not installed")

ENV = {"CLIENT_ID": "client-id-s3cret", "CLIENT_SECRET": "client-secret-s3cret", "PASSWORD": "password-s3cret"}
LOGINS = {  # provider: credentials (setting -> variable)
    "ups": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
    "fedex": {"track_api_key": "CLIENT_ID", "track_secret_key": "CLIENT_SECRET"},
    "usps": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
    "canadapost": {"username": "CLIENT_ID", "password": "PASSWORD"},
    "royalmail": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
    "dpd": {"delis_id": "CLIENT_ID", "password": "PASSWORD"},
    "gls": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
}


@pytest.fixture(scope="module")
def server():
    with KarrioServer() as s:
        yield s


@pytest.fixture(autouse=True)
def fresh(server):
    server.shipments.clear()
    server.failures.clear()
    server.refuse_login = False


def carrier(conn, server, provider: str, **settings):
    add_carrier(conn, provider, adapter=f"karrio:{provider}", url=server.url, credentials=LOGINS[provider], **settings)


def polled(conn, server, **kwargs):
    """Poll; check `carrier stats` counts exactly the requests the server received meanwhile."""
    before = len(server.requests)
    report = poll(conn, budget=60, environ=ENV, **kwargs)
    received = server.requests[before:]
    (stats,) = carrier_stats(conn)
    assert stats.requests == len(received), (stats, received)
    return report, [path for path, _ in received]


def stored(conn, code: str) -> tuple[str, list[tuple]]:
    status = conn.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()[0]
    events = conn.execute("SELECT e.status, e.raw_status, e.description, e.location, e.occurred_at::text "
                          "FROM sequencing.tracking_event e JOIN sequencing.tracking t ON t.id = e.shipment_id "
                          "WHERE t.tracking_id = %s ORDER BY e.occurred_at", (code,)).fetchall()
    return status, events


def no_events(conn, code: str) -> bool:
    status, events = stored(conn, code)
    return status == "pending" and events == []


def test_ups_token_once_then_tracking_and_unknown_number(conn, server):
    carrier(conn, server, "ups")
    code = "1Z999AA10123456784"
    server.shipments[code] = kp.ups_shipment(code, [
        ("D", "FS", "DELIVERED", "20261122", "101500"),
        ("I", "AR", "Arrived at Facility", "20261121", "083000"),
        ("M", "MP", "Shipper created a label, UPS has not received the package yet.", "20261120", "090000")])
    track(conn, code, "ups")
    track(conn, "1Z999AA10000000000", "ups")  # unknown: 404 TW0001, no news
    report, paths = polled(conn, server)
    assert report.polled == 2 and not report.failed, report.failures
    # A token per run (karrio caches it; two workers starting together may each ask for one).
    assert 1 <= paths.count("/security/v1/oauth/token") <= 2 and sum("/details/" in p for p in paths) == 2, paths
    status, events = stored(conn, code)
    assert status == "delivered"
    assert events == [
        ("pending", "pending", "Shipper created a label, UPS has not received the package yet.", "Louisville, KY, US",
         "2026-11-20 09:00:00+00"),
        ("in_transit", "in_transit", "Arrived at Facility", "Louisville, KY, US", "2026-11-21 08:30:00+00"),
        ("delivered", "delivered", "DELIVERED", "Louisville, KY, US", "2026-11-22 10:15:00+00")]
    assert no_events(conn, "1Z999AA10000000000")
    headers = {k.lower(): v for k, v in server.requests[-1][1].items()}
    assert headers["authorization"] == f"Bearer {kp.TOKENS['ups']}"


def test_ups_refused_login_fails_with_the_providers_message_and_no_secret(conn, server):
    carrier(conn, server, "ups")
    server.refuse_login = True
    track(conn, "1Z999AA10123456784", "ups")
    report, paths = polled(conn, server)
    assert paths == ["/security/v1/oauth/token"] and report.carriers[0].failed == 1
    reason = report.failures[0].reason
    assert reason.startswith("karrio ups:") and "Invalid Access License number" in reason, reason
    assert all(v not in reason for v in ENV.values())


def test_ups_429_blocks_the_carrier_for_its_retry_after(conn, server):
    carrier(conn, server, "ups")
    code = "1Z999AA10123456784"
    server.failures[code] = (429, {"response": {"errors": [{"code": "429", "message": "Too Many Requests"}]}},
                             {"Retry-After": "120"})
    track(conn, code, "ups")
    report, paths = polled(conn, server)
    assert report.carriers[0].rate_limited == 1 and paths[-1].startswith("/api/track/v1/details/")
    blocked = carrier_states(conn)[0].blocked_until
    left = (blocked - conn.execute("SELECT now()").fetchone()[0]).total_seconds()
    assert 100 <= left <= 121, left
    assert carrier_stats(conn)[0].rate_limited == 1


def test_fedex_asks_for_several_numbers_in_one_request(conn, server):
    carrier(conn, server, "fedex")
    codes = ["794612345678", "794612345679", "794600000000"]
    server.shipments[codes[0]] = kp.fedex_result(codes[0], [
        ("OD", "On FedEx vehicle for delivery", "2026-11-22T08:10:00-06:00"),
        ("PU", "Picked up", "2026-11-20T16:00:00-06:00")])
    server.shipments[codes[1]] = kp.fedex_result(codes[1], [("DE", "Delivery exception", "2026-11-22T11:00:00-06:00")])
    for code in codes:
        track(conn, code, "fedex")
    report, paths = polled(conn, server)
    assert report.polled == 3 and not report.failed, report.failures
    assert paths == ["/oauth/token", "/track/v1/trackingnumbers"]  # three numbers, one tracking request
    assert carrier_stats(conn)[0].numbers == 3
    status, events = stored(conn, codes[0])
    assert status == "out_for_delivery"
    # karrio keeps an event's local time and drops its offset (-06:00 here): stored as UTC (ADAPTERS.md).
    assert events == [("in_transit", "picked_up", "Picked up", "MEMPHIS, TN, US", "2026-11-20 16:00:00+00"),
                      ("out_for_delivery", "out_for_delivery", "On FedEx vehicle for delivery", "MEMPHIS, TN, US",
                       "2026-11-22 08:10:00+00")]
    assert stored(conn, codes[1])[0] == "failed_attempt"
    assert no_events(conn, codes[2])  # TRACKING.TRACKINGNUMBER.NOTFOUND: no news


def test_fedex_refused_token(conn, server):
    carrier(conn, server, "fedex")
    server.refuse_login = True
    track(conn, "794612345678", "fedex")
    report, paths = polled(conn, server)
    assert paths == ["/oauth/token"] and report.carriers[0].failed == 1
    assert "The given client credentials were not valid" in report.failures[0].reason


def test_usps_statuses_and_a_body_over_the_cap(conn, server):
    carrier(conn, server, "usps")
    code, big = "9400100000000000000001", "9400100000000000000002"
    server.shipments[code] = kp.usps_shipment(code, "Out for Delivery", [
        ("Out for Delivery", "OF", "2026-11-22T07:45:00Z"),
        ("Arrived at USPS Regional Facility", "10", "2026-11-21T02:10:00Z")])
    server.failures[big] = (200, json.dumps(kp.usps_shipment(big, "In Transit", [])) + " " * (1024 * 1024))
    for c in (code, big, "9400100000000000000000"):
        track(conn, c, "usps")
    report, paths = polled(conn, server)
    assert report.polled == 3 and report.carriers[0].failed == 1, report.failures
    assert "over the 1024 KiB limit" in report.failures[0].reason and report.failures[0].code == big
    status, events = stored(conn, code)
    assert status == "out_for_delivery"
    assert events == [(None, "10", "Arrived at USPS Regional Facility", "NEW YORK, 10001, NY, US", "2026-11-21 02:10:00+00"),
                      ("out_for_delivery", "out_for_delivery", "Out for Delivery", "NEW YORK, 10001, NY, US",
                       "2026-11-22 07:45:00+00")]
    assert no_events(conn, "9400100000000000000000")
    assert carrier_stats(conn)[0].failed == 1


def test_canadapost_xml_detail_and_no_pin_history(conn, server):
    carrier(conn, server, "canadapost")
    pin = "1371134583769923"
    server.shipments[pin] = kp.canadapost_detail(pin, [
        ("1408", "2026-11-22", "10:00:00", "Item successfully delivered"),
        ("0174", "2026-11-22", "08:00:00", "Item out for delivery"),
        ("0100", "2026-11-20", "09:00:00", "Item accepted at the Post Office")])
    track(conn, pin, "canadapost")
    track(conn, "1371134500000000", "canadapost")  # 404 "004 No Pin History": no news
    report, paths = polled(conn, server)
    assert report.polled == 2 and not report.failed, report.failures
    status, events = stored(conn, pin)
    assert status == "delivered"
    assert [e[:3] for e in events] == [(None, "0100", "Item accepted at the Post Office"),
                                       (None, "0174", "Item out for delivery"),
                                       ("delivered", "delivered", "Item successfully delivered")]
    assert events[-1][3] == "OTTAWA, ON"
    assert no_events(conn, "1371134500000000")


def test_royalmail_events_without_statuses_and_a_server_error(conn, server):
    carrier(conn, server, "royalmail")
    code, broken = "AB123456789GB", "AB000000001GB"
    server.shipments[code] = kp.royalmail_events(code, [("EVNKM", "Delivered", "2026-11-22T10:00:00+00:00"),
                                                        ("EVNMI", "Item received", "2026-11-21T08:00:00+01:00")])
    html = "AB000000002GB"
    server.failures[broken] = (500, {"httpCode": 500, "httpMessage": "Internal Server Error",
                                     "moreInformation": "backend unavailable"})
    server.failures[html] = (502, "<html><body>Bad Gateway</body></html>")  # a proxy's page, not JSON
    for c in (code, broken, html, "AB999999999GB"):
        track(conn, c, "royalmail")
    report, _ = polled(conn, server)
    assert report.polled == 4 and report.carriers[0].failed == 2
    reasons = {f.code: f.reason for f in report.failures}
    assert reasons[broken].startswith("karrio royalmail: HTTP 500 from the carrier: 500 Internal Server Error")
    assert reasons[html] == "karrio royalmail: HTTP 502 from the carrier", reasons
    # karrio's royalmail gives events no status: they are kept raw and the shipment's status stays.
    status, events = stored(conn, code)
    assert status == "pending"
    assert events == [(None, "EVNMI", "Item received", "Swindon MC", "2026-11-21 08:00:00+00"),  # offset dropped
                      (None, "EVNKM", "Delivered", "Swindon MC", "2026-11-22 10:00:00+00")]
    assert no_events(conn, "AB999999999GB")
    assert carrier_stats(conn)[0].failed == 2


def test_dpd_soap_login_and_tracking(conn, server):
    carrier(conn, server, "dpd")
    code = "01905002372145"
    server.shipments[code] = kp.dpd_tracking(code, [("Accepted", "Parcel handed to DPD", "11/20/2026 09:00:00 AM"),
                                                    ("Courier", "Out for delivery", "11/22/2026 08:00:00 AM")])
    track(conn, code, "dpd")
    track(conn, "01905000000000", "dpd")  # an answer without trackingresult: no news
    report, paths = polled(conn, server)
    assert report.polled == 2 and not report.failed, report.failures
    assert 1 <= paths.count("/soap/services/LoginService/V2_1") <= 2 and sum("ParcelLifeCycle" in p for p in paths) == 2
    status, events = stored(conn, code)
    assert status == "out_for_delivery"
    assert [e[:4] for e in events] == [(None, "Accepted", "Parcel handed to DPD", "Aschaffenburg (DE)"),
                                       ("out_for_delivery", "out_for_delivery", "Out for delivery", "Aschaffenburg (DE)")]
    assert no_events(conn, "01905000000000")


def test_dpd_refused_login_is_a_failed_request_with_dpds_message(conn, server):
    carrier(conn, server, "dpd")
    server.refuse_login = True
    track(conn, "01905002372145", "dpd")
    report, paths = polled(conn, server)
    # karrio asks for a DPD login up to three times on a server error: each is one request counted.
    assert set(paths) == {"/soap/services/LoginService/V2_1"} and report.carriers[0].failed == 1
    reason = report.failures[0].reason
    assert "LOGIN_8" in reason and "combination of user and password is invalid" in reason, reason
    assert carrier_stats(conn)[0].failed == len(paths)


def test_gls_batch_and_cli_prints_no_karrio_or_jstruct_log(conn, server, cli):
    r = cli("carrier", "add", "gls", "--adapter", "karrio:gls", "--credential", "client_id=CLIENT_ID",
            "--credential", "client_secret=CLIENT_SECRET", "--url", server.url)
    assert r.returncode == 0, r
    code = "ZKXQ1234A"
    server.shipments[code] = kp.gls_parcel(code, "INDELIVERY", [("3.0", "Out for delivery", "2026-11-22T08:00:00+01:00"),
                                                                ("1.0", "Parcel received", "2026-11-20T09:00:00+01:00")])
    for c in (code, "ZKXQ0000Z"):
        assert cli("track", c, "--carrier", "gls").returncode == 0
    before = len(server.requests)
    r = cli("poll", "--format", "json", env_extra=ENV)
    assert r.returncode == 0, r
    paths = [p for p, _ in server.requests[before:]]
    assert paths == ["/oauth2/v2/token", f"/track-and-trace-v1/tracking/simple/trackids/{code},ZKXQ0000Z"] or \
        paths == ["/oauth2/v2/token", f"/track-and-trace-v1/tracking/simple/trackids/ZKXQ0000Z,{code}"], paths
    assert json.loads(r.stdout)[0]["ok"] == 2
    # Only trackctl's run line: jstruct would warn about the token answer's fields, token included.
    assert r.stderr.startswith("trackctl: poll: ok") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert kp.TOKENS["gls"] not in r.stderr + r.stdout and "unknown arguments" not in r.stderr
    r = cli("status", code, "--format", "json")
    assert json.loads(r.stdout)["status"] == "out_for_delivery", r.stdout
    r = cli("carrier", "stats", "--format", "json")
    assert json.loads(r.stdout)[0]["requests"] == 2


def test_karrio_requests_keep_their_connections_alive(conn, server):
    add_carrier(conn, "dhl", adapter="karrio:dhl_universal", url=server.url, max_concurrency=2,
                credentials={"consumer_key": "CLIENT_ID", "consumer_secret": "CLIENT_SECRET"})
    codes = [f"JJD{n:010d}" for n in range(40)]
    for code in codes:
        server.shipments[code] = dhl_universal_shipment(code)
        track(conn, code, "dhl")
    opened = server.connections
    report, paths = polled(conn, server)
    assert report.carriers[0].ok == 40 and len(paths) == 40
    assert server.connections - opened <= len(paths) // 10, server.connections - opened
