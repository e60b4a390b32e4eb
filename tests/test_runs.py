"""Run records: every cron-able command records its run; dead runs show as died; logs carry the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from trackctl import logs
from trackctl.pools import REFILL_LOCK_CLASS, get_pool
from trackctl.runs import list_runs, recorded_run

from conftest import trackctl_command


def wait_for(condition, what: str, limit: float = 60.0):
    """Poll `condition` until it returns something truthy (the limit only stops a hung test)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def stored_outcome(conn, run_id: str) -> str:
    return conn.execute("SELECT outcome FROM sequencing.run WHERE id = %s", (run_id,)).fetchone()[0]


# --- library ---------------------------------------------------------------------------------


def test_a_run_is_inserted_running_and_updated_once_with_counts(conn):
    with recorded_run(conn, "refill") as run:
        assert stored_outcome(conn, run.id) == "running"
        assert list_runs(conn)[0].outcome == "running"  # its session is alive
        run.count(generated=7)
        run.add(pools=1)
        run.add(pools=1)
    [r] = list_runs(conn)
    assert (r.job, r.outcome, r.counts, r.error) == ("refill", "ok", {"generated": 7, "pools": 2}, None)
    assert r.pid == os.getpid() and r.finished_at >= r.started_at


def test_an_exception_ends_the_run_failed_with_its_message_and_is_raised_again(conn):
    with pytest.raises(RuntimeError):
        with recorded_run(conn, "poll") as run:
            run.count(polled=3)
            raise RuntimeError("carrier exploded")
    [r] = list_runs(conn, "poll")
    assert (r.outcome, r.counts) == ("failed", {"polled": 3})
    assert r.error == "RuntimeError: carrier exploded"


def test_a_skipped_run_is_recorded_as_skipped(conn):
    with recorded_run(conn, "refill") as run:
        run.skip("another host holds the lock")
    [r] = list_runs(conn)
    assert (r.outcome, r.error) == ("skipped", "another host holds the lock")


def test_runs_are_listed_newest_first_by_job_with_a_limit(conn):
    for job in ("refill", "poll", "refill", "notify", "refill"):
        with recorded_run(conn, job):
            pass
    assert [r.job for r in list_runs(conn)] == ["refill", "notify", "refill", "poll", "refill"]
    assert len(list_runs(conn, "refill", limit=2)) == 2
    assert {r.job for r in list_runs(conn, "refill")} == {"refill"}


def test_a_run_whose_session_is_gone_shows_as_died_and_the_next_run_stores_it(db_url, conn):
    other = psycopg.connect(db_url, autocommit=True)
    cm = recorded_run(other, "notify")
    run = cm.__enter__()
    backend = other.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert list_runs(conn, "notify")[0].outcome == "running"
    conn.execute("SELECT pg_terminate_backend(%s)", (backend,))  # as if its process had been killed
    wait_for(lambda: list_runs(conn, "notify")[0].outcome == "died", "the run to show as died")
    assert stored_outcome(conn, run.id) == "running"  # derived so far, not yet stored
    with recorded_run(conn, "refill"):
        pass
    assert stored_outcome(conn, run.id) == "died"
    other.close()


# --- the CLI ---------------------------------------------------------------------------------


def test_refill_records_an_ok_run_with_its_counts(cli, conn):
    r = cli("refill")
    assert r.returncode == 0, r
    [run] = list_runs(conn)
    assert (run.job, run.outcome) == ("refill", "ok")
    assert run.counts == {"pools": 1, "generated": 200, "skipped": 0}


def test_a_failing_refill_is_recorded_as_failed(cli, conn):
    r = cli("refill", "--pool", "nosuch")
    assert r.returncode == 1, r
    [run] = list_runs(conn)
    assert run.outcome == "failed" and "unknown pool 'nosuch'" in run.error


def test_refill_skipped_by_another_hosts_lock_exits_0_quietly_and_is_recorded(cli, conn):
    pool = get_pool(conn, "default")
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (REFILL_LOCK_CLASS, pool.id))  # another host refilling
    r = cli("refill")
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (REFILL_LOCK_CLASS, pool.id))
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert "error" not in r.stderr and "Traceback" not in r.stderr
    [run] = list_runs(conn)
    assert run.outcome == "skipped" and run.counts["generated"] == 0
    assert conn.execute("SELECT count(*) FROM sequencing.tracking").fetchone()[0] == 0


def _refill_blocked_on_the_pool_table(cli, db_url):
    """Start `trackctl refill` while another session holds the pool table: it records its run and waits."""
    holder = psycopg.connect(db_url)
    holder.execute("LOCK TABLE sequencing.pool IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen(trackctl_command() + ["refill"], env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return holder, proc


def test_a_refill_killed_with_sigkill_mid_run_shows_as_died(cli, conn, db_url):
    holder, proc = _refill_blocked_on_the_pool_table(cli, db_url)
    try:
        run = wait_for(lambda: next(iter(list_runs(conn)), None), "the refill to record its run")
        assert run.outcome == "running" and run.pid == proc.pid
        proc.kill()
        proc.wait()
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: list_runs(conn)[0].outcome == "died", "the killed run to show as died")
    r = cli("runs", "--format", "json")
    assert r.returncode == 0, r
    assert [(x["id"], x["outcome"]) for x in json.loads(r.stdout)] == [(run.id, "died")]


def test_sigterm_ends_the_run_as_failed_with_exit_143(cli, conn, db_url):
    holder, proc = _refill_blocked_on_the_pool_table(cli, db_url)
    try:
        wait_for(lambda: list_runs(conn), "the refill to record its run")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    finally:
        holder.rollback()  # let the statement finish so the process can record its end
        holder.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert b"terminated by SIGTERM" in err
    [run] = list_runs(conn)
    assert run.outcome == "failed" and "SIGTERM" in run.error


def test_runs_command_filters_by_job_and_limits(cli, conn):
    for _ in range(3):
        assert cli("refill").returncode == 0
    r = cli("runs", "--job", "refill", "--limit", "2")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("\trefill\t" in line and "\tok\t" in line for line in lines), r
    assert cli("runs", "--job", "Bad Name").returncode == 2
    assert cli("runs", "--limit", "0").returncode == 2


def test_runs_prune_deletes_old_finished_runs_and_records_itself(cli, conn):
    assert cli("refill").returncode == 0
    conn.execute("UPDATE sequencing.run SET started_at = started_at - interval '100 days', "
                 "finished_at = finished_at - interval '100 days'")
    r = cli("runs", "prune", "--older-than", "90d")
    assert r.returncode == 0, r
    [run] = list_runs(conn)
    assert (run.job, run.outcome, run.counts) == ("runs-prune", "ok", {"deleted": 1})
    assert cli("runs", "prune", "--older-than", "soon").returncode == 2


# --- logs ------------------------------------------------------------------------------------


def test_json_logs_carry_time_level_run_id_job_and_counts(cli, conn):
    r = cli("--log-format", "json", "refill")
    assert r.returncode == 0, r
    records = [json.loads(line) for line in r.stderr.splitlines()]
    [run] = list_runs(conn)
    end = records[-1]
    assert {"time", "level", "message"} <= set(end)
    assert (end["run_id"], end["job"], end["counts"]["generated"]) == (run.id, "refill", 200)


def test_json_log_format_from_the_environment_makes_every_stderr_line_json(cli):
    r = cli("refill", "--pool", "nosuch", env_extra={"TRACKCTL_LOG_FORMAT": "json"})
    assert r.returncode == 1, r
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert records[-1]["level"] == "error" and "unknown pool" in records[-1]["message"]
    assert cli("refill", env_extra={"TRACKCTL_LOG_FORMAT": "yaml"}).returncode == 2


def test_no_password_reaches_the_logs(cli, db_url):
    url = db_url + " password=s3cr3t-pw"  # the test server trusts local connections and ignores it
    r = cli("--log-format", "json", "refill", "--pool", "nosuch", env_extra={"TRACKCTL_DATABASE_URL": url})
    assert r.returncode == 1, r
    assert "s3cr3t-pw" not in r.stderr
    bad = "postgresql://app:s3cr3t-pw@127.0.0.1:1/nowhere"
    r = cli("--log-format", "json", "refill", env_extra={"TRACKCTL_DATABASE_URL": bad})
    assert r.returncode == 4, r
    assert "s3cr3t-pw" not in r.stderr and json.loads(r.stderr.splitlines()[-1])["level"] == "error"


def test_redact_hides_url_passwords_tokens_and_registered_secrets():
    logs.register_secret("whsec_abcdef")
    text = logs.redact("postgresql://app:pw@db/x password=pw2 Authorization: Bearer tok.en signing whsec_abcdef")
    assert "pw@" not in text and "pw2" not in text and "tok.en" not in text and "whsec_abcdef" not in text
    assert "postgresql://app:***@db/x" in text
