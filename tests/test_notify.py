"""trackctl notify against real local endpoints that verify every signature with `standardwebhooks`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from trackctl import outbox, webhooks
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import refill
from conftest import trackctl_command
from faults import backend_busy, wait_for
from webhook_endpoint import UNRESOLVABLE_URL, BlackHole, WebhookEndpoint, always, fail_times, hang_first

SECRET = webhooks.generate_secret()


def subscribe(conn, hook: WebhookEndpoint, schedule: str = "0s,1s,1s", max_in_flight: int = 16) -> int:
    return webhooks.add_subscriber(conn, hook.url, secret=hook.secret, retry_schedule=webhooks.parse_schedule(schedule),
                                   max_in_flight=max_in_flight).id


def record_events(conn, n: int, shipment_id: int | None = None) -> list[str]:
    return [outbox.record(conn, "shipment.stale", {"code": f"C{i}", "n": i}, shipment_id) for i in range(n)]


def deliveries(conn) -> dict[str, tuple]:
    """event id -> (status, attempts, last_status) of every delivery."""
    rows = conn.execute("SELECT sequencing.event_id(o), d.status, d.attempts, d.last_status FROM sequencing.webhook_delivery d "
                        "JOIN sequencing.outbox o ON o.id = d.outbox_id").fetchall()
    return {r[0]: r[1:] for r in rows}


def notify(cli, *args: str):
    r = cli("notify", "--format", "json", *args)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def test_500_twice_then_200_is_delivered_once_after_three_attempts(cli, conn):
    with WebhookEndpoint(SECRET, plan=fail_times(2)) as hook:
        subscribe(conn, hook, "0s,1s,1s,1s")
        [event_id] = record_events(conn, 1)
        report = notify(cli, "--budget", "60s")
        assert (report["delivered"], report["failed"], report["dead"]) == (1, 2, 0)
        assert hook.attempts(event_id) == 3 and hook.acknowledged() == [event_id]
        assert hook.unverified() == []
    assert deliveries(conn)[event_id] == ("done", 3, 200)
    body = hook.received[-1].body
    assert set(body) == {"id", "type", "timestamp", "data"} and body["id"] == event_id
    assert hook.received[-1].headers["content-type"] == "application/json"


def test_an_endpoint_that_hangs_times_out_and_is_retried(cli, conn):
    with WebhookEndpoint(SECRET, plan=hang_first(5)) as hook:
        subscribe(conn, hook, "0s,1s")
        [event_id] = record_events(conn, 1)
        report = notify(cli, "--budget", "60s", "--timeout", "1s")
        assert (report["delivered"], report["failed"]) == (1, 1)
        assert hook.attempts(event_id) == 2 and hook.acknowledged() == [event_id]
    assert deliveries(conn)[event_id] == ("done", 2, 200)


def test_an_endpoint_down_for_the_whole_schedule_goes_dead_then_replay_delivers(cli, conn):
    # One event, two attempts: below the lane's breaker (BREAKER_AFTER failures in a row), whose
    # rests test_a_subscriber_that_keeps_failing_rests_behind_its_breaker_and_loses_nothing covers.
    probe = WebhookEndpoint(SECRET)  # binds a free port, then frees it: nothing listens there
    port = probe.server.server_address[1]
    probe.server.server_close()
    subscriber = webhooks.add_subscriber(conn, probe.url, secret=SECRET, retry_schedule=[0, 1])
    [event_id] = record_events(conn, 1)
    report = notify(cli, "--budget", "60s")
    assert (report["delivered"], report["failed"], report["dead"]) == (0, 1, 1)
    assert deliveries(conn)[event_id][:2] == ("dead", 2)
    dead = cli("webhook", "deliveries", "--status", "dead", "--format", "json")
    # The one wording of transport errors (issue 11.8), the same as poll's
    assert len(json.loads(dead.stdout)) == 1 and "connection refused" in dead.stdout
    assert notify(cli)["delivered"] == 0  # dead stays dead

    with WebhookEndpoint(SECRET, port=port) as hook:
        r = cli("webhook", "replay", "--dead", "--subscriber", str(subscriber.id))
        assert r.returncode == 0 and "1 dead delivery is pending again" in r.stderr, r
        assert notify(cli)["delivered"] == 1
        assert hook.acknowledged() == [event_id] and hook.unverified() == []
    assert deliveries(conn)[event_id][0] == "done"


def test_410_gone_disables_the_subscriber_and_keeps_its_deliveries(cli, conn):
    with WebhookEndpoint(SECRET, plan=always(410)) as hook:
        sub = subscribe(conn, hook)
        event_ids = record_events(conn, 3)
        report = notify(cli, "--budget", "30s")
        assert report["disabled"] == 1 and report["delivered"] == 0
        [listed] = json.loads(cli("webhook", "list", "--format", "json").stdout)
        assert listed["enabled"] is False and "410" in listed["disabled_reason"]
        assert {deliveries(conn)[e][0] for e in event_ids} == {"pending"}
        hook.plan = always(200)
        assert notify(cli)["delivered"] == 0  # a disabled subscriber gets nothing
        assert cli("webhook", "enable", str(sub)).returncode == 0
        assert notify(cli)["delivered"] == 3
        assert set(hook.acknowledged()) == set(event_ids)


def test_per_shipment_a_later_event_waits_while_an_earlier_one_is_retried(cli, conn):
    add_carrier(conn, "correios")
    refill(conn)
    a = assign(conn, "1", "correios")
    b = assign(conn, "2", "correios")
    ship_a, ship_b = (conn.execute("SELECT id FROM sequencing.tracking WHERE tracking_id = %s", (x.code,)).fetchone()[0]
                      for x in (a, b))
    first_attempt_fails = set()
    with WebhookEndpoint(SECRET) as hook:
        subscribe(conn, hook, "0s,1s,1s")
        a_events = record_events(conn, 3, ship_a)
        b_events = record_events(conn, 2, ship_b)
        first_attempt_fails.add(a_events[0])
        hook.plan = lambda event_id, nth: 503 if event_id in first_attempt_fails and nth == 1 else 200
        report = notify(cli, "--budget", "60s")
        assert report["delivered"] == 5  # the assignments came before the subscriber
        arrivals = [r.event_id for r in hook.received]
        acked = hook.acknowledged()
    assert [e for e in acked if e in a_events] == a_events
    assert [e for e in acked if e in b_events] == b_events
    # a's later events arrived only after its first event's second (successful) attempt
    first_ok = arrivals.index(a_events[0], arrivals.index(a_events[0]) + 1)
    assert all(arrivals.index(e) > first_ok for e in a_events[1:])


def test_concurrency_is_bounded_per_endpoint(cli, conn):
    with WebhookEndpoint(SECRET, latency=0.05) as hook:
        subscribe(conn, hook, max_in_flight=3)
        record_events(conn, 30)
        report = notify(cli, "--concurrency", "16")
        assert report["delivered"] == 30
        assert 1 <= hook.max_concurrent <= 3


def test_several_notify_processes_never_send_one_delivery_twice_at_once(cli, conn):
    with WebhookEndpoint(SECRET, latency=0.02) as hook:
        subscribe(conn, hook)
        event_ids = record_events(conn, 150)
        procs = [subprocess.Popen(trackctl_command() + ["notify", "--budget", "60s", "--concurrency", "4"],
                                  env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        assert hook.overlaps == 0
        assert sorted(hook.acknowledged()) == sorted(event_ids)  # each exactly once: no lease ran out
    assert {v[0] for v in deliveries(conn).values()} == {"done"}


@pytest.mark.slow
def test_notify_killed_mid_run_loses_nothing_and_marks_nothing_unacknowledged_done(cli, conn):
    with WebhookEndpoint(SECRET, latency=0.3) as hook:
        subscribe(conn, hook)
        event_ids = record_events(conn, 40)
        proc = subprocess.Popen(trackctl_command() + ["notify", "--budget", "120s", "--concurrency", "4",
                                                      "--timeout", "2s"],
                                env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(hook.acknowledged()) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        # A statement the process sent just before it died still runs to its end (and commits)
        # on the server: its sessions must be gone before the state is read (once, they were not,
        # and two deliveries went done after it, on an acknowledgement the endpoint had given).
        wait_for(lambda: not backend_busy(conn, conn.info.dbname, "", any_state=True), timeout=30)
        acked_before = set(hook.acknowledged())
        state = deliveries(conn)
        done = {e for e, v in state.items() if v[0] == "done"}
        assert done <= acked_before  # nothing marked done that the endpoint did not answer 2xx
        assert len(done) < len(event_ids)  # the kill really happened mid-run
        leased = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE lease_token IS NOT NULL "
                              "AND status = 'pending'").fetchone()[0]
        assert leased > 0  # the dead process still held rows when it died

        report = notify(cli, "--budget", "60s", "--timeout", "2s")  # waits for the leases to end
        assert report["delivered"] == len(event_ids) - len(done)
        assert set(hook.acknowledged()) == set(event_ids)
        # A request the kill cut off mid-body reaches the endpoint truncated (it cannot verify
        # it, and it was never acknowledged); every request after the kill verifies.
        assert all(r.started < killed_at for r in hook.unverified()), hook.unverified()
    assert {v[0] for v in deliveries(conn).values()} == {"done"}


def test_follow_delivers_new_events_as_they_are_written(cli, conn):
    with WebhookEndpoint(SECRET) as hook:
        subscribe(conn, hook)
        proc = subprocess.Popen(trackctl_command() + ["notify", "--follow", "--budget", "120s"],
                                env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1.0)  # it is idle, waiting on LISTEN
            [first] = record_events(conn, 1)
            deadline = time.monotonic() + 60
            while hook.acknowledged() != [first] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hook.acknowledged() == [first]
            [second] = record_events(conn, 1)
            while len(hook.acknowledged()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hook.acknowledged() == [first, second]
            assert proc.poll() is None  # still following
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err  # SIGTERM: the run is recorded as failed, nothing is lost
    assert {v[0] for v in deliveries(conn).values()} == {"done"}


def test_claims_and_records_turn_off_synchronous_commit_for_their_own_transaction_only(conn):
    # Through a transaction-mode pooler a session SET would leak to other clients of the server
    # connection: each statement sets it for its transaction, and the session keeps its own.
    import uuid
    from datetime import datetime, timedelta, timezone

    from trackctl.notify import SQL

    CLAIM, RECORD = SQL.claim, SQL.record

    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/hook", secret=SECRET).id
    record_events(conn, 1)
    token = uuid.uuid4()
    setting = "SELECT current_setting('synchronous_commit')"
    with conn.transaction():
        [claimed] = conn.execute(CLAIM, {"subscriber": sub, "limit": 5, "lease": timedelta(seconds=30),
                                         "token": token}).fetchall()
        assert conn.execute(setting).fetchone()[0] == "off"
    assert conn.execute(setting).fetchone()[0] == "on"
    with conn.transaction():
        done = conn.execute(RECORD, {"ids": [claimed[0]], "ok": [True], "gone": [False], "status": [200],
                                     "error": [None], "at": [datetime.now(timezone.utc)], "token": token}).fetchall()
        assert done == [(claimed[0], "done")]
        assert conn.execute(setting).fetchone()[0] == "off"
    assert conn.execute(setting).fetchone()[0] == "on"


# --- fairness: a subscriber's slowness costs that subscriber only (issue 11.3) --------------------

def test_a_black_hole_and_an_unresolvable_host_do_not_hold_back_a_healthy_subscriber(conn):
    # Before lanes, the black hole's 16 requests took all 16 workers for the whole timeout, round
    # after round, and in a bounded run the healthy subscriber got a fraction of its events.
    from trackctl.notify import deliver

    with WebhookEndpoint(SECRET) as hook, BlackHole() as hole:
        healthy = subscribe(conn, hook, "0s,1h")
        webhooks.add_subscriber(conn, hole.url, secret=SECRET, retry_schedule=[0, 3600])
        webhooks.add_subscriber(conn, UNRESOLVABLE_URL, secret=SECRET, retry_schedule=[0, 3600])
        event_ids = record_events(conn, 300)
        report = deliver(conn, budget=25, concurrency=16, timeout=20)
        assert sorted(hook.acknowledged()) == sorted(event_ids), report
        assert hook.unverified() == []
        assert hole.accepted >= 1  # the black hole was really tried during the run
    rows = conn.execute("SELECT subscriber_id, status, count(*) FROM sequencing.webhook_delivery "
                        "GROUP BY 1, 2").fetchall()
    assert (healthy, "done", 300) in rows
    assert sum(n for sub, status, n in rows if status == "done") == 300  # only the healthy one's
    assert report.delivered == 300


def test_a_subscriber_that_keeps_failing_rests_behind_its_breaker_and_loses_nothing(conn):
    from trackctl.lanes import BREAKER_AFTER
    from trackctl.notify import deliver

    sub = webhooks.add_subscriber(conn, UNRESOLVABLE_URL, secret=SECRET, retry_schedule=[0, 3600],
                                  max_in_flight=1).id
    record_events(conn, 50)
    report = deliver(conn, concurrency=16, timeout=5)  # no budget: ends when only the resting one is left
    attempts = dict(conn.execute("SELECT attempts, count(*) FROM sequencing.webhook_delivery "
                                 "WHERE subscriber_id = %s GROUP BY 1", (sub,)).fetchall())
    # One request at a time: the breaker opened after BREAKER_AFTER failures in a row, and the
    # rest were handed back untouched (pending, no attempt counted) rather than failed.
    assert attempts == {1: BREAKER_AFTER, 0: 50 - BREAKER_AFTER}, attempts
    assert report.breakers == 1 and report.failed == BREAKER_AFTER and report.delivered == 0
    errors = {r[0] for r in conn.execute("SELECT last_error FROM sequencing.webhook_delivery "
                                         "WHERE attempts > 0").fetchall()}
    assert errors == {"host name not found: hooks.trackctl-test.invalid"}
    leased = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE lease_token IS NOT NULL").fetchone()
    assert leased == (0,)


# --- stopping: Ctrl-C and SIGTERM (issue 11.4) --------------------------------------------------

def _wait_until(condition, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached in {limit} s"
        time.sleep(0.05)


def test_a_stopped_run_abandons_its_requests_and_releases_its_rows(conn, db_url):
    import threading

    from trackctl import db
    from trackctl.notify import deliver

    with BlackHole() as hole:
        webhooks.add_subscriber(conn, hole.url, secret=SECRET, retry_schedule=[0, 60])
        record_events(conn, 5)
        stop = threading.Event()
        result = {}
        worker_conn = db.open_connection(db_url)

        def run() -> None:
            result["report"] = deliver(worker_conn, follow=True, timeout=600, stop=stop)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _wait_until(lambda: hole.accepted >= 5, "five requests in flight")
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the run did not end after stop was set"
        worker_conn.close()
    report = result["report"]
    assert report.stopped and report.released == 5 and report.failed == 0 and report.delivered == 0
    rows = conn.execute("SELECT status, attempts, lease_token, next_attempt_at <= now() "
                        "FROM sequencing.webhook_delivery").fetchall()
    assert rows == [("pending", 0, None, True)] * 5


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_notify_and_its_rows_are_released(cli, conn, sig, code):
    with BlackHole() as hole:
        webhooks.add_subscriber(conn, hole.url, secret=SECRET, retry_schedule=[0, 60])
        record_events(conn, 3)
        proc = subprocess.Popen(trackctl_command() + ["notify", "--budget", "300s", "--timeout", "120s"],
                                env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_until(lambda: hole.accepted >= 3, "three requests in flight")
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)  # generous: a loaded machine; the target is 2 s
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err
    assert b"Traceback" not in err
    rows = conn.execute("SELECT status, attempts, lease_token, next_attempt_at <= now() "
                        "FROM sequencing.webhook_delivery").fetchall()
    assert rows == [("pending", 0, None, True)] * 3  # released: nothing lost, nothing marked
    # The run is recorded as ended (how a stopped run is labelled is the job layer's business)
    [(finished,)] = conn.execute("SELECT finished_at IS NOT NULL FROM sequencing.run WHERE job = 'notify'").fetchall()
    assert finished
