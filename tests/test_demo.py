"""`trackctl demo`: the README's first command, on a fresh embedded database and on a configured one."""

from __future__ import annotations

import os
import subprocess

from conftest import trackctl_command

from trackctl.runs import list_runs


def plain_record(stdout: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in stdout.splitlines())


def test_demo_on_a_fresh_trackctl_home_exits_0_with_a_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env["TRACKCTL_HOME"] = str(tmp_path / "home")
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
