"""trackctl poll against real carrier servers on 127.0.0.1: due times, caps, faults, staleness."""

from __future__ import annotations

import email.utils
import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from carrier_server import CarrierServer, Reply, http_json_event
from conftest import trackctl_command

from trackctl.assign import assign
from trackctl.carriers import add_carrier, carrier_states, set_carrier
from trackctl.poll import DEFAULT_INTERVALS, overdue_shipments, poll
from trackctl.pools import refill
from trackctl.shipments import mark

TOKEN = "tok-5e4d3c2b1a"
T0 = "2026-11-20T10:00:00Z"


@pytest.fixture
def server():
    with CarrierServer("http-json") as s:
        yield s


def ship(conn, carrier: str, n: int, prefix: str = "o") -> list[str]:
    refill(conn)
    return [assign(conn, f"{prefix}{carrier}-{i}", carrier).code for i in range(n)]


def in_transit(server: CarrierServer, codes: list[str]) -> None:
    for code in codes:
        server.history(code, [http_json_event(f"{code}-1", "in_transit", T0, "hub", "Cajamar, SP")])


def state(conn, code: str) -> dict:
    cur = conn.execute("""
        SELECT status, next_poll_at, last_polled_at, poll_count, poll_failures, last_poll_error, stale_at,
               claimed_until, now() AS now
        FROM sequencing.tracking WHERE tracking_id = %s""", (code,))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def events(conn, code: str) -> list[tuple]:
    return conn.execute("""
        SELECT e.dedupe_key, e.status, e.raw_status FROM sequencing.tracking_event e
        JOIN sequencing.tracking t ON t.id = e.shipment_id WHERE t.tracking_id = %s ORDER BY e.occurred_at, e.id""",
                        (code,)).fetchall()


def carrier_state(conn, name: str):
    return next(s for s in carrier_states(conn) if s.carrier == name)


# -- due times, intervals, terminal shipments ---------------------------------------------------


def test_never_polled_shipments_are_due_and_then_wait_their_status_interval(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    codes = ship(conn, "acme", 3)
    in_transit(server, codes[:2])  # the third is unknown to the carrier yet (404)
    report = poll(conn, budget=30)
    assert (report.polled, report.failed) == (3, False)
    assert server.counts() == {c: 1 for c in codes}
    for code, status in zip(codes, ["in_transit", "in_transit", "pending"]):
        s = state(conn, code)
        assert s["status"] == status and s["poll_count"] == 1 and s["claimed_until"] is None
        wait = (s["next_poll_at"] - s["last_polled_at"]).total_seconds()
        assert DEFAULT_INTERVALS[status] * 0.89 <= wait <= DEFAULT_INTERVALS[status] * 1.11
    assert poll(conn, budget=30).polled == 0  # nothing is due any more
    assert len(server.requests) == 3


def test_intervals_are_configurable_per_carrier_and_status(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, intervals={"in_transit": 60})
    (code,) = ship(conn, "acme", 1)
    in_transit(server, [code])
    poll(conn, budget=30)
    s = state(conn, code)
    assert 54 <= (s["next_poll_at"] - s["last_polled_at"]).total_seconds() <= 66


def test_all_ignores_due_times_but_never_polls_terminal_or_stale_shipments(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    codes = ship(conn, "acme", 4)
    in_transit(server, codes)
    poll(conn, budget=30)
    mark(conn, codes[0], "delivered")
    conn.execute("UPDATE sequencing.tracking SET stale_at = now() WHERE tracking_id = %s", (codes[1],))
    assert poll(conn, budget=30).polled == 0
    report = poll(conn, budget=30, all_due=True)
    assert report.polled == 2
    assert server.counts() == {codes[0]: 1, codes[1]: 1, codes[2]: 2, codes[3]: 2}


def test_budget_zero_starts_no_request(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    ship(conn, "acme", 2)
    report = poll(conn, budget=0)
    assert report.polled == 0 and server.requests == []
    assert report.carriers[0].note == "budget used up"


def test_carriers_without_an_adapter_are_not_polled(conn, cli, server):
    add_carrier(conn, "manual")
    ship(conn, "manual", 2)
    assert poll(conn, budget=5).carriers == []
    for args in (("poll", "--carrier", "manual"), ("poll", "--all", "--carrier", "manual")):
        r = cli(*args)  # exit 6 as the README's table says: a carrier that could not be polled
        assert r.returncode == 6 and "has no adapter" in r.stderr and len(r.stderr.splitlines()) == 1, r


# -- events: dedupe, order, unknown statuses ----------------------------------------------------


def test_repolling_the_whole_history_adds_nothing_and_status_follows_the_carriers_time(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    (code,) = ship(conn, "acme", 1)
    server.history(code, [http_json_event("a", "in_transit", "2026-11-20T10:00:00Z")])
    poll(conn, budget=30)
    assert state(conn, code)["status"] == "in_transit"
    # The whole history again, out of order, with an older event arriving late and a newer one.
    server.history(code, [http_json_event("c", "out_for_delivery", "2026-11-20T11:00:00Z"),
                          http_json_event("a", "in_transit", "2026-11-20T10:00:00Z"),
                          http_json_event("p", "pending", "2026-11-20T09:00:00Z")])
    report = poll(conn, budget=30, all_due=True)
    assert (report.carriers[0].new_events, report.carriers[0].changed) == (2, 1)
    assert state(conn, code)["status"] == "out_for_delivery"
    # An event that happened before the newest one arrives last: the status stays.
    server.history(code, [http_json_event("b", "exception", "2026-11-20T10:30:00Z"),
                          http_json_event("c", "out_for_delivery", "2026-11-20T11:00:00Z"),
                          http_json_event("a", "in_transit", "2026-11-20T10:00:00Z"),
                          http_json_event("p", "pending", "2026-11-20T09:00:00Z")])
    poll(conn, budget=30, all_due=True)
    poll(conn, budget=30, all_due=True)
    assert state(conn, code)["status"] == "out_for_delivery"
    assert [k for k, _, _ in events(conn, code)] == ["p", "a", "b", "c"]


def test_unknown_carrier_statuses_are_kept_raw_and_move_nothing(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    (code,) = ship(conn, "acme", 1)
    server.history(code, [http_json_event("a", "in_transit", "2026-11-20T10:00:00Z"),
                          http_json_event("z", "held_at_customs", "2026-11-20T12:00:00Z")])
    poll(conn, budget=30)
    assert state(conn, code)["status"] == "in_transit"
    assert events(conn, code) == [("a", "in_transit", "in_transit"), ("z", None, "held_at_customs")]


# -- failures: backoff, exit code, what succeeded is kept ----------------------------------------


def test_failed_requests_back_off_are_reported_and_the_rest_is_recorded(conn, cli, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, timeout=0.5)
    codes = ship(conn, "acme", 6)
    in_transit(server, codes)
    server.script(codes[0], Reply(status=500))
    server.script(codes[1], Reply(body=b"garbage"))
    server.script(codes[2], Reply(hang=30))
    server.script(codes[3], Reply(size=2 * 1024 * 1024))
    r = cli("poll", "--format", "json")
    assert r.returncode == 6, r
    (summary,) = json.loads(r.stdout)
    assert (summary["polled"], summary["ok"], summary["failed"]) == (6, 2, 4)
    for code, reason in zip(codes, ["HTTP 500", "not JSON", "timed out", "over the 1024 KiB limit"]):
        assert f"acme {code}: " in r.stderr and reason in r.stderr, r
        s = state(conn, code)
        assert s["status"] == "pending" and s["poll_failures"] == 1 and reason in s["last_poll_error"]
        assert 29 <= (s["next_poll_at"] - s["last_polled_at"]).total_seconds() <= 61  # 60 s × 0.5–1.0
    assert "4 of 6 carrier requests failed" in r.stderr
    assert [state(conn, c)["status"] for c in codes[4:]] == ["in_transit", "in_transit"]


def test_backoff_grows_exponentially_per_shipment(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, breaker_threshold=100)
    (code,) = ship(conn, "acme", 1)
    server.default = Reply(status=503)
    waits = []
    for _ in range(4):
        poll(conn, budget=30, all_due=True)
        s = state(conn, code)
        waits.append((s["next_poll_at"] - s["last_polled_at"]).total_seconds())
    assert state(conn, code)["poll_failures"] == 4
    for n, wait in enumerate(waits):
        assert 60 * 2 ** n * 0.5 - 1 <= wait <= 60 * 2 ** n + 1
    server.default = None
    in_transit(server, [code])
    poll(conn, budget=30, all_due=True)
    assert state(conn, code)["poll_failures"] == 0


# -- 429 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header,low,high", [
    ({"Retry-After": "30"}, 25, 31),
    ({}, 55, 61),  # no header: 60 s
    ("date", 100, 121),
])
def test_429_blocks_the_carrier_for_every_process_until_retry_after(conn, cli, server, header, low, high):
    if header == "date":
        header = {"Retry-After": email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120),
                                                             usegmt=True)}
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=1)
    codes = ship(conn, "acme", 5)
    in_transit(server, codes)
    server.default = Reply(status=429, headers=header)
    r = cli("poll", "--budget", "5s", "--format", "json")  # the block outlasts the budget: the run ends
    assert r.returncode == 6 and "rate limited (HTTP 429)" in r.stderr, r
    assert len(server.requests) == 1
    blocked = carrier_state(conn, "acme").blocked_until
    now = conn.execute("SELECT now()").fetchone()[0]
    assert low <= (blocked - now).total_seconds() <= high
    limited = server.requests[0].code
    assert state(conn, limited)["next_poll_at"] == blocked and state(conn, limited)["claimed_until"] is None
    # Another process, right away: nobody calls the carrier before the block ends.
    server.default = None
    r = cli("poll", "--budget", "5s", "--format", "json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)[0]["note"].startswith("rate limited (HTTP 429) until")
    assert len(server.requests) == 1


def test_a_short_retry_after_is_waited_out_within_the_budget(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=1)
    codes = ship(conn, "acme", 3)
    in_transit(server, codes)
    server.script(codes[0], Reply(status=429, headers={"Retry-After": "1"}))
    report = poll(conn, budget=20)
    assert (report.polled, report.carriers[0].rate_limited, report.carriers[0].ok) == (4, 1, 3)
    first, second = server.requests[0], server.requests[1]
    assert second.started - first.ended >= 0.9  # nobody called during the second asked for
    assert all(state(conn, c)["status"] == "in_transit" for c in codes)


# -- circuit breaker ----------------------------------------------------------------------------


def test_a_failing_carrier_opens_its_breaker_while_other_carriers_go_on(conn, cli, server):
    with CarrierServer("http-json") as healthy:
        add_carrier(conn, "broken", adapter="http-json", url=server.url, max_concurrency=1, breaker_threshold=3,
                    breaker_cooldown=600)
        add_carrier(conn, "fine", adapter="http-json", url=healthy.url)
        ship(conn, "broken", 10)
        fine = ship(conn, "fine", 5)
        in_transit(healthy, fine)
        server.default = Reply(status=500)
        r = cli("poll", "--format", "json")
        assert r.returncode == 6, r
        summaries = {s["carrier"]: s for s in json.loads(r.stdout)}
        assert len(server.requests) == 3 and summaries["broken"]["failed"] == 3
        assert summaries["broken"]["note"].startswith("breaker open until")
        assert summaries["fine"]["ok"] == 5 and len(healthy.requests) == 5
        st = carrier_state(conn, "broken")
        assert (st.breaker, st.consecutive_failures) == ("open", 3)
        h = cli("health")
        assert h.returncode == 1 and "carrier broken: circuit breaker open" in h.stdout, h
        assert cli("poll").returncode == 0 and len(server.requests) == 3  # still open: not called
        assert cli("carrier", "reset", "broken").returncode == 0
        assert carrier_state(conn, "broken").breaker == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes_the_breaker(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=3)
    codes = ship(conn, "acme", 6)
    in_transit(server, codes)
    server.latency = 0.3
    conn.execute("""UPDATE sequencing.carrier_state SET open_until = now() - interval '1 second',
                    consecutive_failures = 10, opened_at = now() - interval '5 minutes'""")
    assert carrier_state(conn, "acme").breaker == "half-open"
    report = poll(conn, budget=30)
    assert report.polled == 6 and not report.failed
    ordered = sorted(server.requests, key=lambda r: r.started)
    assert ordered[0].ended <= ordered[1].started  # the probe was alone
    assert server.max_in_flight == 3  # then the cap again
    st = carrier_state(conn, "acme")
    assert (st.breaker, st.consecutive_failures) == ("closed", 0)


def test_a_failed_probe_opens_the_breaker_again(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=3, breaker_cooldown=600)
    ship(conn, "acme", 6)
    server.default = Reply(status=502)
    conn.execute("UPDATE sequencing.carrier_state SET open_until = now() - interval '1 second', consecutive_failures = 10")
    report = poll(conn, budget=10)
    assert report.polled == 1 and report.carriers[0].failed == 1
    st = carrier_state(conn, "acme")
    assert st.breaker == "open" and st.consecutive_failures == 11
    now = conn.execute("SELECT now()").fetchone()[0]
    assert 590 <= (st.open_until - now).total_seconds() <= 601


# -- the concurrency cap across processes -------------------------------------------------------


def _poll_processes(cli, tmp_path, n: int, *args: str) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(trackctl_command() + ["poll", "--format", "json", *args], env=cli.env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=180), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_two_pollers_at_once_stay_under_the_cap_and_fetch_each_shipment_once(conn, cli, tmp_path, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=3)
    codes = ship(conn, "acme", 90)
    in_transit(server, codes)
    server.latency = 0.25  # 7.5 s of work: far longer than the two processes' start-up skew
    results = _poll_processes(cli, tmp_path, 2)
    for r in results:
        assert r.returncode == 0, r.stderr
    polled = [json.loads(r.stdout)[0]["polled"] for r in results]
    # Together they polled everything once. Which one gets how much is not promised: a poller
    # whose workers find every carrier slot leased by the other may end with nothing to do.
    assert sum(polled) == 90, polled
    assert server.counts() == {c: 1 for c in codes}  # no shipment fetched twice
    assert server.max_in_flight == 3  # the cap was reached and never passed
    assert all(state(conn, c)["status"] == "in_transit" for c in codes)


@pytest.mark.slow
def test_two_pollers_with_all_stay_under_the_cap_and_each_fetches_a_shipment_at_most_once(conn, cli, tmp_path, server):
    # --all has no due time to share: a run started later may fetch again what the other one
    # fetched before that start (each run fetches a shipment at most once, never two at a time).
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=4)
    codes = ship(conn, "acme", 40)
    in_transit(server, codes)
    poll(conn, budget=30)
    server.requests.clear()
    server.max_in_flight = 0
    server.latency = 0.1
    results = _poll_processes(cli, tmp_path, 2, "--all")
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    counts = server.counts()
    assert set(counts) == set(codes) and max(counts.values()) <= 2
    assert sum(json.loads(r.stdout)[0]["polled"] for r in results) == len(server.requests)
    assert all(json.loads(r.stdout)[0]["polled"] <= 40 for r in results)
    assert server.max_in_flight <= 4


def test_slots_leased_by_another_process_hold_until_their_lease_ends(conn, server):
    # A poller killed with -9 leaves its slot leases behind: nobody exceeds the cap meanwhile.
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=2)
    codes = ship(conn, "acme", 2)
    in_transit(server, codes)
    conn.execute("UPDATE sequencing.carrier_slot SET leased_until = now() + interval '1 hour', holder = 'dead:1'")
    report = poll(conn, budget=1)
    assert report.polled == 0 and server.requests == []
    conn.execute("UPDATE sequencing.carrier_slot SET leased_until = now() - interval '1 second'")
    assert poll(conn, budget=30).polled == 2


def test_a_shipment_claimed_by_another_poller_is_not_fetched_until_its_lease_ends(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    codes = ship(conn, "acme", 2)
    in_transit(server, codes)
    conn.execute("""UPDATE sequencing.tracking SET claimed_until = now() + interval '1 minute',
                    next_poll_at = now() + interval '1 minute' WHERE tracking_id = %s""", (codes[0],))
    assert poll(conn, budget=30, all_due=True).polled == 1
    assert server.counts() == {codes[1]: 1}


# -- staleness ----------------------------------------------------------------------------------


def test_no_news_for_too_long_flags_stale_stops_polling_and_shows_in_status_and_health(conn, cli, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, stale_after=2 * 86400)
    codes = ship(conn, "acme", 2)
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '3 days' WHERE tracking_id = %s",
                 (codes[0],))
    report = poll(conn, budget=30)  # the carrier knows neither (404): no news
    assert report.carriers[0].stale == 1
    assert state(conn, codes[0])["stale_at"] is not None and state(conn, codes[1])["stale_at"] is None
    assert poll(conn, budget=30, all_due=True).polled == 1
    assert server.count(codes[0]) == 1
    doc = json.loads(cli("status", codes[0], "--format", "json").stdout)
    assert doc["stale"] is True
    assert "stale\tsince" in cli("status", codes[0]).stdout
    h = cli("health")
    assert h.returncode == 1 and "1 open shipments are stale" in h.stdout, h
    mark(conn, codes[0], "in_transit")  # a person's news clears the flag: polled again
    assert state(conn, codes[0])["stale_at"] is None
    in_transit(server, codes)
    assert poll(conn, budget=30, all_due=True).polled == 2


def test_new_events_keep_a_shipment_fresh(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, stale_after=86400)
    (code,) = ship(conn, "acme", 1)
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '3 days' WHERE tracking_id = %s", (code,))
    in_transit(server, [code])
    poll(conn, budget=30)
    s = state(conn, code)
    assert s["stale_at"] is None and s["status"] == "in_transit"


def test_sweep_stale_flags_quiet_shipments_of_every_carrier(conn, cli):
    add_carrier(conn, "manual")
    codes = ship(conn, "manual", 3)
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '31 days' WHERE tracking_id = ANY(%s)",
                 (codes[:2],))
    r = cli("sweep-stale", "--format", "json")
    assert r.returncode == 0, r
    assert sorted(row["code"] for row in json.loads(r.stdout)) == sorted(codes[:2])
    assert json.loads(cli("sweep-stale", "--format", "json").stdout) == []
    assert json.loads(cli("runs", "--job", "sweep-stale", "--format", "json").stdout)[0]["counts"]["flagged"] == 0


# -- tokens -------------------------------------------------------------------------------------


def test_the_token_comes_from_dotenv_at_run_time_and_is_never_printed(conn, cli, tmp_path, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, token_env="ACME_TOKEN")
    codes = ship(conn, "acme", 2)
    server.script(codes[0], *[Reply(status=500, body=f"bad token {TOKEN}".encode())] * 2)
    (tmp_path / ".env").write_text(f"ACME_TOKEN={TOKEN}\n")
    for log_format in ("text", "json"):
        r = cli("--log-format", log_format, "poll", "--all", "--format", "json")
        assert r.returncode == 6, r
        assert TOKEN not in r.stdout + r.stderr
    assert {s.headers.get("Authorization") for s in server.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in json.dumps(conn.execute("SELECT row_to_json(c) FROM sequencing.carrier c").fetchall())
    assert TOKEN not in str(conn.execute("SELECT last_poll_error FROM sequencing.tracking").fetchall())


def test_a_missing_token_variable_is_reported_by_name(conn, cli, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, token_env="ACME_TOKEN")
    ship(conn, "acme", 1)
    r = cli("poll", "--format", "json")
    assert r.returncode == 6, r
    assert "the token variable ACME_TOKEN is not set" in r.stderr
    assert "1 carrier could not be polled" in r.stderr
    assert server.requests == []


# -- simulator, runs ----------------------------------------------------------------------------


def test_the_simulator_drives_shipments_to_delivered(conn, cli):
    add_carrier(conn, "sim", adapter="simulator", options={"step": "1m"})
    codes = ship(conn, "sim", 3)
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '150 seconds' WHERE tracking_id = %s",
                 (codes[0],))
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '10 minutes' WHERE tracking_id = %s",
                 (codes[1],))
    r = cli("poll", "--format", "json")
    assert r.returncode == 0, r
    assert [state(conn, c)["status"] for c in codes] == ["out_for_delivery", "delivered", "pending"]
    doc = json.loads(cli("status", codes[1], "--format", "json").stdout)
    assert [e["status"] for e in doc["events"]] == ["pending", "in_transit", "out_for_delivery", "delivered"]
    assert cli("poll", "--all", "--format", "json").returncode == 0
    runs = json.loads(cli("runs", "--job", "poll", "--format", "json").stdout)
    assert runs[-1]["counts"]["polled"] == 3 and runs[-1]["outcome"] == "ok"


def test_poll_settings_changes_apply_to_the_next_run(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=1)
    codes = ship(conn, "acme", 8)
    in_transit(server, codes)
    server.latency = 0.05
    poll(conn, budget=30)
    assert server.max_in_flight == 1
    set_carrier(conn, "acme", max_concurrency=4)
    server.max_in_flight = 0
    poll(conn, budget=30, all_due=True)
    assert 1 <= server.max_in_flight <= 4


def test_overdue_shipments_counts_open_shipments_past_their_poll_time(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    add_carrier(conn, "manual")
    codes = ship(conn, "acme", 4)
    ship(conn, "manual", 2)
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '1 hour' WHERE order_id IS NOT NULL")
    assert overdue_shipments(conn) == 4  # never polled, assigned an hour ago; manual carriers do not count
    in_transit(server, codes)
    poll(conn, budget=30)
    assert overdue_shipments(conn) == 0
    conn.execute("UPDATE sequencing.tracking SET next_poll_at = now() - interval '20 minutes' WHERE tracking_id = %s",
                 (codes[0],))
    mark(conn, codes[1], "delivered")
    conn.execute("UPDATE sequencing.tracking SET next_poll_at = now() - interval '20 minutes' WHERE tracking_id = %s",
                 (codes[1],))
    assert overdue_shipments(conn) == 1


@pytest.mark.parametrize("limit", [3, 1])
def test_a_server_with_no_room_for_more_connections_slows_poll_down_but_does_not_fail_it(conn, cli, db_url, server,
                                                                                         limit):
    # The scale sweep (docs/BENCHMARKS.md) hit max_connections with 8 hosts polling at once, and a
    # poll that could not open its workers' connections failed (or, with none at all, hung until
    # cron's time limit killed it). A role limited to 3 connections makes the real server refuse
    # the same way: the run keeps to the connections it got. With 1, the command's own connection
    # is the only one: the workers share it.
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"poller_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {limit}')
    conn.execute(f'GRANT postgres TO "{role}"')  # the owner's privileges, not its superuser exemption
    try:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=8)
        codes = ship(conn, "acme", 40)
        in_transit(server, codes)
        server.latency = 0.05
        url = make_conninfo(**{**conninfo_to_dict(db_url), "user": role})
        r = cli("poll", "--all", "--format", "json", env_extra={"TRACKCTL_DATABASE_URL": url}, timeout=60)
        assert r.returncode == 0, r
        assert json.loads(r.stdout)[0]["polled"] == 40
        assert server.counts() == {c: 1 for c in codes}
        assert all(state(conn, c)["status"] == "in_transit" for c in codes)
    finally:
        conn.execute(f'DROP ROLE "{role}"')
