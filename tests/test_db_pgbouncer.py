"""trackctl behind PgBouncer in transaction mode (docs/SCALING.md): the cron jobs and the hot path
work with TRACKCTL_PREPARED_STATEMENTS=off; without it a pooler that does not keep prepared
statements breaks them, and trackctl says what to set.

Runs where a `pgbouncer` binary is on PATH (Debian's package; .ci/run installs it when it can),
else skips. The pooler is a real PgBouncer process in front of the session's test server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import _SERVER, trackctl_command

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("pgbouncer") is None,
                                                   reason="pgbouncer is not installed")]


def _version() -> tuple[int, ...]:
    out = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0, 0)


@pytest.fixture(scope="module")
def bouncer():
    """A PgBouncer in transaction mode on 127.0.0.1 in front of the session's server; its port."""
    work = Path(tempfile.mkdtemp(prefix="trackctl-pgbouncer-"))  # not under pytest's 0700 tree: see chown
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Any database name goes to the test server; a pooler that keeps no prepared statements
    # (1.21 and newer keep them when max_prepared_statements > 0, the default from 1.22 on).
    keep_none = "max_prepared_statements = 0\n" if _version() >= (1, 21) else ""
    (work / "users.txt").write_text('"postgres" ""\n')
    (work / "pgbouncer.ini").write_text(f"""[databases]
* = host={_SERVER['host']} port={_SERVER['port']}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {work / 'users.txt'}
pool_mode = transaction
default_pool_size = 20
max_client_conn = 400
logfile = {work / 'pgbouncer.log'}
{keep_none}""")
    command = ["pgbouncer", str(work / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer will not run as root; the embedded server's own user can reach its socket.
        user = "embedded_postgres"
        shutil.chown(work, user)
        for f in work.iterdir():
            shutil.chown(f, user)
        command[1:1] = ["-u", user]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)


def pooled(cli, bouncer: int, db_url: str, *args: str, prepared: bool, input: str | None = None):
    dbname = re.search(r"dbname=(\S+)", db_url).group(1)
    env = {"TRACKCTL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{bouncer}/{dbname}"}
    if not prepared:
        env["TRACKCTL_PREPARED_STATEMENTS"] = "off"
    return cli(*args, input=input, env_extra=env)


def test_the_cron_jobs_and_the_hot_path_work_through_a_transaction_pool(cli, conn, db_url, bouncer):
    run = lambda *a, input=None: pooled(cli, bouncer, db_url, *a, prepared=False, input=input)  # noqa: E731
    for args in (["carrier", "add", "sim", "--adapter", "simulator", "--option", "step=1s"],
                 ["pool", "set", "default", "--target", "500"], ["refill"]):
        r = run(*args)
        assert r.returncode == 0, r
    codes = [run("assign", f"o{i}", "sim") for i in range(10)]
    assert all(r.returncode == 0 for r in codes), codes
    # 300 lines: the set-based path (COPY, temporary table) and a poll of hundreds of statements,
    # each far past psycopg's prepare threshold of 5 executions.
    batch = run("assign", "--batch", input="".join(f"b{i},sim\n" for i in range(300)))
    assert batch.returncode == 0 and len(batch.stdout.splitlines()) == 300, batch
    for args in (["webhook", "add", "http://127.0.0.1:9/hook"], ["poll", "--all", "--budget", "120s"],
                 ["notify", "--budget", "3s", "--timeout", "1s"], ["sweep-stale"],
                 ["outbox", "prune", "--older-than", "30d"], ["runs", "prune", "--older-than", "90d"],
                 ["status", "--order", "o1"], ["metrics"], ["events", "--limit", "100"], ["runs"]):
        r = run(*args)
        assert r.returncode == 0, (args, r)
    polled = conn.execute("SELECT count(*) FROM sequencing.tracking WHERE last_polled_at IS NOT NULL").fetchone()[0]
    assert polled == 310
    dup = conn.execute("SELECT count(*) - count(DISTINCT tracking_id) FROM sequencing.tracking").fetchone()[0]
    assert dup == 0


def test_without_the_setting_a_lost_prepared_statement_is_one_line_naming_it(cli, conn, db_url, bouncer):
    from trackctl.carriers import add_carrier

    from trackctl.assign import assign

    add_carrier(conn, "sim", adapter="simulator", options={"step": "1s"})
    for i in range(40):
        assign(conn, f"o{i}", "sim")
    failures = []
    # A poll runs the same statements for every shipment, so they get prepared (psycopg prepares a
    # statement on its fifth run) and a later transaction lands on another server connection.
    for args in (["poll", "--all"], ["metrics"], ["poll", "--all"], ["health"], ["poll", "--all"]):
        r = pooled(cli, bouncer, db_url, *args, prepared=False)
        assert "prepared statement" not in r.stderr, r
        r = pooled(cli, bouncer, db_url, *args, prepared=True)
        if r.returncode not in (0, 1) or "prepared statement" in r.stderr:
            failures.append(r)
    assert failures, "no run lost a prepared statement behind the pooler: the test shows nothing"
    for r in failures:
        lines = r.stderr.splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "TRACKCTL_PREPARED_STATEMENTS=off" in lines[0], r
