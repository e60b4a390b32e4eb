"""Fault suite (issue 7): real processes killed with SIGKILL at seeded random points of their work.

Each job (assign --batch, refill, poll, notify, an events --group collector) is killed at a point
counted from its own progress, then checked: nothing applied in part, nothing lost, nothing done
twice, and a rerun completes the work. tests/test_notify.py and tests/test_events.py kill notify
and a collector at one fixed point; these kill them at seeded random moments (see tests/faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
from carrier_server import CarrierServer, http_json_event
from faults import (applied, assigned_events, backend_busy, batch_input, delivery_states, finish, kill9,
                    no_code_twice, rng, ship, start, wait_for, whole_lines)

from trackctl import webhooks
from trackctl.assign import CHUNK
from trackctl.carriers import add_carrier
from trackctl.pools import refill

pytestmark = pytest.mark.faults

__all__ = ["rng"]  # a fixture, used by name


# -- assign --batch ---------------------------------------------------------------------------


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
        # k = 0: a moment after the batch connected, inside its first chunk or just before it.
        wait_for(lambda: (backend_busy(conn, conn.info.dbname, "", any_state=True) if k == 0
                          else len(applied(conn, prefix)) >= k * CHUNK) or proc.poll() is not None)
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
            k, delay = rng.randint(1, 100), rng.uniform(0.0, 0.1)
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
            outbox_ids = {r[0] for r in conn.execute("SELECT sequencing.event_id(o) FROM sequencing.outbox o")}
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
                  f"redelivered so far={redelivered}, requests cut short by the kill so far={hook.cut_short}")
    assert killed_mid_run >= 1, f"seed {rng.seed_value}: no round hit notify while it ran"


# -- events --group collectors --------------------------------------------------------------------


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
