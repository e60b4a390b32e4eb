#!/usr/bin/env python
"""Assignment benchmark (issue 14, "Done when"): the issue's five rows as ratios, in one run, against
limits measured in the same run on the same server:

1. one `trackctl assign ORDER CARRIER` process / bare `python -c` (import psycopg, connect, same
   claim statement), medians, interleaved. Target <= 1.2.
2. a line written to a running `trackctl assign --batch --format csv` answered / one claim on an
   open connection, medians, interleaved. Target <= 3.
3. claim rate (`trackctl.assign.assign` on an open connection, back to back) while another session
   holds a REPEATABLE READ snapshot open for --hold seconds / the rate over as long without one.
   Target >= 0.8.
4. the issue's minimal SQL / `trackctl assign --batch` of --rows lines (a real process, CSV from a
   file, output to a file), as a throughput ratio. The minimal SQL, on an open connection, in one
   transaction: COPY the orders into a temporary table; one statement takes free codes FOR UPDATE
   SKIP LOCKED from `(code uuid primary key, order_id, carrier, assigned_at)` with a partial
   index on the free codes, pairs them with the orders, and writes one event row per assignment
   (type, code, jsonb payload) into a plain identity-keyed table. Target >= 0.5. The minimal
   table holds as many rows as trackctl's tracking table at that point (assigned ones, then the
   free codes); its time on a table of only the free codes is printed for information.
5. raw COPY of --rows uuids (made in Python, as trackctl makes them) into a table with a primary
   key and a partial free-code index / `trackctl refill` of --rows codes (a real process), as a
   throughput ratio. Target >= 0.5.

    .venv/bin/python bench/bench_assign.py [--runs 3] [--hold 60] [--rows 100000] [--database-url URL]

With --runs N every row is measured N times (the rows in turn, on one server) and the median of
each row is judged. Setup (pre-filled pools, VACUUM ANALYZE, CHECKPOINT) is never timed. Without
--database-url an embedded PostgreSQL is started in a temporary directory and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg

from bench_foundation import COUNT_CLAIMED, COUNT_FREE, PREFILL, checkpoint, make_carrier, run_timed, vacuum
from bench_held_snapshot import claim_rate
from bench_startup import bench_coprocess, bench_process
from scratch import say, scratch_database, trackctl_command

# The minimal tables, in a schema of their own next to trackctl's.
MINIMAL_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS bench_minimal;
CREATE TABLE bench_minimal.codes (
    code uuid PRIMARY KEY, order_id text, carrier text, assigned_at timestamptz
);
CREATE INDEX codes_free ON bench_minimal.codes (code) WHERE order_id IS NULL;
CREATE TABLE bench_minimal.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, type text NOT NULL, code uuid NOT NULL,
    payload jsonb NOT NULL
);
CREATE TABLE bench_minimal.refill (
    code uuid PRIMARY KEY, order_id text, carrier text, assigned_at timestamptz
);
CREATE INDEX refill_free ON bench_minimal.refill (code) WHERE order_id IS NULL;
"""
MINIMAL_PREFILL = "INSERT INTO bench_minimal.codes (code) SELECT gen_random_uuid() FROM generate_series(1, %s::bigint)"
# Rows already assigned, so that the minimal table can hold as many rows as trackctl's tracking
# table when row 4 runs (the same work on a table of the same size; see bench_batch).
MINIMAL_HISTORY = """
INSERT INTO bench_minimal.codes (code, order_id, carrier, assigned_at)
SELECT gen_random_uuid(), 'old-' || g, 'old', now() FROM generate_series(1, %s::bigint) AS g
"""
MINIMAL_TEMP = "CREATE TEMPORARY TABLE orders_in (seq integer, order_id text) ON COMMIT DROP"
MINIMAL_COPY = "COPY orders_in (seq, order_id) FROM STDIN"
# The event payload carries what trackctl's `tracking.assigned` payload carries (WEBHOOKS.md).
MINIMAL_CLAIM = """
WITH need AS (
    SELECT seq, order_id, row_number() OVER (ORDER BY seq) AS rn FROM orders_in
), free AS (
    SELECT f.code, row_number() OVER () AS rn FROM (
        SELECT c.code FROM bench_minimal.codes c WHERE c.order_id IS NULL
        LIMIT %(n)s FOR UPDATE SKIP LOCKED
    ) f
), claimed AS (
    UPDATE bench_minimal.codes c SET order_id = need.order_id, carrier = %(carrier)s, assigned_at = now()
    FROM need JOIN free USING (rn)
    WHERE c.code = free.code
    RETURNING need.seq, c.code, c.order_id, c.carrier, c.assigned_at
), event AS (
    INSERT INTO bench_minimal.events (type, code, payload)
    SELECT 'tracking.assigned', code, jsonb_build_object(
        'code', code, 'order_id', order_id, 'carrier', carrier, 'pool', %(carrier)s::text,
        'assigned_at', assigned_at)
    FROM claimed
)
SELECT seq, code FROM claimed
"""
MINIMAL_REFILL_COPY = "COPY bench_minimal.refill (code) FROM STDIN"
COUNT_ROWS = "SELECT count(*) FROM sequencing.tracking"
MINIMAL_RESET = """
TRUNCATE bench_minimal.codes, bench_minimal.events, bench_minimal.refill
"""
HOLD_SNAPSHOT = "SELECT count(*) FROM sequencing.pool"  # any read takes the transaction's snapshot


@dataclass(frozen=True)
class Row:
    number: int
    label: str
    target: str
    product: float  # trackctl's figure (seconds or a rate)
    raw: float  # the limit's
    unit: str

    @property
    def ratio(self) -> float:
        # Rows 1-2: trackctl's time over the limit's (lower is better). Row 3: the rate with the
        # snapshot held over the rate without. Rows 4-5: throughput, the limit's time over trackctl's.
        return self.product / self.raw if self.number <= 3 else self.raw / self.product

    def ok(self, ratio: float) -> bool:
        bound = float(self.target.split()[1])
        return ratio <= bound if self.target.startswith("<=") else ratio >= bound


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value * 1e3:.2f} ms"
    return f"{value:,.0f}/s"


# --- row 3 ---------------------------------------------------------------------------------------

def bench_snapshot(conn: psycopg.Connection, url: str, carrier, pool, hold: float, tag: str) -> tuple[Row, list[float], list[float]]:
    # Enough free codes for both windows at a generous rate: a dry pool would switch to inline codes.
    conn.execute(PREFILL, (pool.id, int(hold * 2 * 1500) + 1000))
    vacuum(conn)
    checkpoint(conn)
    claimer = psycopg.connect(url, autocommit=True)
    # psycopg opens the holder's transaction itself, at this isolation level: a BEGIN sent by hand
    # inside it would be a no-op, leaving a READ COMMITTED transaction that holds no snapshot.
    holder = psycopg.connect(url)
    holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        claim_rate(claimer, carrier.name, f"warm-{tag}", min(2.0, hold))
        say(f"claims for {hold:g} s without a held snapshot")
        free_rate, free_tenths = claim_rate(claimer, carrier.name, f"free-{tag}", hold)
        vacuum(conn)  # both windows start from a vacuumed index
        holder.execute(HOLD_SNAPSHOT).fetchone()
        assert holder.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
        say(f"claims for {hold:g} s while a REPEATABLE READ snapshot is held")
        held_rate, tenths = claim_rate(claimer, carrier.name, f"held-{tag}", hold)
        holder.rollback()
    finally:
        holder.close()
        claimer.close()
    vacuum(conn)
    return (Row(3, f"3 claim rate with a REPEATABLE READ snapshot held {hold:g} s / without",
                ">= 0.8", held_rate, free_rate, "/s"), tenths, free_tenths)


# --- row 4 ---------------------------------------------------------------------------------------

def minimal_batch(conn: psycopg.Connection, rows: int, history: int, carrier: str, tag: str) -> float:
    """The issue's minimal SQL assigning `rows` orders from a table made afresh with `history`
    assigned rows and `rows` + 1 000 free codes; returns its time in seconds."""
    conn.execute(MINIMAL_RESET)
    if history:
        conn.execute(MINIMAL_HISTORY, (history,))
    conn.execute(MINIMAL_PREFILL, (rows + 1000,))
    conn.execute("VACUUM ANALYZE bench_minimal.codes")
    checkpoint(conn)
    say(f"minimal SQL assigning {rows} orders (table of {history + rows + 1000:,} rows)")
    orders = [f"min-{tag}-{i}" for i in range(rows)]
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(MINIMAL_TEMP)
        with conn.cursor() as cur:
            with cur.copy(MINIMAL_COPY) as copy:
                copy.write("".join(f"{i}\t{o}\n" for i, o in enumerate(orders)))
            cur.execute(MINIMAL_CLAIM, {"n": rows, "carrier": carrier})
            got = cur.fetchall()
    elapsed = time.perf_counter() - start
    assert len(got) == rows, len(got)
    events = conn.execute("SELECT count(*) FROM bench_minimal.events").fetchone()[0]
    assert events == rows, events
    return elapsed


def bench_batch(conn: psycopg.Connection, url: str, rows: int, work, tag: str) -> tuple[Row, float]:
    """Row 4. The limit is the minimal SQL on a table as large as trackctl's tracking table at this
    point (the benchmark grows that table run by run: about 180 000 rows before run 1's batch,
    950 000 before run 3's). Also returned, for information: the minimal SQL's time on a table
    holding only this run's free codes, which is how row 4 was measured up to 2026-12-02."""
    pool, carrier = make_carrier(conn, f"batch-{tag}")
    conn.execute(PREFILL, (pool.id, rows + 1000))
    vacuum(conn)
    size = conn.execute(COUNT_ROWS).fetchone()[0]
    fresh = minimal_batch(conn, rows, 0, carrier.name, tag)
    raw = minimal_batch(conn, rows, size - rows - 1000, carrier.name, tag)
    conn.execute(MINIMAL_RESET)
    checkpoint(conn)

    say(f"trackctl assign --batch of {rows} lines (tracking holds {size:,} rows)")
    infile, outfile = work / f"batch-{tag}.csv", work / f"batch-{tag}.out"
    infile.write_text("".join(f"cli-{tag}-{i},{carrier.name}\n" for i in range(rows)))
    with open(infile, "rb") as stdin, open(outfile, "wb") as stdout:
        product, _ = run_timed(trackctl_command() + ["--database-url", url, "assign", "--batch"],
                               cwd=work, stdin=stdin, stdout=stdout)
    out_lines = outfile.read_text().splitlines()
    claimed, distinct = conn.execute(COUNT_CLAIMED, (pool.id,)).fetchone()
    assert len(out_lines) == rows and claimed == distinct == rows, (len(out_lines), claimed, distinct)
    outfile.unlink()
    vacuum(conn)
    checkpoint(conn)
    return Row(4, f"4 `assign --batch` of {rows:,} lines / minimal SQL (throughput)", ">= 0.5", product, raw, "s"), fresh


# --- row 5 ---------------------------------------------------------------------------------------

def bench_refill(conn: psycopg.Connection, url: str, rows: int, work, tag: str) -> tuple[Row, float]:
    conn.execute(MINIMAL_RESET)
    pool, _ = make_carrier(conn, f"refill-{tag}", target=rows)
    vacuum(conn)
    checkpoint(conn)

    say(f"raw COPY of {rows} uuids")
    start = time.perf_counter()
    raw_codes = os.urandom(16 * rows)
    text = "\n".join(str(uuid.UUID(bytes=raw_codes[i:i + 16], version=4)) for i in range(0, 16 * rows, 16)) + "\n"
    generated = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur, cur.copy(MINIMAL_REFILL_COPY) as copy:
        copy.write(text)
    raw = time.perf_counter() - start
    copy_only = time.perf_counter() - generated
    checkpoint(conn)

    say(f"trackctl refill of {rows} codes")
    product, proc = run_timed(trackctl_command() + ["--database-url", url, "refill", "--pool", pool.name,
                                                    "--format", "plain"], cwd=work)
    assert conn.execute(COUNT_FREE, (pool.id,)).fetchone()[0] == rows, proc.stdout
    vacuum(conn)
    checkpoint(conn)
    return Row(5, f"5 `refill` of {rows:,} / raw COPY of as many uuids (throughput)", ">= 0.5", product, raw, "s"), copy_only


# -------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="measure every row this many times; judge the median")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the snapshot is held (row 3), and the window without")
    parser.add_argument("--rows", type=int, default=100_000, help="lines for the batch and codes for the refill (rows 4, 5)")
    parser.add_argument("--processes", type=int, default=30, help="single-assign processes per side (row 1)")
    parser.add_argument("--lines", type=int, default=300, help="lines written one at a time to the co-process (row 2)")
    parser.add_argument("--only", default="1,2,3,4,5", help="comma-separated row numbers to measure (default: all)")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()
    only = {int(x) for x in opts.only.split(",")}

    measured: dict[int, list[Row]] = {n: [] for n in sorted(only)}
    notes: list[str] = []
    loads = [os.getloadavg()]
    with scratch_database(opts.database_url, "trackctl-bench-assign-") as scratch:
        conn, url, work = scratch.conn, scratch.url, scratch.work
        conn.execute(MINIMAL_SCHEMA)
        for run in range(opts.runs):
            tag = f"r{run}"
            say(f"run {run + 1} of {opts.runs}")
            if only & {1, 2}:
                pool, carrier = make_carrier(conn, f"single-{tag}")
                conn.execute(PREFILL, (pool.id, 2 * opts.processes + 2 * opts.lines + 100))
                vacuum(conn)
                if 1 in only:
                    say(f"{opts.processes} single-assign processes per side")
                    product, bare, _ = bench_process(url, carrier.name, opts.processes, work)
                    measured[1].append(Row(1, "1 one `trackctl assign` process / bare python -c", "<= 1.2",
                                           product, bare, "ms"))
                if 2 in only:
                    say(f"{opts.lines} lines through a running assign --batch")
                    piped, direct = bench_coprocess(url, carrier.name, opts.lines, work)
                    measured[2].append(Row(2, "2 a line to a running `assign --batch` / one claim on an open connection",
                                           "<= 3", piped, direct, "ms"))
            if 3 in only:
                pool, carrier = make_carrier(conn, f"snapshot-{tag}")
                row, tenths, free_tenths = bench_snapshot(conn, url, carrier, pool, opts.hold, tag)
                measured[3].append(row)
                notes.append(f"run {run + 1}, row 3: claims/s in each tenth of the held window: "
                             + ", ".join(f"{r:.0f}" for r in tenths) + "; of the window without: "
                             + ", ".join(f"{r:.0f}" for r in free_tenths))
            if 4 in only:
                before = conn.execute(COUNT_ROWS).fetchone()[0]
                row, fresh = bench_batch(conn, url, opts.rows, work, tag)
                measured[4].append(row)
                notes.append(f"run {run + 1}, row 4: trackctl {row.product:.3f} s, minimal SQL {row.raw:.3f} s on a table "
                             f"of the same size ({before + opts.rows + 1000:,} rows); minimal SQL on a table of only "
                             f"the free codes {fresh:.3f} s (ratio {fresh / row.product:.2f})")
            if 5 in only:
                row, copy_only = bench_refill(conn, url, opts.rows, work, tag)
                measured[5].append(row)
                notes.append(f"run {run + 1}, row 5: raw side's COPY alone {copy_only:.3f} s "
                             f"(ratio COPY-only / refill {copy_only / row.product:.2f})")
            loads.append(os.getloadavg())

    print()
    print("trackctl assignment benchmark (issue 14)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs; load average (1, 5, 15 min) at start "
          f"{', '.join(f'{x:.2f}' for x in loads[0])}, after each run: "
          + "; ".join(', '.join(f'{x:.2f}' for x in la) for la in loads[1:]))
    print(f"  --runs {opts.runs} --hold {opts.hold:g} --rows {opts.rows} --processes {opts.processes} "
          f"--lines {opts.lines} --only {opts.only}")
    print()
    label_width = max(len(rows[0].label) for rows in measured.values() if rows)
    print(f"{'row':<{label_width}}  {'trackctl':>14}  {'limit':>14}  {'ratios (each run)':>20}  {'median':>6}  {'target':>7}  result")
    ok = True
    for number, rows in measured.items():
        if not rows:
            continue
        ratios = [r.ratio for r in rows]
        med = statistics.median(ratios)
        mid = min(rows, key=lambda r: abs(r.ratio - med))
        passed = rows[0].ok(med)
        ok &= passed
        print(f"{rows[0].label:<{label_width}}  {fmt(mid.product, mid.unit):>14}  {fmt(mid.raw, mid.unit):>14}  "
              f"{', '.join(f'{x:.2f}' for x in ratios):>20}  {med:>6.2f}  {rows[0].target:>7}  {'PASS' if passed else 'FAIL'}")
    if notes:
        print()
        print("for information:")
        for note in notes:
            print(f"  {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
