"""karrio:<provider> carriers against a local server speaking the provider's documented shapes (issue 13.2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import trackctl_command  # noqa: E402
from karrio_server import KarrioServer, dhl_universal_shipment, laposte_shipment  # noqa: E402

from trackctl.carriers import add_carrier, carrier_settings
from trackctl.errors import InvalidValue
from trackctl.poll import poll
from trackctl.track import track

pytest.importorskip("karrio.mappers.dhl_universal", reason="the carriers extra is not installed")

ENV = {"DHL_KEY": "dhl-key-s3cret", "DHL_SECRET": "dhl-secret-s3cret"}
CODE = "00340434161094015902"


@pytest.fixture
def server():
    with KarrioServer() as s:
        yield s


def dhl(conn, server):
    add_carrier(conn, "dhl", 30, adapter="karrio:dhl_universal", url=server.url,
                credentials={"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"})


def test_dhl_universal_statuses_events_and_no_news(conn, server):
    dhl(conn, server)
    server.shipments[CODE] = dhl_universal_shipment(CODE, "transit")
    track(conn, CODE, "dhl", "42")
    track(conn, "JJD0099999999", "dhl")  # unknown to DHL: 404, no news
    report = poll(conn, budget=60, environ=ENV)
    assert report.polled == 2 and not report.failed, report.failures
    status = conn.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = %s", (CODE,)).fetchone()[0]
    assert status == "in_transit"
    rows = conn.execute("SELECT e.status, e.raw_status, e.location, e.description FROM sequencing.tracking_event e "
                        "JOIN sequencing.tracking t ON t.id = e.shipment_id WHERE t.tracking_id = %s "
                        "ORDER BY e.occurred_at", (CODE,)).fetchall()
    assert rows[0][2] == "Bonn, DE" and rows[1] == ("in_transit", "in_transit", "Leipzig, DE", "Shipment is on its way")
    path, headers = server.requests[0]
    assert path.startswith("/track/shipments?") and f"trackingNumber={CODE}" in path or "trackingNumber=JJD" in path
    assert {h.lower(): v for h, v in headers.items()}["dhl-api-key"] == ENV["DHL_KEY"]
    # Delivered later: re-reported events add nothing, the new one moves it.
    server.shipments[CODE] = dhl_universal_shipment(CODE, "delivered", [
        {"timestamp": "2026-11-22T10:00:00", "statusCode": "delivered", "status": "DELIVERED",
         "description": "Delivered", "location": {"address": {"addressLocality": "Berlin, DE"}}},
        *dhl_universal_shipment(CODE)["shipments"][0]["events"]])
    report = poll(conn, budget=60, all_due=True, environ=ENV)
    assert report.carriers[0].new_events == 1 and report.carriers[0].changed == 1
    assert conn.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = %s", (CODE,)).fetchone()[0] == "delivered"


def test_laposte_keeps_its_path_under_the_url_and_maps_statuses(conn, server):
    add_carrier(conn, "colissimo", 31, adapter="karrio:laposte", url=server.url, credentials={"api_key": "LP_KEY"})
    server.shipments["6A12345678901"] = laposte_shipment("6A12345678901")
    track(conn, "6A12345678901", "colissimo")
    track(conn, "6A00000000000", "colissimo")  # 404 returnCode: no news
    report = poll(conn, budget=60, environ={"LP_KEY": "lp-s3cret"})
    assert report.polled == 2 and not report.failed, report.failures
    paths = sorted(p for p, _ in server.requests)
    assert paths[1].startswith("/suivi/v2/idships/6A12345678901?")  # the provider's path kept under --url
    rows = conn.execute("SELECT e.status, e.raw_status FROM sequencing.tracking_event e JOIN sequencing.tracking t "
                        "ON t.id = e.shipment_id WHERE t.tracking_id = '6A12345678901' ORDER BY e.occurred_at").fetchall()
    assert rows == [(None, "PC1"), ("out_for_delivery", "out_for_delivery"), ("delivered", "delivered")]
    assert conn.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = '6A12345678901'").fetchone()[0] \
        == "delivered"


def test_provider_errors_fail_that_shipment_with_the_message_and_no_credentials(conn, server):
    dhl(conn, server)
    server.failures[CODE] = (500, {"status": 500, "title": "Server error", "detail": f"upstream broke for key {ENV['DHL_KEY']}"})
    track(conn, CODE, "dhl")
    report = poll(conn, budget=60, environ=ENV)
    assert report.carriers[0].failed == 1
    reason = report.failures[0].reason
    assert "upstream broke" in reason and ENV["DHL_KEY"] not in reason
    stored = conn.execute("SELECT last_poll_error FROM sequencing.tracking WHERE tracking_id = %s", (CODE,)).fetchone()[0]
    assert "upstream broke" in stored and ENV["DHL_KEY"] not in stored


def test_a_dead_server_is_one_failed_request(conn):
    add_carrier(conn, "dhl", 30, adapter="karrio:dhl_universal", url="http://127.0.0.1:9",
                credentials={"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"})
    track(conn, CODE, "dhl")
    report = poll(conn, budget=60, environ=ENV)
    assert report.carriers[0].failed == 1 and report.failures[0].reason.startswith("karrio dhl_universal")


def test_adding_checks_required_settings_and_never_stores_values(conn):
    with pytest.raises(InvalidValue, match="needs consumer_key"):
        add_carrier(conn, "dhl", 30, adapter="karrio:dhl_universal", credentials={"consumer_secret": "DHL_SECRET"})
    with pytest.raises(InvalidValue, match="no setting colour"):
        add_carrier(conn, "dhl", 30, adapter="karrio:dhl_universal", options={"colour": "red"},
                    credentials={"consumer_key": "K", "consumer_secret": "S"})
    with pytest.raises(InvalidValue, match="not installed: install karrio-nosuchcarrier"):
        add_carrier(conn, "x", 31, adapter="karrio:nosuchcarrier")
    add_carrier(conn, "dhl", 30, adapter="karrio:dhl_universal", options={"account_country_code": "BR"},
                credentials={"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"})
    s = carrier_settings(conn, "dhl")
    assert s.credentials == {"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"}


def test_cli_poll_prints_no_karrio_log_and_missing_credential_fails_the_carrier(conn, server, cli):
    r = cli("carrier", "add", "dhl", "--adapter", "karrio:dhl_universal", "--credential", "consumer_key=DHL_KEY",
            "--credential", "consumer_secret=DHL_SECRET", "--url", server.url)
    assert r.returncode == 0, r
    server.shipments[CODE] = dhl_universal_shipment(CODE)
    assert cli("track", CODE, "--carrier", "dhl").returncode == 0
    r = cli("poll", "--format", "json")
    assert r.returncode == 6 and "DHL_KEY is not set" in r.stderr, r
    r = cli("poll", "--format", "json", env_extra=ENV)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)[0]["ok"] == 1
    assert "karrio" not in r.stderr.lower() and "INFO" not in r.stderr and "|" not in r.stderr, r.stderr
    for value in ENV.values():
        assert value not in r.stdout + r.stderr
    r = cli("carrier", "show", "dhl", "--format", "json")
    assert json.loads(r.stdout)["credentials"] == {"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"}


def test_carrier_adapters_lists_providers_with_their_settings(cli):
    r = cli("carrier", "adapters", "--format", "json")
    assert r.returncode == 0, r
    rows = {x["adapter"]: x for x in json.loads(r.stdout)}
    assert {"simulator", "http-json", "correios", "17track"} <= set(rows)
    for provider in ("dhl_universal", "ups", "fedex", "usps", "canadapost", "laposte", "royalmail", "dpd", "gls"):
        assert f"karrio:{provider}" in rows, provider
    assert rows["karrio:dhl_universal"]["required"] == ["consumer_key", "consumer_secret"]
    assert rows["karrio:dhl_universal"]["package"] == "karrio-dhl-universal"


def test_assign_and_status_never_import_karrio(conn, cli, tmp_path):
    code = ("import sys, trackctl.cli as c\n"
            "sys.argv = ['trackctl', 'status', 'NOPE12345']\n"
            "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "print('karrio' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=cli.env, capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().endswith("False"), proc.stderr


LIVE = {  # provider: (credential settings and their variables, a tracking number variable)
    "dhl_universal": ({"consumer_key": "DHL_UNIVERSAL_KEY", "consumer_secret": "DHL_UNIVERSAL_SECRET"}, "DHL_UNIVERSAL_TEST_NUMBER"),
    "ups": ({"client_id": "UPS_CLIENT_ID", "client_secret": "UPS_CLIENT_SECRET"}, "UPS_TEST_NUMBER"),
    "fedex": ({"api_key": "FEDEX_API_KEY", "secret_key": "FEDEX_SECRET_KEY"}, "FEDEX_TEST_NUMBER"),
    "usps": ({"client_id": "USPS_CLIENT_ID", "client_secret": "USPS_CLIENT_SECRET"}, "USPS_TEST_NUMBER"),
    "canadapost": ({"username": "CANADAPOST_USERNAME", "password": "CANADAPOST_PASSWORD"}, "CANADAPOST_TEST_NUMBER"),
    "laposte": ({"api_key": "LAPOSTE_API_KEY"}, "LAPOSTE_TEST_NUMBER"),
    "royalmail": ({"client_id": "ROYALMAIL_CLIENT_ID", "client_secret": "ROYALMAIL_CLIENT_SECRET"}, "ROYALMAIL_TEST_NUMBER"),
    "dpd": ({"delis_id": "DPD_DELIS_ID", "password": "DPD_PASSWORD"}, "DPD_TEST_NUMBER"),
    "gls": ({"username": "GLS_USERNAME", "password": "GLS_PASSWORD"}, "GLS_TEST_NUMBER"),
}


@pytest.mark.parametrize("provider", sorted(LIVE))
def test_live_smoke(conn, provider):
    """Optional: polls one real number against the provider's real API when its credentials are set."""
    creds, number_var = LIVE[provider]
    needed = [*creds.values(), number_var]
    if not all(os.environ.get(v) for v in needed):
        pytest.skip(f"live {provider} test: set {', '.join(needed)}")
    add_carrier(conn, "live", 40, adapter=f"karrio:{provider}", credentials=creds)
    track(conn, os.environ[number_var], "live")
    report = poll(conn, budget=60)
    assert report.carriers[0].ok == 1, report.failures
