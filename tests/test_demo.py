"""`trackctl demo`: the README's first command, on a fresh embedded database and on a configured one."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import trackctl_command

from trackctl.runs import list_runs


def plain_record(stdout: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in stdout.splitlines())


def test_demo_on_a_fresh_trackctl_home_exits_0_with_a_summary(tmp_path, fresh_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env["TRACKCTL_HOME"] = str(fresh_home)
    try:
        proc = subprocess.run(trackctl_command() + ["demo"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        summary = plain_record(proc.stdout)
        assert summary["orders"] == "300" and summary["new_codes"] == "300", proc.stdout
        assert int(summary["polled"]) > 0 and int(summary["events"]) > 0, proc.stdout
        assert "Traceback" not in proc.stderr
        runs = subprocess.run(trackctl_command() + ["runs", "--format", "csv", "--limit", "1000"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert runs.returncode == 0, runs.stderr
        jobs = {line.split(",")[1] for line in runs.stdout.splitlines()[1:]}
        assert {"refill", "poll", "notify"} <= jobs
    finally:
        subprocess.run(trackctl_command() + ["db", "stop"], env=env, cwd=tmp_path, capture_output=True, timeout=120)


def test_demo_on_a_configured_database_asks_first_and_runs_with_yes(cli, conn):
    refused = cli("demo", "--orders", "5")
    assert refused.returncode == 2, refused
    assert "--yes" in refused.stderr and refused.stdout == ""
    r = cli("demo", "--orders", "20", "--yes", "--format", "json")
    assert r.returncode == 0, r
    assert '"orders": 20' in r.stdout
    assert {run.job for run in list_runs(conn, limit=100)} >= {"refill", "poll", "notify"}
    # The demo's webhook receiver is gone with the demo: its subscription must not outlive it.
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_subscriber").fetchone()[0] == 0


def test_the_demo_leaves_the_users_subscribers_deliveries_and_pools_alone(cli, conn):
    """A user's subscriber with a backlog gets none of the demo's events; its deliveries, the user's
    pools and the demo's own runs stay apart (issue 11.7: the demo used to deliver that backlog and
    queue its own events to the user's subscriber)."""
    from webhook_endpoint import WebhookEndpoint, always

    from trackctl import webhooks
    from trackctl.assign import assign
    from trackctl.carriers import add_carrier
    from trackctl.pools import pool_levels, refill

    secret = webhooks.generate_secret()
    add_carrier(conn, "correios", 3)
    refill(conn)
    with WebhookEndpoint(secret, plan=always(200)) as users_hook:
        mine = webhooks.add_subscriber(conn, users_hook.url, secret=secret).id
        for n in range(30):  # the user's backlog: 30 deliveries nobody has sent yet
            assign(conn, f"user-{n}", "correios")
        before = conn.execute("SELECT id, status, attempts FROM sequencing.webhook_delivery WHERE subscriber_id = %s "
                              "ORDER BY id", (mine,)).fetchall()
        free_before = {p.name: p.free for p in pool_levels(conn)}
        r = cli("demo", "--orders", "5", "--yes", "--format", "json")
        assert r.returncode == 0, r
        summary = json.loads(r.stdout)
        assert summary["complete"] is True and summary["webhooks"] > 0, summary
        assert users_hook.received == [], "the demo sent requests to the user's endpoint"
    after = conn.execute("SELECT id, status, attempts FROM sequencing.webhook_delivery WHERE subscriber_id = %s "
                         "ORDER BY id", (mine,)).fetchall()
    assert after == before  # nothing delivered, nothing added, nothing changed
    assert {p.name: p.free for p in pool_levels(conn) if p.name in free_before} == free_before
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_subscriber").fetchone()[0] == 1
    assert conn.execute("SELECT demo FROM sequencing.carrier WHERE name = 'demo-express'").fetchone()[0] is True


def test_sigint_stops_the_demo_and_removes_its_subscriber(cli, conn):
    import signal
    import time

    from test_jobs import start, stop_with

    proc = start(cli, "demo", "--orders", "200", "--yes")
    try:
        deadline = time.monotonic() + 120
        while not any(r.job == "notify" for r in list_runs(conn, limit=100)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        _, err = stop_with(proc, signal.SIGINT, "demo")
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err, err
    last = list_runs(conn, limit=1)[0]
    assert last.outcome in ("partial", "failed") and last.error == "interrupted by SIGINT", last
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_subscriber").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sequencing.run WHERE outcome = 'running'").fetchone()[0] == 0
