"""The 17track adapter against a local 17TRACK-shaped server (CARRIERS.md; issue 13.3 and 13.4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import trackctl_command  # noqa: E402
from track17_server import Track17Server, event  # noqa: E402

from trackctl.carriers import add_carrier
from trackctl.poll import poll
from trackctl.status import shipment_by_code
from trackctl.track import track

KEY = "k-17-secret-value"
ENV = {"TRACK17_KEY": KEY}


@pytest.fixture
def server():
    with Track17Server(key=KEY) as s:
        yield s


def jadlog(conn, server, **kw):
    add_carrier(conn, "jadlog", 20, adapter="17track", url=server.url, token_env="TRACK17_KEY", **kw)


def numbers(n: int, prefix: str = "JD") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


def track_all(conn, codes, carrier="jadlog"):
    for c in codes:
        track(conn, c, carrier)


def row(conn, code):
    return conn.execute("SELECT status, remote_registered_at IS NOT NULL, remote_stopped_at IS NOT NULL, "
                        "stale_at IS NOT NULL, last_poll_error FROM sequencing.tracking WHERE tracking_id = %s",
                        (code,)).fetchone()


def test_registers_once_then_asks_and_maps_statuses(conn, server):
    jadlog(conn, server)
    codes = numbers(7)
    track_all(conn, codes)
    statuses = ["InfoReceived", "InTransit", "OutForDelivery", "AvailableForPickup", "DeliveryFailure", "Exception"]
    for code, st in zip(codes, statuses):
        server.track(code, st, [event("2026-11-20T09:15:00-03:00", "Objeto postado", "InfoReceived", "InfoReceived_Other"),
                                event("2026-11-21T10:00:00-03:00", f"now {st}", None, f"{st}_Other", "Cajamar, SP")])
    # codes[6] has no history: NotFound = no news
    report = poll(conn, budget=30, environ=ENV)
    assert report.polled == 7 and not report.failed, report
    assert server.count("register") == 1 and server.numbers_asked("register") == 7
    assert server.count("gettrackinfo") == 1 and server.numbers_asked("gettrackinfo") == 7
    assert [row(conn, c)[0] for c in codes] == ["pending", "in_transit", "out_for_delivery", "available_for_pickup",
                                                "failed_attempt", "exception", "pending"]
    assert all(row(conn, c)[1] for c in codes)  # registration recorded
    shipment_by_code(conn, codes[1])
    ev = conn.execute("SELECT e.status, e.raw_status, e.location, e.dedupe_key FROM sequencing.tracking_event e "
                      "JOIN sequencing.tracking t ON t.id = e.shipment_id WHERE t.tracking_id = %s "
                      "ORDER BY e.occurred_at", (codes[1],)).fetchall()
    assert ev[0][:2] == ("pending", "InfoReceived_Other") and ev[1][2] == "Cajamar, SP"
    assert ev[1][3] == "2026-11-21T10:00:00-03:00|now InTransit"
    # Again: no second registration, and re-reported events add nothing.
    report = poll(conn, budget=30, all_due=True, environ=ENV)
    assert report.polled == 7 and report.carriers[0].new_events == 0
    assert server.count("register") == 1 and server.register_units == 7
    assert server.numbers_asked("gettrackinfo") == 14  # workers may split a short tail into two requests
    headers_ok = all(c.status == 200 for c in server.calls)
    assert headers_ok and server.limited == 0 and server.oversize == 0


def test_batches_of_40_and_3_requests_per_second(conn, server):
    jadlog(conn, server)
    codes = numbers(130)
    track_all(conn, codes)
    report = poll(conn, budget=60, environ=ENV)
    assert report.polled == 130 and not report.failed, report.failures[:3]
    assert max(len(c.numbers) for c in server.calls) == 40
    assert server.numbers_asked("register") == 130 and server.numbers_asked("gettrackinfo") == 130
    assert server.count("register") >= 4 and server.count("gettrackinfo") >= 4  # 40 at most per call
    assert server.limited == 0 and server.oversize == 0 and server.max_in_window() <= 3
    # What trackctl recorded is what the server received, call for call.
    stats = conn.execute("SELECT kind, count(*), sum(numbers), sum(registered) FROM sequencing.carrier_call "
                         "GROUP BY kind ORDER BY kind").fetchall()
    assert stats == [("register", server.count("register"), 130, 130),
                     ("track", server.count("gettrackinfo"), 130, 0)]


def test_unregistered_answer_reregisters_and_asks_again(conn, server):
    jadlog(conn, server)
    codes = numbers(3)
    track_all(conn, codes)
    poll(conn, budget=30, environ=ENV)
    assert server.register_units == 3
    server.registered.discard(codes[0])  # 17TRACK lost it: -18019902
    server.track(codes[0], "Delivered", [event("2026-11-22T10:00:00Z", "Entregue", "Delivered", "Delivered_Other")])
    report = poll(conn, budget=30, all_due=True, environ=ENV)
    assert not report.failed, report.failures
    assert server.register_units == 4 and [c.numbers for c in server.calls if c.action == "register"][-1] == [codes[0]]
    assert row(conn, codes[0])[0] == "delivered"


def test_already_registered_is_not_a_failure_and_is_recorded(conn, server):
    jadlog(conn, server)
    codes = numbers(3)
    track_all(conn, codes)
    server.registered.update(codes[:2])  # registered before (another tool, a lost answer): -18019901
    server.track(codes[0], "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
    report = poll(conn, budget=30, environ=ENV)
    assert report.polled == 3 and not report.failed, report.failures
    assert server.register_units == 1 and server.numbers_asked("register") == 3
    assert all(row(conn, c)[1] for c in codes) and row(conn, codes[0])[0] == "in_transit"
    poll(conn, budget=30, all_due=True, environ=ENV)
    assert server.count("register") == 1  # recorded as registered: never registered again


def test_rejections_undetected_is_no_news_others_fail_only_that_shipment(conn, server):
    jadlog(conn, server)
    codes = numbers(3)
    track_all(conn, codes)
    server.undetected.add(codes[0])
    server.rejected[codes[1]] = (-18019909, "No tracking information at this time.")
    server.track(codes[2], "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
    report = poll(conn, budget=30, environ=ENV)
    assert report.carriers[0].ok == 2 and report.carriers[0].failed == 1
    assert [f.code for f in report.failures] == [codes[1]] and "-18019909" in report.failures[0].reason
    assert row(conn, codes[0])[:2] == ("pending", False)  # not registered: tried again next time
    assert row(conn, codes[1])[1] is True and row(conn, codes[2])[0] == "in_transit"
    server.undetected.clear()
    poll(conn, budget=30, all_due=True, environ=ENV)
    assert row(conn, codes[0])[1] is True


def test_terminal_and_expired_numbers_are_stopped(conn, server):
    jadlog(conn, server)
    codes = numbers(4)
    track_all(conn, codes)
    server.track(codes[0], "Delivered", [event("2026-11-22T10:00:00Z", "Entregue", "Delivered")])
    server.track(codes[1], "Expired", [event("2026-10-01T10:00:00Z", "Postado", "InfoReceived")])
    server.track(codes[2], "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
    report = poll(conn, budget=30, environ=ENV)
    assert not report.failed and report.carriers[0].stale == 1
    assert row(conn, codes[0])[0] == "delivered" and row(conn, codes[1])[3] is True
    assert server.stopped == {codes[0], codes[1]}  # in the same run, once they turned terminal/stale
    assert row(conn, codes[0])[2] and row(conn, codes[1])[2] and not row(conn, codes[2])[2]
    conn.execute("UPDATE sequencing.tracking SET next_poll_at = '-infinity'")
    from trackctl.shipments import cancel

    cancel(conn, codes[2])
    before = server.count("stoptrack")
    poll(conn, budget=30, environ=ENV)
    assert server.stopped == {codes[0], codes[1], codes[2]} and server.count("stoptrack") == before + 1
    assert codes[3] not in server.stopped


def test_three_concurrent_poll_processes_see_no_429_and_no_oversize_call(conn, server, db_url, cli):
    jadlog(conn, server)
    codes = numbers(360)
    track_all(conn, codes)
    for c in codes[::2]:
        server.track(c, "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
    env = {**cli.env, **ENV}
    procs = [subprocess.Popen([*trackctl_command(), "poll", "--budget", "120s", "--format", "json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    warnings = [line for o in outs for line in o[1].decode().splitlines() if "warning" in line or "error" in line]
    assert [p.returncode for p in procs] == [0, 0, 0], (server.limited, warnings[:10])
    polled = sum(json.loads(o[0])[0]["polled"] for o in outs)
    assert polled == 360
    assert server.limited == 0 and server.oversize == 0, (server.limited, server.oversize)
    assert server.max_in_window() <= 3
    assert server.register_units == 360 and server.count("register") == 9  # each number registered once
    assert KEY not in "".join(o[0].decode() + o[1].decode() for o in outs)


def test_two_carriers_on_one_key_share_its_rate_limit(conn, server):
    jadlog(conn, server)
    add_carrier(conn, "loggi", 21, adapter="17track", url=server.url, token_env="TRACK17_KEY")
    track_all(conn, numbers(60, "JD"), "jadlog")
    track_all(conn, numbers(60, "LG"), "loggi")
    report = poll(conn, budget=60, environ=ENV)
    assert report.polled == 120 and not report.failed
    assert server.limited == 0 and server.max_in_window() <= 3


def test_carrier_option_and_missing_key(conn, server):
    jadlog(conn, server, options={"carrier": "2151"})
    track(conn, "JD00000001", "jadlog")
    report = poll(conn, budget=30, environ={})
    assert report.unavailable == 1 and "TRACK17_KEY is not set" in report.failures[0].reason
    poll(conn, budget=30, environ=ENV)
    assert server.calls[0].action == "register"
    from trackctl.errors import InvalidValue
    from trackctl.carriers import set_carrier

    with pytest.raises(InvalidValue):
        set_carrier(conn, "jadlog", options={"carrier": "DHL"})


def test_adapter_without_key_refused_at_add_and_named_as_the_flag_at_poll(conn, server, db_url, cli):
    from trackctl.carriers import set_carrier
    from trackctl.carriers.base import AdapterConfig
    from trackctl.carriers.registry import build_adapter
    from trackctl.errors import InvalidValue

    # the library names the field; the CLI names the flag; nothing is written
    with pytest.raises(InvalidValue) as refused:
        add_carrier(conn, "jadlog", 20, adapter="17track", url=server.url)
    assert refused.value.field == "token_env" and "--" not in str(refused.value)
    result = cli("carrier", "add", "loggi", "--id", "21", "--adapter", "17track")
    assert result.returncode == 2 and "--token-env" in result.stderr and "token_env" not in result.stderr
    assert conn.execute("SELECT count(*) FROM sequencing.carrier WHERE name IN ('jadlog', 'loggi')").fetchone()[0] == 0

    # the adapter itself refuses a configuration without the key, naming the field
    with pytest.raises(InvalidValue) as built:
        build_adapter("17track", AdapterConfig(carrier="jadlog", url=server.url, token=None, timeout=5,
                                               options={}, user_agent="t"))
    assert built.value.field == "token_env" and str(built.value).startswith("carrier jadlog: adapter 17track: ")

    # a carrier stored before `add` checked this (its variable name removed behind trackctl's back)
    # is reported at poll: the library's note names the field, the CLI's output the flag
    jadlog(conn, server)
    track(conn, "JD00000001", "jadlog")
    conn.execute("UPDATE sequencing.carrier SET token_env = NULL WHERE name = 'jadlog'")
    report = poll(conn, budget=30, environ=ENV)
    assert report.unavailable == 1 and report.carriers[0].note.startswith("adapter 17track: ")
    assert "token_env" in report.carriers[0].note and "--token-env" not in report.carriers[0].note
    with pytest.raises(InvalidValue):
        set_carrier(conn, "jadlog", timeout=9)  # any later change must name the key first
    result = cli("poll", "--format", "json", env_extra=ENV)
    assert result.returncode == 6 and server.calls == []
    note = json.loads(result.stdout)[0]["note"]
    assert "--token-env" in note and "token_env" not in note
    assert "jadlog: adapter 17track: the 17track adapter needs the API key" in result.stderr
    assert "--token-env" in result.stderr and "token_env" not in result.stderr
