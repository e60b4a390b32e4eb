"""The dashboard (`trackctl status` with no argument) and the operational health checks built on it."""

from __future__ import annotations

import json
import signal
import subprocess

from conftest import trackctl_command

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.dashboard import snapshot
from trackctl.health import health_report
from trackctl.pools import refill
from trackctl.runs import recorded_run
from trackctl.webhooks import add_subscriber


def checks(conn) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in health_report(conn).problems:
        found.setdefault(p.check, []).append(p.message)
    return found


def test_dashboard_counts_pools_shipments_jobs_and_queues(conn):
    add_carrier(conn, "sim", adapter="simulator")
    refill(conn)
    for n in range(3):
        assign(conn, str(n), "sim")
    with recorded_run(conn, "refill") as run:
        run.count(generated=0)
    d = snapshot(conn)
    assert [(p.name, p.free, p.assigned) for p in d.pools] == [("default", 197, 3)]
    assert [(s.carrier, s.status, s.count) for s in d.shipments] == [("sim", "pending", 3)]
    assert d.overdue_polls == 0 and d.dead_deliveries == 0 and d.outbox.pending == 0
    jobs = {j.job: j for j in d.jobs}
    assert jobs["refill"].outcome == "ok" and jobs["refill"].last_ok_at is not None
    assert jobs["poll"].outcome == "never"


def test_status_without_arguments_prints_the_dashboard_plain_and_json(cli, conn):
    refill(conn)
    r = cli("status")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert "pool\tdefault\tuuid\t200\t200\t0" in lines
    assert "job\tpoll\tnever\t\t\t\t" in lines
    r = cli("status", "--format", "json")
    doc = json.loads(r.stdout)
    assert set(doc) >= {"pools", "shipments", "overdue_polls", "outbox", "dead_deliveries", "jobs"}
    assert cli("status", "--watch", "--order", "42").returncode == 2


def test_status_watch_in_a_pipe_prints_a_document_per_refresh_until_interrupted(cli):
    proc = subprocess.Popen(trackctl_command() + ["status", "--watch", "--interval", "0.2", "--format", "jsonl"],
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = proc.stdout.readline(), proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "pools" in json.loads(first) and "jobs" in json.loads(second)


def test_a_job_without_a_recent_success_is_a_health_problem(conn):
    refill(conn)
    conn.execute("UPDATE sequencing.schema_migration SET applied_at = now() - interval '2 days' WHERE version = 4")
    with recorded_run(conn, "refill"):
        pass
    conn.execute("UPDATE sequencing.run SET started_at = now() - interval '3 hours', "
                 "finished_at = now() - interval '3 hours'")
    found = checks(conn)["job"]
    assert any(m.startswith("job refill last succeeded 3 h ago") for m in found), found
    assert any(m.startswith("job poll has not succeeded") for m in found), found
    with recorded_run(conn, "refill"):
        pass
    assert not any("job refill" in m for m in checks(conn)["job"])


def test_a_fresh_installation_gives_jobs_time_to_run_first(conn):
    refill(conn)
    assert "job" not in checks(conn)


def test_overdue_polls_outbox_lag_and_dead_deliveries_are_health_problems(conn):
    refill(conn)
    add_carrier(conn, "sim", adapter="simulator")
    sub = add_subscriber(conn, "http://127.0.0.1:9/hook")
    code = assign(conn, "1", "sim").code  # its tracking.assigned event makes one delivery
    assert checks(conn) == {}
    conn.execute("UPDATE sequencing.tracking SET assigned_at = now() - interval '1 hour' WHERE tracking_id = %s",
                 (code,))
    assert "1 shipments are overdue" in checks(conn)["polls"][0]

    conn.execute("UPDATE sequencing.webhook_delivery SET next_attempt_at = now() - interval '20 minutes' "
                 "WHERE subscriber_id = %s", (sub.id,))
    assert "is 'trackctl notify' running?" in checks(conn)["outbox"][0]
    conn.execute("UPDATE sequencing.webhook_delivery SET status = 'dead', next_attempt_at = NULL "
                 "WHERE subscriber_id = %s", (sub.id,))
    found = checks(conn)
    assert "outbox" not in found
    assert found["deliveries"][0].startswith("1 webhook deliveries are dead")
