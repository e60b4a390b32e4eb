#!/usr/bin/env python
"""Single claims under a held snapshot (issue 14, row 3): the claim rate while a REPEATABLE READ
transaction keeps its snapshot open, against the rate without one, measured in the same run.

    .venv/bin/python bench/bench_held_snapshot.py [--seconds 60] [--database-url URL]

One connection claims back to back through `trackctl.assign.assign` (the claim statement of every
`trackctl assign`) for --seconds with no other transaction open, then for as long again while a
second connection holds a REPEATABLE READ snapshot (what a report, `pg_dump` or a long analytics
query does). While the snapshot is held no vacuum can remove the rows the claims leave behind.
Printed: both rates and their ratio (target >= 0.8), the rate in each tenth of the held window,
and what one claim statement costs the server at the start and at the end of the held window:
the index entries of the tracking table it reads (pg_stat_get_xact_tuples_returned, dead entries
included) and the shared buffers it touches (EXPLAIN (ANALYZE, BUFFERS)). A claim whose cost does
not depend on dead tuples reads as much at the end as at the start. On a loaded machine the rates
swing with the other work; the two counts do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import psycopg

from bench_foundation import PREFILL, checkpoint, make_carrier, vacuum
from scratch import say, scratch_database
from trackctl.assign import SQL, assign


def claim_rate(conn: psycopg.Connection, carrier: str, tag: str, seconds: float) -> tuple[float, list[float]]:
    """Claim back to back for `seconds`; return claims/s and the rate in each tenth of the window."""
    tenths = [0] * 10
    start = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        assign(conn, f"{tag}-{i}", carrier)
        tenths[min(int(elapsed * 10 / seconds), 9)] += 1
        i += 1
    return i / (time.perf_counter() - start), [n * 10 / seconds for n in tenths]


# Index entries of the tracking table that scans returned in this transaction, dead ones included.
INDEX_ENTRIES_READ = """SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0)::bigint
                        FROM pg_index WHERE indrelid = 'sequencing.tracking'::regclass"""


def claim_cost(conn: psycopg.Connection, carrier: str, order: str) -> tuple[int, int]:
    """What one claim costs the server: (index entries of the tracking table it reads, shared
    buffers it touches by EXPLAIN (ANALYZE, BUFFERS)). Two real claims, committed (a rolled-back
    claim would leave a free code behind)."""
    params = {"order_id": f"{order}-1", "carrier": carrier, "carrier_id": None, "parcel": 1, "next_parcel": False}
    with conn.transaction():
        before = conn.execute(INDEX_ENTRIES_READ).fetchone()[0]
        conn.execute(SQL.assign_one, params)
        entries = conn.execute(INDEX_ENTRIES_READ).fetchone()[0] - before
    params["order_id"] = f"{order}-2"
    with conn.transaction():
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL.assign_one, params).fetchone()[0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]  # counts include every child node
    return entries, top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window (without, then held)")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()

    with scratch_database(opts.database_url, "trackctl-bench-snapshot-") as scratch:
        conn, url = scratch.conn, scratch.url
        pool, carrier = make_carrier(conn, "snapshot")
        # Enough free codes for both windows at a generous rate: a dry pool would switch to inline codes.
        conn.execute(PREFILL, (pool.id, int(opts.seconds * 2 * 2000) + 1000))
        vacuum(conn)
        checkpoint(conn)
        claimer = psycopg.connect(url, autocommit=True)
        holder = psycopg.connect(url)
        try:
            claim_rate(claimer, carrier.name, "warm", min(2.0, opts.seconds))
            say(f"claims for {opts.seconds:g} s without a held snapshot")
            free_rate, _ = claim_rate(claimer, carrier.name, "free", opts.seconds)
            vacuum(conn)  # both windows start from a vacuumed table
            # psycopg opens the transaction itself (BEGIN ISOLATION LEVEL REPEATABLE READ) at the first
            # statement: a BEGIN sent by hand would be a no-op inside it, and the snapshot of a
            # READ COMMITTED transaction ends with its statement.
            holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT count(*) FROM sequencing.pool").fetchone()  # the snapshot is taken here
            assert holder.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
            entries_start, pages_start = claim_cost(claimer, carrier.name, "probe-start")
            say(f"claims for {opts.seconds:g} s while a REPEATABLE READ snapshot is held")
            held_rate, tenths = claim_rate(claimer, carrier.name, "held", opts.seconds)
            entries_end, pages_end = claim_cost(claimer, carrier.name, "probe-end")
            holder.rollback()
        finally:
            holder.close()
            claimer.close()

    ratio = held_rate / free_rate
    print()
    print("trackctl held-snapshot claim benchmark (issue 14, row 3)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; Python {platform.python_version()}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  --seconds {opts.seconds:g}")
    print()
    print(f"claims/s without a held snapshot   {free_rate:8.0f}")
    print(f"claims/s with a snapshot held      {held_rate:8.0f}")
    print(f"ratio held / without               {ratio:8.2f}   target >= 0.8  {'PASS' if ratio >= 0.8 else 'FAIL'}")
    print(f"claims/s in each tenth of the held window: {', '.join(f'{r:.0f}' for r in tenths)}")
    print(f"one claim at the start / end of the held window: index entries read {entries_start} / {entries_end}, "
          f"pages touched {pages_start} / {pages_end}")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
