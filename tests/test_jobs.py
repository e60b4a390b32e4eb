"""The job layer (trackctl/jobs.py): a run's outcome, counts, summary and exit code agree; SIGINT and
SIGTERM stop a job promptly with its run recorded and its claims given back (trackctl/interrupts.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from carrier_server import CarrierServer, Reply, http_json_event
from conftest import trackctl_command
from test_runs import wait_for

from trackctl import jobs
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.health import health_report
from trackctl.metrics import exposition, read_metrics
from trackctl.pools import create_pool, parse_s10_range, refill
from trackctl.runs import list_runs, recorded_run

T0 = "2026-11-20T10:00:00Z"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
REASON = {signal.SIGINT: "interrupted by SIGINT", signal.SIGTERM: "terminated by SIGTERM"}


@pytest.fixture
def server():
    with CarrierServer("http-json") as s:
        yield s


def ship(conn, carrier: str, n: int) -> list[str]:
    refill(conn)
    return [assign(conn, f"o-{carrier}-{i}", carrier).code for i in range(n)]


def in_transit(server: CarrierServer, codes: list[str]) -> None:
    for code in codes:
        server.history(code, [http_json_event(f"{code}-1", "in_transit", T0, "hub", "Cajamar, SP")])


def stop_with(proc: subprocess.Popen, signum: int, what: str) -> tuple[str, str]:
    """Send `signum` to a running trackctl, wait for its end (10 s, generous: the requirement is
    about a second), print how long it took; return its stdout and stderr."""
    try:
        started = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
        print(f"{what} stopped {time.monotonic() - started:.2f} s after {signal.Signals(signum).name}")
        return out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start(cli, *args: str) -> subprocess.Popen:
    return subprocess.Popen(trackctl_command() + list(args), env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def claim_of(conn, code: str) -> tuple:
    """(claimed_until, due now?, poll_count) of a shipment."""
    return conn.execute("SELECT claimed_until, next_poll_at <= now(), poll_count FROM sequencing.tracking "
                        "WHERE tracking_id = %s", (code,)).fetchone()


# --- outcomes that agree with counts, summary and exit code --------------------------------------


def test_poll_whose_token_variable_is_unset_is_a_failed_run_exiting_6(conn, cli, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, token_env="ACME_TOKEN")
    ship(conn, "acme", 2)
    r = cli("poll")
    assert r.returncode == 6, r
    [run] = list_runs(conn, "poll")
    assert run.outcome == "failed", run
    assert "1 carrier could not be polled" in run.error
    assert (run.counts["polled"], run.counts["ok"]) == (0, 0)
    # the summary line says what the run record says, before the error line
    assert "poll: failed in" in r.stderr and "poll: ok" not in r.stderr, r
    assert r.stderr.rstrip().splitlines()[-1].startswith("trackctl: error: 1 carrier could not be polled"), r


def test_poll_is_partial_when_some_requests_fail_and_failed_when_all_do(conn, server):
    add_carrier(conn, "acme", adapter="http-json", url=server.url)
    codes = ship(conn, "acme", 2)
    in_transit(server, codes)
    server.script(codes[0], Reply(status=500))
    result = jobs.poll(conn, budget=30, all_due=True)
    assert (result.outcome, result.exit_code) == ("partial", 6), result
    assert (result.counts["ok"], result.counts["failed"]) == (1, 1)
    assert result.summary.startswith("poll: partial in ") and "failed=1" in result.summary
    assert "1 of 2 carrier requests failed" in str(result.problem)
    assert list_runs(conn, "poll")[0].outcome == "partial"

    server.default = Reply(status=503)
    result = jobs.poll(conn, budget=30, all_due=True)
    assert (result.outcome, result.exit_code, result.counts["ok"]) == ("failed", 6, 0), result
    assert list_runs(conn, "poll")[0].error == result.error and "2 of 2" in result.error

    server.default = None
    result = jobs.poll(conn, budget=30, all_due=True)
    assert (result.outcome, result.exit_code, result.problem, result.error) == ("ok", 0, None, None), result


def test_refill_of_a_used_up_s10_range_fails_and_with_other_pools_is_partial(conn, cli):
    create_pool(conn, "tiny", 4, "s10", s10=parse_s10_range("AA", "BR", "10000000-10000003"))
    add_carrier(conn, "post", pool="tiny")
    assert jobs.refill(conn, "tiny").outcome == "ok"
    assign(conn, "1", "post")  # one code out: the target wants a fifth serial, the range has none
    r = cli("refill", "--pool", "tiny")
    assert r.returncode == 1 and "S10 serial range used up" in r.stderr, r
    run = list_runs(conn, "refill")[0]
    assert (run.outcome, run.counts["generated"], run.counts["exhausted"]) == ("failed", 0, 1), run
    assert "S10 serial range used up" in run.error
    assert "refill: failed in" in r.stderr and "refill: ok" not in r.stderr, r

    r = cli("refill")  # the default pool is topped up, tiny still cannot be
    assert r.returncode == 1, r
    run = list_runs(conn, "refill")[0]
    assert (run.outcome, run.counts["generated"]) == ("partial", 200), run


def test_health_counts_partial_runs_as_working_and_reports_failing_jobs(conn):
    conn.execute("UPDATE sequencing.schema_migration SET applied_at = now() - interval '2 days'")
    for job, outcome in (("refill", "partial"), ("sweep-stale", "failed")):
        with recorded_run(conn, job) as run:
            if outcome == "partial":
                run.did(1)
            from trackctl.errors import PoolExhausted
            run.fail(PoolExhausted("range used up"))
    conn.execute("UPDATE sequencing.run SET started_at = now() - interval '10 minutes', "
                 "finished_at = now() - interval '10 minutes'")
    with recorded_run(conn, "refill") as run:  # newer: the last run failed, an older one worked
        run.fail(PoolExhausted("range used up"))
    problems = [p.message for p in health_report(conn).problems if p.check == "job"]
    assert not any(m.startswith("job refill") for m in problems), problems  # worked 10 min ago: in time
    assert any(m.startswith("job sweep-stale has not succeeded") and "its last run failed: range used up" in m
               for m in problems), problems
    text = exposition(read_metrics(conn))
    assert 'trackctl_job_last_run_outcome{job="refill",outcome="failed"} 1.0' in text
    assert 'trackctl_job_last_run_outcome{job="refill",outcome="partial"} 0.0' in text
    assert 'trackctl_job_last_worked_timestamp_seconds{job="refill"}' in text


# --- SIGINT and SIGTERM --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_poll_promptly_gives_its_claims_back_and_records_what_it_did(conn, cli, server, signum):
    add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=4, timeout=120)
    codes = ship(conn, "acme", 3)
    in_transit(server, codes)
    server.default = Reply(hang=120)  # a carrier that stops answering ...
    server.script(codes[0], Reply())  # ... after one answer
    proc = start(cli, "poll", "--budget", "120s")
    try:
        wait_for(lambda: claim_of(conn, codes[0])[2] == 1 and server.in_flight == 2,
                 "one answer recorded and two requests hanging")
    finally:
        out, err = stop_with(proc, signum, "poll")
    assert proc.returncode == EXIT[signum], err
    assert f"poll {REASON[signum]}" in err and "recorded as partial" in err, err
    [run] = list_runs(conn, "poll")
    assert (run.outcome, run.error) == ("partial", REASON[signum]), run
    assert (run.counts["polled"], run.counts["ok"], run.counts["released"]) == (1, 1, 2), run
    for code in codes[1:]:  # nothing marked done that was not: claims gone, due again, not counted
        assert claim_of(conn, code) == (None, True, 0)
    assert conn.execute("SELECT count(*) FROM sequencing.carrier_slot WHERE holder IS NOT NULL").fetchone()[0] == 0

    server.default = None  # the carrier is back: the next run takes the two shipments at once
    r = cli("poll", "--format", "json")
    assert r.returncode == 0, r
    assert sorted(c["polled"] for c in json.loads(r.stdout)) == [2]
    assert all(claim_of(conn, code)[2] == 1 for code in codes[1:])


def test_sigint_ends_notify_follow_with_its_deliveries_counted(conn, cli):
    from test_notify import SECRET, record_events, subscribe
    from webhook_endpoint import WebhookEndpoint

    with WebhookEndpoint(SECRET) as hook:
        subscribe(conn, hook)
        record_events(conn, 3)
        proc = start(cli, "notify", "--follow", "--budget", "120s")
        try:
            wait_for(lambda: len(hook.acknowledged()) == 3, "the three deliveries")
            time.sleep(0.3)  # their outcomes are recorded, notify waits for more
        finally:
            out, err = stop_with(proc, signal.SIGINT, "notify --follow")
    assert proc.returncode == 130, err
    [run] = list_runs(conn, "notify")
    assert (run.outcome, run.error, run.counts["delivered"]) == ("partial", "interrupted by SIGINT", 3), run
    assert "delivered\t3\n" in out  # the report is printed all the same


@pytest.mark.parametrize("args", [["events", "--follow"], ["events", "--group", "g1", "--follow"],
                                  ["status", "--watch", "--interval", "60", "--format", "jsonl"]],
                         ids=["events", "events-group", "status-watch"])
def test_sigterm_ends_the_followers_promptly(conn, cli, args):
    from trackctl import outbox

    outbox.record(conn, "shipment.stale", {"code": "C1"}, None)  # so that each prints a first line
    proc = start(cli, *args)
    try:
        assert proc.stdout.readline(), proc.communicate()  # started, and now idle in its wait
        time.sleep(0.5)
    finally:
        _, err = stop_with(proc, signal.SIGTERM, " ".join(args))
    assert proc.returncode == 143, err
    assert "terminated by SIGTERM" in err and "Traceback" not in err, err


def test_a_library_caller_stops_a_job_with_its_own_flag(conn, server):
    import threading

    add_carrier(conn, "acme", adapter="http-json", url=server.url, timeout=120)
    codes = ship(conn, "acme", 2)
    server.default = Reply(hang=120)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    result = jobs.poll(conn, budget=120, stop=stop)
    assert (result.outcome, result.error, result.exit_code) == ("failed", "stopped", 130), result
    assert result.data.interrupted and result.data.released == 2
    assert all(claim_of(conn, code) == (None, True, 0) for code in codes)


def test_sigint_stops_sweep_stale_between_shipments_with_its_count_matching_the_database(conn, cli):
    n = 3000
    add_carrier(conn, "manual")
    conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (n,))
    refill(conn)
    carrier = conn.execute("SELECT id FROM sequencing.carrier WHERE name = 'manual'").fetchone()[0]
    conn.execute("""UPDATE sequencing.tracking SET order_id = 'q' || id, freightcarrier_id = %s, parcel = 1,
                           status = 'pending', assigned_at = now() - interval '31 days'
                    WHERE order_id IS NULL""", (carrier,))
    flagged = "SELECT count(*) FROM sequencing.tracking WHERE stale_at IS NOT NULL"
    proc = start(cli, "sweep-stale", "--format", "json")
    try:
        wait_for(lambda: conn.execute(flagged).fetchone()[0] >= 20 or proc.poll() is not None, "the sweep to start")
    finally:
        out, err = stop_with(proc, signal.SIGINT, "sweep-stale")
    assert proc.returncode == 130, err
    done = conn.execute(flagged).fetchone()[0]
    assert 0 < done < n, "the sweep was not stopped midway"
    [run] = list_runs(conn, "sweep-stale")
    assert (run.outcome, run.error, run.counts["flagged"]) == ("partial", "interrupted by SIGINT", done), run
    assert len(json.loads(out)) == done  # what it printed is what it did


def test_sigterm_ends_a_refill_with_no_code_written_and_its_run_recorded(conn, cli):
    """`timeout` in the crontab sends SIGTERM: a refill (the lean path off a terminal, trackctl/entry.py)
    rolls its pool back whole, records its run as failed, says so in one line and exits 143."""
    conn.execute("UPDATE sequencing.pool SET target = 3000000 WHERE name = 'default'")
    running = "SELECT count(*) FROM sequencing.run WHERE job = 'refill' AND outcome = 'running'"
    proc = start(cli, "refill", "--format", "json")
    try:
        wait_for(lambda: conn.execute(running).fetchone()[0] == 1 or proc.poll() is not None, "the refill to start")
        time.sleep(0.5)  # well inside the writing of three million codes
    finally:
        out, err = stop_with(proc, signal.SIGTERM, "refill")
    assert proc.returncode == 143, err
    assert len(err.splitlines()) == 1 and "SIGTERM" in err, err
    assert out == "[]\n" or out == "", out
    free = conn.execute("SELECT count(*) FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id "
                        "WHERE p.name = 'default'").fetchone()[0]
    assert free == 0
    [run] = list_runs(conn, "refill")
    assert (run.outcome, run.error) == ("failed", "terminated by SIGTERM"), run
