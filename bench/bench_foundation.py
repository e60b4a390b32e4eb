#!/usr/bin/env python
"""Foundation benchmark (issue 3): trackctl against the bare PostgreSQL work it wraps, as ratios.

One run, one database. Four comparisons, each printed with its raw figures and PASS/FAIL:

1. batch assign: `trackctl assign --batch` (a real subprocess, CSV on stdin, output to a file)
   vs the best set-based SQL issued directly with psycopg on an open connection (COPY the
   orders into a temporary table, one UPDATE ... FROM pairing them by row_number with free
   codes taken FOR UPDATE SKIP LOCKED, RETURNING). Target: raw time / trackctl time >= 0.5.
2. refill: `trackctl refill --pool P` (a real subprocess) vs a raw COPY, on an open connection,
   of as many UUIDs generated in Python. Target: raw time / trackctl time >= 0.5. The in-process
   library call `trackctl.pools.refill` is printed too, for information.
3. one `trackctl assign ORDER CARRIER` process end to end vs `python -c` that imports psycopg,
   connects and runs the same claim statement (median of --runs runs each, interleaved).
   Target: trackctl / bare <= 2.0.
4. claim latency (median over --claims single-row claims through `trackctl.assign.assign`, on a
   connection without prepared statements, so each claim is planned as in a `trackctl assign`
   process) with 10 000 vs --history assigned rows in the table, all older than the free codes.
   Target: large / small <= 1.5. Timed with synchronous_commit off (see bench_claims); the
   durable latency is printed too.

Setup (pre-filling pools, bulk history with INSERT ... SELECT generate_series, and a
VACUUM ANALYZE after each bulk change, standing in for autovacuum) is never timed.

    /tmp/dev/bin/python bench/bench_foundation.py [--rows N] [--history N] [--database-url URL]
                                                  [--only claims,single,refill,batch]

Without --database-url an embedded PostgreSQL is started in a temporary directory and stopped
and removed at the end. A URL must name a scratch database: the benchmark migrates it and
writes well over a million rows into it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from scratch import say, scratch_database, trackctl_command
from trackctl.assign import SQL, assign
from trackctl.carriers import add_carrier
from trackctl.pools import create_pool, refill

SMALL_HISTORY = 10_000

# Free codes made by the database for setup only (timed refills use application-made UUIDs),
# with their claim tickets (sql/0009_claim_tickets.sql).
PREFILL = """
SELECT sequencing.add_free_codes(%s, ARRAY(SELECT gen_random_uuid()::text FROM generate_series(1, %s::bigint)))
"""
HISTORY = """
INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status, assigned_at)
SELECT gen_random_uuid()::text, %(pool_id)s, %(prefix)s || g, %(carrier_id)s, 1, 'pending', now()
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""
COUNT_ASSIGNED = "SELECT count(*) FROM sequencing.tracking WHERE order_id IS NOT NULL"
COUNT_FREE = "SELECT count(*) FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NULL"
COUNT_CLAIMED = "SELECT count(*), count(DISTINCT tracking_id) FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NOT NULL"

# The raw batch assignment: what a hand-written psycopg program would do for one carrier.
RAW_TEMP = "CREATE TEMPORARY TABLE raw_in (seq integer, order_id text) ON COMMIT DROP"
RAW_COPY = "COPY raw_in (seq, order_id) FROM STDIN"
# Both raw statements pair the orders in raw_in, by row_number, with as many free codes.
RAW_PAIRING = """
WITH need AS (
    SELECT seq, order_id, row_number() OVER (ORDER BY seq) AS rn FROM raw_in
), free AS (
    SELECT f.id, row_number() OVER (ORDER BY f.id) AS rn FROM (
        SELECT t.id FROM sequencing.tracking t
        WHERE t.pool_id = %(pool_id)s AND t.order_id IS NULL
        ORDER BY t.id LIMIT %(n)s
        FOR UPDATE SKIP LOCKED
    ) f
)"""
RAW_CLAIM = RAW_PAIRING + """
UPDATE sequencing.tracking t
SET order_id = need.order_id, freightcarrier_id = %(carrier_id)s, parcel = 1,
    status = 'pending', assigned_at = now()
FROM need JOIN free USING (rn)
WHERE t.id = free.id
RETURNING need.seq, t.tracking_id
"""
# The same, also writing each assignment's `tracking.assigned` outbox row (issue 5) as trackctl
# now does: for information, to show what the events cost on their own.
RAW_CLAIM_WITH_EVENTS = RAW_PAIRING + """, claimed AS (
    UPDATE sequencing.tracking t
    SET order_id = need.order_id, freightcarrier_id = %(carrier_id)s, parcel = 1,
        status = 'pending', assigned_at = now()
    FROM need JOIN free USING (rn)
    WHERE t.id = free.id
    RETURNING need.seq, t.id, t.tracking_id, t.order_id, t.assigned_at
), event AS (
    INSERT INTO sequencing.outbox (type, shipment_id, payload)
    SELECT 'tracking.assigned', cl.id, jsonb_build_object(
        'code', cl.tracking_id, 'order_id', cl.order_id, 'carrier', %(carrier)s::text,
        'pool', %(pool)s::text, 'assigned_at', sequencing.rfc3339(cl.assigned_at))
    FROM claimed cl ORDER BY cl.seq
)
SELECT seq, tracking_id FROM claimed
"""
# With the tickets trackctl gives new codes (sql/0009_claim_tickets.sql), as its refill does.
RAW_REFILL_COPY = "COPY sequencing.tracking (tracking_id, pool_id, ticket) FROM STDIN"

# The bare single claim: psycopg, one connection, trackctl's own claim statement, nothing else.
BARE_CLAIM = """\
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
row = conn.execute({sql!r}, {{"order_id": sys.argv[2], "carrier": sys.argv[3], "carrier_id": None,
                             "parcel": 1, "next_parcel": False}}).fetchone()
sys.stdout.write(row[6] + "\\n")
conn.close()
"""


@dataclass
class Result:
    label: str
    product: str  # trackctl's figure, formatted
    baseline: str  # the raw / bare figure, formatted
    ratio: float
    target: str
    ok: bool


def vacuum(conn: psycopg.Connection) -> None:
    # What autovacuum (or a cron'd VACUUM ANALYZE) would have done after a bulk change.
    conn.execute("VACUUM ANALYZE sequencing.tracking")


def checkpoint(conn: psycopg.Connection) -> None:
    # Start timed claims with the bulk writes flushed, so a running checkpoint does not slow one phase.
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def make_carrier(conn: psycopg.Connection, name: str, target: int = 0):
    pool = create_pool(conn, name, target=target)
    carrier = add_carrier(conn, name, pool=name)
    return pool, carrier


def run_timed(args: list[str], *, cwd: Path, stdin=None, stdout=None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr.decode()}")
    return elapsed, proc


# ---------------------------------------------------------------------------------------------


def bench_claims(conn: psycopg.Connection, url: str, claims: int, history: int) -> tuple[Result, tuple]:
    """Time single claims with SMALL_HISTORY, then `history`, assigned rows in the table.

    As in production, every assigned row is older (lower id) than every free code: each phase
    gets exactly the free codes it claims, added after the history. The claims run on their own
    connection without prepared statements, so every claim is planned, as in a `trackctl assign`
    process. The ratio is taken with synchronous_commit off: the WAL flush at commit costs the
    same whatever the history (and on this shared disk it varies from 1 to 10 ms with the other
    users' load), so it would only drown what the history changes. A quarter as many claims with
    synchronous_commit on give the durable latency, for information.
    """
    pool, carrier = make_carrier(conn, "claims")
    claim_conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    durable_claims = max(claims // 4, 50)
    made = 0

    def add_history(rows: int) -> None:
        nonlocal made
        conn.execute(HISTORY, {"pool_id": pool.id, "prefix": "hist-", "carrier_id": carrier.id,
                               "first": made + 1, "last": made + rows})
        made += rows

    def timed_claims(tag: str, count: int) -> float:
        times = []
        for i in range(count):
            start = time.perf_counter()
            assign(claim_conn, f"claim-{tag}-{i}", carrier.name)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def explained(tag: str, count: int = 21) -> tuple[int, float, float]:
        # Pages one claim touches, and the server's planning and execution times (EXPLAIN ANALYZE
        # runs the claim for real): evidence less exposed to the machine's load than wall time.
        touched, planning, execution = [], [], []
        for i in range(count):
            params = {"order_id": f"explain-{tag}-{i}", "carrier": carrier.name, "carrier_id": None,
                      "parcel": 1, "next_parcel": False}
            plan = claim_conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL.assign_one, params).fetchone()[0][0]
            touched.append(plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"])
            planning.append(plan["Planning Time"])
            execution.append(plan["Execution Time"])
        return int(statistics.median(touched)), statistics.median(planning), statistics.median(execution)

    def measure(tag: str) -> tuple[float, float, int, tuple[int, float, float]]:
        conn.execute(PREFILL, (pool.id, 50 + claims + durable_claims + 21))
        vacuum(conn)
        checkpoint(conn)
        assigned = conn.execute(COUNT_ASSIGNED).fetchone()[0]
        claim_conn.execute("SET synchronous_commit = off")
        timed_claims(f"warm-{tag}", 50)
        fast = timed_claims(tag, claims)
        claim_conn.execute("SET synchronous_commit = on")
        durable = timed_claims(f"durable-{tag}", durable_claims)
        return fast, durable, assigned, explained(tag)

    try:
        add_history(SMALL_HISTORY)
        say(f"claims with {SMALL_HISTORY} assigned rows")
        small, small_durable, small_rows, small_pages = measure("a")
        grow = history - conn.execute(COUNT_ASSIGNED).fetchone()[0]
        say(f"adding {grow} assigned rows of history")
        add_history(grow)
        say(f"claims with {history} assigned rows")
        large, large_durable, large_rows, large_pages = measure("b")
    finally:
        claim_conn.close()
    ratio = large / small
    return (Result(f"4 claim latency, {large_rows:,} vs {small_rows:,} assigned rows (median of {claims}, ratio large/small)",
                   f"{large * 1e3:.3f} ms", f"{small * 1e3:.3f} ms", ratio, "<= 1.5", ratio <= 1.5),
            (large_durable, small_durable, large_pages, small_pages))


def bench_process(url: str, carrier: str, runs: int, work) -> tuple[float, float, float]:
    bare_code = BARE_CLAIM.format(sql=SQL.assign_one)
    product, bare, empty = [], [], []

    def product_run(order: str) -> float:
        elapsed, proc = run_timed(trackctl_command() + ["--database-url", url, "assign", order, carrier], cwd=work)
        assert len(proc.stdout.strip()) == 36, proc.stdout
        return elapsed

    def bare_run(order: str) -> float:
        elapsed, proc = run_timed([sys.executable, "-c", bare_code, url, order, carrier], cwd=work)
        assert proc.stdout.strip(), "the bare claim returned no code"
        return elapsed

    product_run("warm-t")
    bare_run("warm-b")
    for i in range(runs):
        # Alternate which goes first so that drifting load falls on both alike.
        if i % 2:
            bare.append(bare_run(f"bare-{i}"))
            product.append(product_run(f"cli-{i}"))
        else:
            product.append(product_run(f"cli-{i}"))
            bare.append(bare_run(f"bare-{i}"))
        empty.append(run_timed([sys.executable, "-c", "pass"], cwd=work)[0])
    return statistics.median(product), statistics.median(bare), statistics.median(empty)


def bench_single(conn: psycopg.Connection, url: str, runs: int, work: Path) -> tuple[Result, float]:
    pool, carrier = make_carrier(conn, "single")
    conn.execute(PREFILL, (pool.id, 2 * runs + 10))
    vacuum(conn)
    p, b, empty = bench_process(url, carrier.name, runs, work)
    ratio = p / b
    return (Result(f"3 one `trackctl assign` process vs bare python -c (median of {runs})",
                   f"{p * 1e3:.0f} ms", f"{b * 1e3:.0f} ms", ratio, "<= 2.0", ratio <= 2.0),
            empty)


def bench_refill(conn: psycopg.Connection, url: str, rows: int, work: Path) -> tuple[Result, dict]:
    cli_pool, _ = make_carrier(conn, "refill-cli", target=rows)
    lib_pool, _ = make_carrier(conn, "refill-lib", target=rows)
    raw_pool, _ = make_carrier(conn, "refill-raw")
    vacuum(conn)

    say(f"raw COPY of {rows} UUIDs")
    start = time.perf_counter()
    codes = [str(uuid.uuid4()) for _ in range(rows)]
    generated = time.perf_counter()
    tail = f"\t{raw_pool.id}\t"
    with conn.cursor() as cur, cur.copy(RAW_REFILL_COPY) as copy:
        copy.write("".join([f"{c}{tail}{t}\n" for t, c in enumerate(codes, 1)]))
    raw = time.perf_counter() - start
    raw_copy_only = time.perf_counter() - generated
    vacuum(conn)

    say(f"trackctl refill of {rows} codes")
    product, proc = run_timed(trackctl_command() + ["--database-url", url, "refill", "--pool", cli_pool.name,
                                                    "--format", "plain"], cwd=work)
    assert conn.execute(COUNT_FREE, (cli_pool.id,)).fetchone()[0] == rows, proc.stdout
    vacuum(conn)

    say(f"trackctl.pools.refill of {rows} codes (in process)")
    start = time.perf_counter()
    refill(conn, lib_pool.name)
    library = time.perf_counter() - start
    assert conn.execute(COUNT_FREE, (lib_pool.id,)).fetchone()[0] == rows
    vacuum(conn)

    ratio = raw / product
    extra = {"raw_copy_only": raw_copy_only, "raw_generate": raw - raw_copy_only, "library": library, "raw": raw}
    return (Result(f"2 refill {rows:,} codes: `trackctl refill` vs raw uuid4+COPY (time ratio raw/trackctl)",
                   f"{product:.3f} s", f"{raw:.3f} s", ratio, ">= 0.5", ratio >= 0.5), extra)


def raw_batch(conn: psycopg.Connection, statement: str, prefix: str, rows: int, pool, carrier) -> float:
    """Time the hand-written assignment of `rows` new orders on an open connection; return seconds."""
    orders = [f"{prefix}-{i}" for i in range(rows)]
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(RAW_TEMP)
        with conn.cursor() as cur:
            with cur.copy(RAW_COPY) as copy:
                copy.write("".join(f"{i}\t{o}\n" for i, o in enumerate(orders)))
            cur.execute(statement, {"pool_id": pool.id, "n": rows, "carrier_id": carrier.id,
                                    "carrier": carrier.name, "pool": pool.name})
            got = cur.fetchall()
    elapsed = time.perf_counter() - start
    assert len(got) == rows, len(got)
    return elapsed


def bench_batch(conn: psycopg.Connection, url: str, rows: int, work: Path) -> tuple[Result, float | None]:
    with_events = conn.execute("SELECT to_regclass('sequencing.outbox') IS NOT NULL").fetchone()[0]
    cli_pool, cli_carrier = make_carrier(conn, "batch-cli")
    raw_pool, raw_carrier = make_carrier(conn, "batch-raw")
    conn.execute(PREFILL, (cli_pool.id, rows + 1000))
    conn.execute(PREFILL, (raw_pool.id, rows + 1000))
    if with_events:
        events_pool, events_carrier = make_carrier(conn, "batch-raw-events")
        conn.execute(PREFILL, (events_pool.id, rows + 1000))
    vacuum(conn)
    checkpoint(conn)

    say(f"raw set-based assignment of {rows} orders")
    raw = raw_batch(conn, RAW_CLAIM, "raw", rows, raw_pool, raw_carrier)
    vacuum(conn)
    checkpoint(conn)

    raw_events = None
    if with_events:
        say(f"raw set-based assignment of {rows} orders, with their outbox events")
        raw_events = raw_batch(conn, RAW_CLAIM_WITH_EVENTS, "raw-events", rows, events_pool, events_carrier)
        vacuum(conn)
        checkpoint(conn)

    say(f"trackctl assign --batch of {rows} lines")
    infile, outfile = work / "batch.csv", work / "batch.out"
    infile.write_text("".join(f"cli-{i},{cli_carrier.name}\n" for i in range(rows)))
    with open(infile, "rb") as stdin, open(outfile, "wb") as stdout:
        product, _ = run_timed(trackctl_command() + ["--database-url", url, "assign", "--batch"],
                               cwd=work, stdin=stdin, stdout=stdout)
    out_lines = outfile.read_text().splitlines()
    claimed, distinct = conn.execute(COUNT_CLAIMED, (cli_pool.id,)).fetchone()
    assert len(out_lines) == rows and claimed == distinct == rows, (len(out_lines), claimed, distinct)
    vacuum(conn)

    ratio = raw / product
    return (Result(f"1 batch assign {rows:,} lines: `trackctl assign --batch` vs raw SQL (time ratio raw/trackctl)",
                   f"{product:.3f} s ({rows / product:,.0f}/s)", f"{raw:.3f} s ({rows / raw:,.0f}/s)",
                   ratio, ">= 0.5", ratio >= 0.5),
            None if raw_events is None else raw_events)


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_offenders(url: str, work: Path, top: int = 10) -> list[tuple[str, str, int]]:
    """Return (module, importer, cumulative us) of the costliest imports of one `trackctl assign` run.

    Only top-level imports and the ones they make directly are kept, so the list names the
    packages to blame rather than their internals; `importer` is "" for a top-level import.
    """
    probe = ["--database-url", url, "assign", "importtime-probe", "single"]
    command = trackctl_command()
    args = ([sys.executable, "-X", "importtime", command[0]] if command[0] != sys.executable
            else [sys.executable, "-X", "importtime", "-m", "trackctl"]) + probe
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True)
    found, children = [], []
    for line in proc.stderr.splitlines():  # a module's line comes after the lines of its imports
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        depth = (len(m.group(3)) - 1) // 2
        if depth == 1:
            children.append((m.group(4), int(m.group(2))))
        elif depth == 0:
            found.append((m.group(4), "", int(m.group(2))))
            found.extend((name, m.group(4), cumulative) for name, cumulative in children)
            children = []
    return sorted(found, key=lambda r: -r[2])[:top]


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows for batch assign and refill")
    parser.add_argument("--history", type=int, default=1_000_000, help="assigned rows for the large-history claims")
    parser.add_argument("--claims", type=int, default=2_000, help="claims timed per history size")
    parser.add_argument("--runs", type=int, default=30, help="single-assign processes per side")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    parser.add_argument("--only", default="claims,single,refill,batch",
                        help="comma-separated parts to run: claims, single, refill, batch (default: all)")
    opts = parser.parse_args()
    parts = set(opts.only.split(","))
    if parts - {"claims", "single", "refill", "batch"}:
        parser.error(f"unknown parts in --only: {', '.join(sorted(parts - {'claims', 'single', 'refill', 'batch'}))}")
    if "claims" in parts and opts.history <= 2 * SMALL_HISTORY + opts.claims + 50:
        parser.error(f"--history must be well above {SMALL_HISTORY} plus the claims")

    with scratch_database(opts.database_url, "trackctl-bench-") as scratch:
        conn, url, work = scratch.conn, scratch.url, scratch.work
        results = []
        durable = empty = refill_extra = raw_events = batched = refilled = None
        if "claims" in parts:
            claimed, durable = bench_claims(conn, url, opts.claims, opts.history)
            results.append(claimed)
        if "single" in parts:
            single, empty = bench_single(conn, url, opts.runs, work)
            results.append(single)
        if "refill" in parts:
            refilled, refill_extra = bench_refill(conn, url, opts.rows, work)
            results.append(refilled)
        if "batch" in parts:
            batched, raw_events = bench_batch(conn, url, opts.rows, work)
            results.append(batched)
        offenders = import_offenders(url, work)

    results.sort(key=lambda r: r.label)
    print()
    print("trackctl foundation benchmark (issue 3)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  --rows {opts.rows} --history {opts.history} --claims {opts.claims} --runs {opts.runs} --only {opts.only}")
    print()
    width = max(len(r.label) for r in results)
    print(f"{'measure':<{width}}  {'trackctl':>20}  {'raw / bare':>20}  {'ratio':>6}  {'target':>7}  result")
    for r in results:
        print(f"{r.label:<{width}}  {r.product:>20}  {r.baseline:>20}  {r.ratio:>6.2f}  {r.target:>7}  "
              f"{'PASS' if r.ok else 'FAIL'}")
    print()
    print("for information:")
    if batched is not None and raw_events is not None:
        product_s = float(batched.product.split()[0])
        print(f"  batch, raw SQL that also writes the outbox events trackctl writes (same work): {raw_events:.3f} s "
              f"({opts.rows / raw_events:,.0f}/s), ratio raw-with-events/trackctl {raw_events / product_s:.2f}")
    if refilled is not None:
        print(f"  refill, raw side split: uuid4 generation {refill_extra['raw_generate']:.3f} s, "
              f"COPY {refill_extra['raw_copy_only']:.3f} s; ratio COPY-only/trackctl "
              f"{refill_extra['raw_copy_only'] / float(refilled.product.split()[0]):.2f}")
        print(f"  refill through the library (trackctl.pools.refill, in process): {refill_extra['library']:.3f} s, "
              f"ratio raw/library {refill_extra['raw'] / refill_extra['library']:.2f}")
    if durable is not None:
        print(f"  claim latency with synchronous_commit on (durable commit, median of {max(opts.claims // 4, 50)}): "
              f"{durable[0] * 1e3:.3f} ms with the large history, {durable[1] * 1e3:.3f} ms with the small one, "
              f"ratio {durable[0] / durable[1]:.2f}")
        (large_pages, large_plan, large_exec), (small_pages, small_plan, small_exec) = durable[2], durable[3]
        print(f"  one claim as the server sees it (EXPLAIN ANALYZE BUFFERS, median of 21), large / small history: "
              f"pages {large_pages} / {small_pages}, planning {large_plan:.3f} / {small_plan:.3f} ms, "
              f"execution {large_exec:.3f} / {small_exec:.3f} ms")
    if empty is not None:
        print(f"  python -c pass: {empty * 1e3:.0f} ms (median)")
    print("  costliest imports of one `trackctl assign` (python -X importtime, cumulative):")
    for name, importer, cum_us in offenders:
        print(f"    {name:<28} {cum_us / 1e3:7.1f} ms  {'(top level)' if not importer else 'imported by ' + importer}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
