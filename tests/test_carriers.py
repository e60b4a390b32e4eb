"""Carrier adapters against real HTTP servers on 127.0.0.1 (tests/carrier_server.py), and the registry."""

from __future__ import annotations

import email.utils
import json
import socket
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest
from carrier_server import CarrierServer, Reply, correios_event, http_json_event

from trackctl.carriers import add_carrier, carrier_settings, set_carrier
from trackctl.carriers.base import AdapterConfig, FetchFailed, RateLimited, ShipmentRef, parse_retry_after
from trackctl.carriers.correios import BRASILIA_FALLBACK, CorreiosAdapter, brasilia
from trackctl.carriers.http_json import HttpJsonAdapter
from trackctl.carriers.registry import adapter_names, build_adapter, load_adapter
from trackctl.carriers.simulator import SimulatorAdapter
from trackctl.errors import InvalidValue

TOKEN = "tok-9f8e7d6c5b4a"
CODE = "5f0c6a0e-8a4e-4b7c-9a43-2f1e2d3c4b5a"
S10 = "AA123456785BR"


def ref(code: str = CODE, assigned_at: datetime | None = None, poll_count: int = 0) -> ShipmentRef:
    return ShipmentRef(code, "42", "pending", assigned_at or datetime.now(timezone.utc), poll_count)


@pytest.fixture
def server():
    with CarrierServer("http-json") as s:
        yield s


@pytest.fixture
def sro():
    with CarrierServer("correios") as s:
        yield s


def http_json(server: CarrierServer, token: str | None = None, timeout: float = 5.0) -> HttpJsonAdapter:
    return HttpJsonAdapter(AdapterConfig("acme", url=server.url, token=token, timeout=timeout,
                                         user_agent="trackctl/0.1.0"))


# -- http-json ----------------------------------------------------------------------------------


def test_http_json_reads_every_event_of_an_out_of_order_history(server):
    server.history(CODE, [
        http_json_event("ev-2", "out_for_delivery", "2026-11-21T08:02:00Z", "Out for delivery"),
        http_json_event("ev-1", "in_transit", "2026-11-20T09:15:00-03:00", "Parcel received at hub", "Cajamar, SP"),
        {"id": "ev-3", "status": "delivered", "occurred_at": "2026-11-21T15:00:00+00:00"},  # no description/location
    ])
    events = {e.key: e for e in http_json(server).fetch(ref())}
    assert set(events) == {"ev-1", "ev-2", "ev-3"}
    assert events["ev-1"].occurred_at == datetime(2026, 11, 20, 12, 15, tzinfo=timezone.utc)
    assert (events["ev-1"].status, events["ev-1"].description, events["ev-1"].location) == (
        "in_transit", "Parcel received at hub", "Cajamar, SP")
    assert events["ev-3"].description is None and events["ev-3"].location is None
    assert server.requests[0].path == f"/trackings/{CODE}"


def test_http_json_keeps_unknown_statuses_raw(server):
    server.history(CODE, [http_json_event("x", "held_by_customs", "2026-11-20T09:15:00-03:00")])
    (event,) = http_json(server).fetch(ref())
    assert (event.status, event.raw_status) == (None, "held_by_customs")


def test_http_json_sends_user_agent_and_the_bearer_token_only_when_there_is_one(server):
    server.history(CODE, [])
    http_json(server, token=TOKEN).fetch(ref())
    http_json(server).fetch(ref())
    with_token, without = server.requests
    assert with_token.headers["User-Agent"] == "trackctl/0.1.0"
    assert with_token.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in without.headers


def test_base_url_works_with_and_without_trailing_slash(server):
    server.history(CODE, [])
    for url in (server.url, server.url + "/"):
        HttpJsonAdapter(AdapterConfig("acme", url=url)).fetch(ref())
    assert [r.path for r in server.requests] == [f"/trackings/{CODE}"] * 2


def test_404_is_no_news_not_a_failure(server):
    assert http_json(server).fetch(ref("unknown-code")) == []


@pytest.mark.parametrize("header,expected", [
    ({"Retry-After": "30"}, 30.0),
    ({}, None),  # the poller then uses the 60 s default
    ({"Retry-After": "soon"}, None),
])
def test_429_raises_rate_limited_with_retry_after_seconds(server, header, expected):
    server.script(CODE, Reply(status=429, headers=header))
    with pytest.raises(RateLimited) as caught:
        http_json(server).fetch(ref())
    assert caught.value.retry_after == expected


def test_429_retry_after_as_an_http_date(server):
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    server.script(CODE, Reply(status=429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)}))
    with pytest.raises(RateLimited) as caught:
        http_json(server).fetch(ref())
    assert 100 < caught.value.retry_after <= 120


def test_retry_after_parsing_clamps_and_refuses_nonsense():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("0", now) == 1.0
    assert parse_retry_after("10000000", now) == 86400.0
    assert parse_retry_after("Wed, 25 Nov 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now) == 1.0  # in the past
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after("", now) is None


@pytest.mark.parametrize("reply,reason", [
    (Reply(status=500), "HTTP 500"),
    (Reply(status=503), "HTTP 503"),
    (Reply(status=200, body=b"<html>garbage</html>"), "not JSON"),
    (Reply(status=200, body=b'{"code": "x"'), "not JSON"),
    (Reply(status=200, body=b'[1, 2]'), "not a JSON object"),
    (Reply(status=200, body=b'{"events": "nope"}'), "'events'"),
    (Reply(status=200, body=json.dumps({"events": [{"status": "in_transit",
                                                    "occurred_at": "2026-11-20T09:15:00Z"}]}).encode()), "no id"),
    (Reply(status=200, body=json.dumps({"events": [{"id": "a", "status": "in_transit",
                                                    "occurred_at": "2026-11-20T09:15:00"}]}).encode()), "no UTC offset"),
    (Reply(status=200, body=json.dumps({"events": [{"id": "a", "status": "in_transit",
                                                    "occurred_at": "yesterday"}]}).encode()), "RFC 3339"),
    (Reply(status=200, body=json.dumps({"code": "another", "events": []}).encode()), "another code"),
    (Reply(status=401), "HTTP 401"),
    (Reply(status=301, headers={"Location": "http://example.com/"}), "HTTP 301"),
])
def test_bad_answers_are_failed_requests(server, reply, reason):
    server.script(CODE, reply)
    with pytest.raises(FetchFailed, match=reason):
        http_json(server, token=TOKEN).fetch(ref())


def test_a_body_over_one_mebibyte_is_a_failed_request(server):
    server.history(CODE, [])
    server.script(CODE, Reply(size=1024 * 1024 + 1))
    with pytest.raises(FetchFailed, match="over the 1024 KiB limit"):
        http_json(server).fetch(ref())
    server.script(CODE, Reply(size=1024 * 1024))  # exactly 1 MiB is fine
    assert http_json(server).fetch(ref()) == []


def test_a_hanging_server_times_out(server):
    server.script(CODE, Reply(hang=30))
    with pytest.raises(FetchFailed, match="timed out after 0.5 s"):
        http_json(server, timeout=0.5).fetch(ref())


def test_a_server_trickling_bytes_cannot_hold_the_request_past_its_timeout(server):
    # One byte every 0.1 s never trips a per-read timeout of 0.5 s; the total deadline must.
    server.history(CODE, [])
    server.script(CODE, Reply(trickle=0.1, size=200))
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        http_json(server, timeout=0.5).fetch(ref())
    # 200 bytes at 0.1 s each take 20 s; the deadline ends the request after 0.5 s (5 s leaves
    # room for a loaded machine). A closing answer (this test server speaks HTTP/1.0) once held
    # the request for the whole body: http.client had moved the socket from the connection to
    # the response, out of the watchdog's reach.
    assert time.monotonic() - started < 5


def test_connection_refused_is_a_failed_request():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = HttpJsonAdapter(AdapterConfig("acme", url=f"http://127.0.0.1:{port}", token=TOKEN, timeout=2))
    with pytest.raises(FetchFailed, match="connection refused") as caught:
        adapter.fetch(ref())
    assert TOKEN not in str(caught.value)


def test_the_token_never_appears_in_any_failure(server):
    server.history(CODE, [])
    replies = [Reply(status=500, body=f"token {TOKEN} rejected".encode()), Reply(body=TOKEN.encode()),
               Reply(status=429, headers={"Retry-After": TOKEN}), Reply(hang=30)]
    for reply in replies:
        server.script(CODE, reply)
        with pytest.raises((FetchFailed, RateLimited)) as caught:
            http_json(server, token=TOKEN, timeout=0.5).fetch(ref())
        assert TOKEN not in str(caught.value)
        assert TOKEN not in repr(caught.value.args)


def test_adapter_config_repr_hides_the_token():
    assert TOKEN not in repr(AdapterConfig("acme", url="http://x", token=TOKEN))


# -- correios -----------------------------------------------------------------------------------


def correios(sro: CarrierServer, token: str | None = TOKEN) -> CorreiosAdapter:
    return CorreiosAdapter(AdapterConfig("correios", url=sro.url, token=token, timeout=5, user_agent="trackctl/0.1.0"))


def test_correios_maps_codes_reads_brasilia_time_and_builds_locations(sro):
    sro.history(S10, [  # newest first, as the SRO API sends them
        correios_event("BDE", "01", "2026-11-21T14:32:10", "Objeto entregue ao destinatário"),
        correios_event("OEC", "01", "2026-11-21T09:05:44", "Objeto saiu para entrega ao destinatário"),
        correios_event("RO", "01", "2026-11-20T22:10:00", "Objeto em trânsito", city="CAJAMAR", uf=None),
        correios_event("PO", "09", "2026-11-20T10:00:00", "Objeto postado", city=None, uf=None),
    ])
    events = correios(sro).fetch(ref(S10))
    by_raw = {e.raw_status: e for e in events}
    assert [e.status for e in events] == ["delivered", "out_for_delivery", "in_transit", "in_transit"]
    assert by_raw["BDE-01"].occurred_at == datetime(2026, 11, 21, 17, 32, 10, tzinfo=timezone.utc)
    assert by_raw["BDE-01"].location == "SAO PAULO/SP"
    assert by_raw["RO-01"].location == "CAJAMAR"
    assert by_raw["PO-09"].location is None
    assert by_raw["BDE-01"].key == "BDE|01|2026-11-21T14:32:10"
    assert by_raw["OEC-01"].description == "Objeto saiu para entrega ao destinatário"
    seen = sro.requests[0]
    assert seen.path == f"/srorastro/v1/objetos/{S10}?resultado=T"
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}" and seen.headers["User-Agent"] == "trackctl/0.1.0"


@pytest.mark.parametrize("codigo,tipo,status", [
    ("PO", "01", "in_transit"), ("PO", "09", "in_transit"), ("RO", "01", "in_transit"), ("DO", "01", "in_transit"),
    ("OEC", "01", "out_for_delivery"),
    ("BDE", "01", "delivered"), ("BDI", "01", "delivered"), ("BDR", "01", "delivered"),
    ("BDE", "23", "returned"), ("BDI", "23", "returned"), ("BDR", "23", "returned"),
    ("LDI", "01", "available_for_pickup"), ("LDI", "02", "available_for_pickup"),
    ("LDI", "03", "available_for_pickup"), ("LDI", "14", "available_for_pickup"),
    *[(c, t, "failed_attempt") for c in ("BDE", "BDI", "BDR") for t in ("02", "03", "04", "06", "07")],
    ("BDE", "05", None), ("PO", "02", None), ("FC", "01", None), ("LDI", "04", None),
])
def test_correios_status_table(sro, codigo, tipo, status):
    sro.history(S10, [correios_event(codigo, tipo, "2026-11-21T14:32:10")])
    (event,) = correios(sro).fetch(ref(S10))
    assert (event.status, event.raw_status) == (status, f"{codigo}-{tipo}")


def test_correios_unknown_object_is_no_news(sro):
    assert correios(sro).fetch(ref("ZZ999999995BR")) == []


def test_correios_same_event_twice_in_one_answer_is_one_event(sro):
    e = correios_event("OEC", "01", "2026-11-21T09:05:44")
    sro.history(S10, [e, dict(e)])
    assert len(correios(sro).fetch(ref(S10))) == 1


@pytest.mark.parametrize("body,reason", [
    (b'{"objetos": null}', "'objetos'"),
    (b'{"objetos": [{"codObjeto": "XX000000000BR", "eventos": []}]}', "another object"),
    (b'{"objetos": [{"codObjeto": "AA123456785BR"}]}', "neither"),
    (b'{"objetos": [{"codObjeto": "AA123456785BR", "eventos": [{"tipo": "01", "dtHrCriado": "2026-11-21T09:05:44"}]}]}',
     "codigo"),
    (b'{"objetos": [{"codObjeto": "AA123456785BR", "eventos": [{"codigo": "OEC", "tipo": "01", "dtHrCriado": "ontem"}]}]}',
     "dtHrCriado"),
    (b"\xff\xfe garbage", "not JSON"),
])
def test_correios_bad_bodies_are_failed_requests(sro, body, reason):
    sro.script(S10, Reply(body=body))
    with pytest.raises(FetchFailed, match=reason):
        correios(sro).fetch(ref(S10))


def test_correios_429_and_5xx(sro):
    sro.script(S10, Reply(status=429, headers={"Retry-After": "7"}), Reply(status=502))
    with pytest.raises(RateLimited) as caught:
        correios(sro).fetch(ref(S10))
    assert caught.value.retry_after == 7
    with pytest.raises(FetchFailed, match="HTTP 502"):
        correios(sro).fetch(ref(S10))


def test_correios_default_base_url():
    assert CorreiosAdapter(AdapterConfig("correios")).base == "https://api.correios.com.br"


def test_brasilia_time_falls_back_to_minus_three_without_a_tz_database(monkeypatch):
    import zoneinfo

    def missing(key):
        raise zoneinfo.ZoneInfoNotFoundError(key)

    brasilia.cache_clear()
    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    try:
        assert brasilia() is BRASILIA_FALLBACK
        assert BRASILIA_FALLBACK.utcoffset(None) == timedelta(hours=-3)
    finally:
        brasilia.cache_clear()


def test_brasilia_time_with_the_tz_database_matches_the_fallback_today():
    # Brazil dropped daylight saving time in 2019: both give -03:00 for current dates.
    when = datetime(2026, 1, 15, 12, 0)
    assert when.replace(tzinfo=brasilia()).utcoffset() == timedelta(hours=-3)


# -- simulator ----------------------------------------------------------------------------------


def test_simulator_advances_one_step_per_interval():
    sim = SimulatorAdapter(AdapterConfig("sim", options={"step": 60.0}))
    assigned = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    shipment = ref(assigned_at=assigned)
    steps = [[e.status for e in sim.events_at(shipment, assigned + timedelta(seconds=s))] for s in (0, 59, 61, 130, 185, 9999)]
    assert steps == [
        ["pending"], ["pending"], ["pending", "in_transit"], ["pending", "in_transit", "out_for_delivery"],
        ["pending", "in_transit", "out_for_delivery", "delivered"],
        ["pending", "in_transit", "out_for_delivery", "delivered"],
    ]
    times = [e.occurred_at for e in sim.events_at(shipment, assigned + timedelta(hours=1))]
    assert times == [assigned + timedelta(minutes=n) for n in range(4)]


def test_simulator_failures_are_deterministic_for_a_seed():
    def outcomes(seed: int) -> list[bool]:
        sim = SimulatorAdapter(AdapterConfig("sim", options={"fail": 0.3, "seed": seed}))
        result = []
        for n in range(200):
            try:
                sim.fetch(ref(code=f"code-{n % 20}", poll_count=n // 20))
                result.append(True)
            except FetchFailed:
                result.append(False)
        return result

    first = outcomes(7)
    assert first == outcomes(7)
    assert first != outcomes(8)
    assert 30 < first.count(False) < 90  # about 30% of 200


def test_simulator_options_are_parsed_and_checked():
    assert SimulatorAdapter.parse_options({"step": "2s", "fail": "0.05", "seed": "7", "latency": "50ms"}) == {
        "step": 2.0, "fail": 0.05, "seed": 7, "latency": 0.05}
    assert SimulatorAdapter.parse_options({"step": "5m"}) == {"step": 300.0}
    for bad in ({"step": "0s"}, {"fail": "2"}, {"fail": "often"}, {"seed": "x"}, {"speed": "1"}, {"step": "fast"}):
        with pytest.raises(ValueError):
            SimulatorAdapter.parse_options(bad)


# -- registry and carrier settings --------------------------------------------------------------


def test_builtin_adapters_are_known_and_unknown_ones_are_refused():
    assert adapter_names()[:3] == ["simulator", "http-json", "correios"]
    with pytest.raises(InvalidValue, match="unknown adapter 'fedex'.*known: simulator, http-json, correios"):
        load_adapter("fedex")


def test_http_json_needs_a_url(conn):
    with pytest.raises(InvalidValue, match="needs the carrier's base URL"):
        add_carrier(conn, "acme", adapter="http-json")
    with pytest.raises(InvalidValue):
        build_adapter("http-json", AdapterConfig("acme"))


def usable_slots(conn, carrier_id: int) -> int:
    """Slots a poller may take: one per allowed concurrent request (rows above the cap stay unused)."""
    return conn.execute("""
        SELECT count(*) FROM sequencing.carrier_slot s JOIN sequencing.carrier c ON c.id = s.carrier_id
        WHERE s.carrier_id = %s AND s.slot <= c.max_concurrency""", (carrier_id,)).fetchone()[0]


def test_carrier_settings_are_stored_checked_and_changed(conn):
    add_carrier(conn, "acme", adapter="http-json", url="http://127.0.0.1:9/api", token_env="ACME_TOKEN",
                max_concurrency=4, timeout=2.5, intervals={"out_for_delivery": 300}, stale_after=14 * 86400,
                breaker_threshold=3, breaker_cooldown=60)
    s = carrier_settings(conn, "acme")
    assert (s.adapter, s.url, s.token_env, s.max_concurrency, s.timeout) == (
        "http-json", "http://127.0.0.1:9/api", "ACME_TOKEN", 4, 2.5)
    assert s.poll_intervals == {"out_for_delivery": 300}
    assert (s.stale_after, s.breaker_threshold, s.breaker_cooldown) == (
        timedelta(days=14), 3, timedelta(minutes=1))
    assert usable_slots(conn, s.id) == 4
    s = set_carrier(conn, "acme", max_concurrency=8, intervals={"out_for_delivery": None, "pending": 120})
    assert s.max_concurrency == 8 and s.poll_intervals == {"pending": 120}
    assert usable_slots(conn, s.id) == 8
    s = set_carrier(conn, "acme", adapter="simulator", url="", options={"step": "2s"})
    assert (s.adapter, s.url, s.options) == ("simulator", None, {"step": 2.0})
    s = set_carrier(conn, "acme", options={"fail": "0.5", "step": ""})
    assert s.options == {"fail": 0.5}


@pytest.mark.parametrize("settings,message", [
    ({"adapter": "http-json", "url": "ftp://x"}, "invalid carrier URL"),
    ({"adapter": "http-json", "url": "http://user:pw@x"}, "credentials"),
    ({"adapter": "http-json", "url": "http://x/?q=1"}, "query"),
    ({"adapter": "simulator", "token_env": "Bearer abc"}, "environment variable name"),
    ({"adapter": "simulator", "max_concurrency": 0}, "max_concurrency must be"),  # the field (the CLI: the flag)
    ({"adapter": "simulator", "timeout": 0}, "timeout"),
    ({"adapter": "simulator", "options": {"speed": "1"}}, "unknown simulator option"),
    ({"adapter": "correios", "options": {"x": "1"}}, "takes no options"),
    ({"options": {"step": "1s"}}, "needs an adapter"),
    ({"adapter": "simulator", "intervals": {"delivered": 60}}, "no poll interval for status 'delivered'"),
])
def test_bad_carrier_settings_are_refused(conn, settings, message):
    with pytest.raises(InvalidValue, match=message):
        add_carrier(conn, "acme", **settings)
    assert conn.execute("SELECT count(*) FROM sequencing.carrier").fetchone()[0] == 0


def test_rate_limit_setting(conn, cli):
    add_carrier(conn, "acme", adapter="simulator")
    r = cli("carrier", "set", "acme", "--rate-limit", "120/m")
    assert r.returncode == 0, r
    assert carrier_settings(conn, "acme").rate_limit == 2.0
    r = cli("carrier", "show", "acme", "--format", "json")
    assert json.loads(r.stdout)["rate_limit"] == 2.0
    for bad in ("fast", "-1", "3/x"):
        r = cli("carrier", "set", "acme", "--rate-limit", bad)
        assert r.returncode == 2 and "rate limit" in r.stderr, r
    with pytest.raises(InvalidValue):
        set_carrier(conn, "acme", rate_limit=20000)
    set_carrier(conn, "acme", rate_limit=0)  # removes it
    assert carrier_settings(conn, "acme").rate_limit is None


def test_moved_interval_is_a_carrier_setting(conn, cli):
    add_carrier(conn, "acme", adapter="simulator")
    r = cli("carrier", "set", "acme", "--interval", "moved=2m")
    assert r.returncode == 0, r
    assert carrier_settings(conn, "acme").poll_intervals == {"moved": 120}


def test_the_token_is_never_stored_only_its_variable_name(cli):
    r = cli("carrier", "add", "acme", "--adapter", "correios", "--token-env", "ACME_TOKEN",
            env_extra={"ACME_TOKEN": TOKEN})
    assert r.returncode == 0, r
    for args in (("carrier", "list", "--format", "json"), ("carrier", "show", "acme", "--format", "json")):
        r = cli(*args, env_extra={"ACME_TOKEN": TOKEN})
        assert r.returncode == 0, r
        assert TOKEN not in r.stdout + r.stderr
        assert "ACME_TOKEN" in r.stdout
    shown = json.loads(cli("carrier", "show", "acme", "--format", "json").stdout)
    assert {k: shown[k] for k in ("adapter", "token_env", "max_concurrency", "timeout", "stale_after",
                                  "breaker_threshold", "breaker_cooldown", "breaker", "slots_in_use")} == {
        "adapter": "correios", "token_env": "ACME_TOKEN", "max_concurrency": 6, "timeout": 10.0,
        "stale_after": "30d", "breaker_threshold": 10, "breaker_cooldown": "5m", "breaker": "closed",
        "slots_in_use": 0}


THIRD_PARTY = '''
from datetime import datetime, timezone
from trackctl.carriers.base import CarrierEvent

class EchoAdapter:
    """A third-party adapter: every shipment is in transit since a fixed time."""
    requires_url = False

    def __init__(self, config):
        self.where = config.options.get("where", "nowhere")

    @staticmethod
    def parse_options(raw):
        return {k: v for k, v in raw.items() if k == "where"}

    def fetch(self, shipment):
        return [CarrierEvent("echo-1", datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc), "in_transit",
                             "moving", "seen by echo", self.where)]
'''


def _install_third_party(tmp_path):
    site = tmp_path / "site"
    (site / "echo_adapter-1.0.dist-info").mkdir(parents=True)
    (site / "echo_carrier.py").write_text(THIRD_PARTY)
    (site / "echo_adapter-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-adapter\nVersion: 1.0\n")
    (site / "echo_adapter-1.0.dist-info" / "entry_points.txt").write_text(
        "[trackctl.carriers]\necho = echo_carrier:EchoAdapter\ncorreios = echo_carrier:EchoAdapter\n")
    return site


def test_third_party_adapters_register_through_the_entry_point_group(tmp_path, monkeypatch, cli):
    site = _install_third_party(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    assert "echo" in adapter_names()
    assert load_adapter("correios") is CorreiosAdapter  # built-in names cannot be taken over
    env = {"PYTHONPATH": str(site)}
    r = cli("carrier", "add", "echo", "--adapter", "echo", "--option", "where=Recife, PE", env_extra=env)
    assert r.returncode == 0, r
    cli("refill")
    code = cli("assign", "7", "echo").stdout.strip()
    r = cli("poll", "--format", "json", env_extra=env)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)[0]["new_events"] == 1
    doc = json.loads(cli("status", code, "--format", "json").stdout)
    assert doc["status"] == "in_transit"
    assert doc["events"] == [{"occurred_at": "2026-11-20T12:00:00+00:00", "status": "in_transit",
                              "description": "seen by echo", "location": "Recife, PE", "raw_status": "moving"}]


def test_a_missing_third_party_adapter_is_a_clear_error_at_poll_time(tmp_path, cli):
    site = _install_third_party(tmp_path)
    assert cli("carrier", "add", "echo", "--adapter", "echo", env_extra={"PYTHONPATH": str(site)}).returncode == 0
    cli("refill")
    cli("assign", "7", "echo")
    r = cli("poll")  # the package is not installed here
    assert r.returncode == 6, r
    assert "unknown adapter 'echo'" in r.stderr


def test_importing_the_carrier_records_does_not_load_http_or_adapters():
    import subprocess

    code = textwrap.dedent("""
        import sys
        import trackctl.carriers, trackctl.assign
        heavy = [m for m in ("http.client", "trackctl.carriers.transport", "trackctl.carriers.registry", "trackctl.poll", "rich")
                 if m in sys.modules]
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# -- carrier remove (issue 11, "also expected") --------------------------------------------------


def test_a_carrier_without_shipments_is_deleted(conn, cli):
    from trackctl.carriers import list_carriers, remove_carrier

    add_carrier(conn, "corrieos", adapter="simulator")  # a typo, never used
    removed = remove_carrier(conn, "corrieos")
    assert (removed.name, removed.deleted) == ("corrieos", True)
    assert list_carriers(conn) == []
    add_carrier(conn, "jadlog", 7)
    r = cli("carrier", "remove", "7")  # by id too
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "trackctl: removed carrier jadlog\n", r
    assert conn.execute("SELECT count(*) FROM sequencing.carrier").fetchone()[0] == 0
    assert cli("carrier", "add", "jadlog", "--id", "7").returncode == 0  # name and id free again


def test_a_carrier_with_shipments_is_refused_unless_forced_which_cancels_the_open_ones(conn, cli):
    from trackctl.assign import assign
    from trackctl.carriers import get_carrier, list_carriers, remove_carrier
    from trackctl.errors import InUse, UnknownCarrier
    from trackctl.pools import refill
    from trackctl.shipments import mark

    add_carrier(conn, "jadlog", 7, adapter="simulator")
    add_carrier(conn, "correios", 3)
    refill(conn)
    done, open_ = assign(conn, "41", "jadlog").code, assign(conn, "42", "jadlog").code
    other = assign(conn, "42", "correios").code
    mark(conn, done, "delivered")
    with pytest.raises(InUse, match="carrier jadlog has 2 shipments, 1 of them open"):
        remove_carrier(conn, "jadlog")
    r = cli("carrier", "remove", "jadlog")
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert "'trackctl carrier remove jadlog --force'" in r.stderr
    assert [c.name for c in list_carriers(conn)] == ["correios", "jadlog"]

    r = cli("carrier", "remove", "jadlog", "--force")
    assert r.returncode == 0, r
    assert r.stderr == ("trackctl: removed carrier jadlog: 1 open shipment cancelled; "
                        "its 2 shipments keep it as their history\n")
    status = dict(conn.execute("SELECT tracking_id, status FROM sequencing.tracking WHERE order_id IS NOT NULL"))
    assert status == {done: "delivered", open_: "cancelled", other: "pending"}
    events = conn.execute("SELECT count(*) FROM sequencing.outbox WHERE type = 'shipment.status_changed'").fetchone()[0]
    assert events == 2  # the delivery and the cancellation, for webhooks
    assert [c.name for c in list_carriers(conn)] == ["correios"]
    for args in (("assign", "43", "jadlog"), ("assign", "43", "7"), ("carrier", "show", "jadlog"),
                 ("poll", "--carrier", "jadlog"), ("carrier", "remove", "jadlog")):
        r = cli(*args)
        assert r.returncode == 1 and "unknown carrier 'jadlog'" in r.stderr.replace("'7'", "'jadlog'"), (args, r)
    r = cli("assign", "--batch", input="43,jadlog\n")
    assert r.returncode == 3 and "unknown carrier" in r.stderr, r
    with pytest.raises(UnknownCarrier):
        get_carrier(conn, "jadlog")
    assert get_carrier(conn, "jadlog", removed_too=True).id == 7  # the history still names it
    r = cli("status", open_, "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["carrier"] == "jadlog", r
    r = cli("carrier", "add", "jadlog")
    assert r.returncode == 1 and "a removed carrier (jadlog) still has the name 'jadlog'" in r.stderr, r


def test_removing_an_unknown_carrier_is_one_clear_error(conn, cli):
    add_carrier(conn, "correios")
    r = cli("carrier", "remove", "nosuch")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == ("trackctl: error: unknown carrier 'nosuch' (known: correios; "
                        "add one with 'trackctl carrier add NAME')\n")
    r = cli("carrier", "remove", "nosuch", "--force")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r
