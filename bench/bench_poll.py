#!/usr/bin/env python
"""Polling benchmark (issue 4): achieved request rate against the bound max_concurrency / latency.

A local http-json carrier (tests/carrier_server.py) answers every request after a fixed latency
(default 50 ms). With a cap of 6 concurrent requests no poller can do better than 6 / 0.05 s =
120 requests/s; the benchmark runs a real `trackctl poll` process over --due due shipments and
prints achieved / bound twice: over the polling itself (first request received to last answer
sent, as the carrier sees it; this is the figure judged against the target) and over the whole
process (Python start-up, connection and run record included), for information:

1. with only those shipments in the table;
2. with --table shipments in the table (the others open but not due, or delivered), which must
   give the same ratio: claiming the next due shipment must not cost more in a larger table.

It also times the claim alone (one `sequencing.poll_acquire` call: slot and shipment, no HTTP) over
--claims claims at both sizes. Setup (bulk INSERT ... SELECT, VACUUM ANALYZE) is never timed.

    /tmp/dev/bin/python bench/bench_poll.py [--due 2000] [--table 60000] [--latency 0.05]
                                            [--concurrency 6] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory and removed
at the end. A URL must name a scratch database: the benchmark migrates it and writes to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from carrier_server import CarrierServer  # noqa: E402

from scratch import say, scratch_database, trackctl_command  # noqa: E402
from trackctl.carriers import add_carrier, carrier_settings  # noqa: E402
from trackctl.poll import SQL as POLL_SQL  # noqa: E402

ACQUIRE = POLL_SQL.acquire

TARGET = 0.8

# Assigned shipments made directly, for setup only. Due ones have the default next_poll_at
# (-infinity: never polled); the others are open but not due, or delivered.
SHIPMENTS = """
INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status, assigned_at,
                                 next_poll_at, last_polled_at)
SELECT %(prefix)s || g, %(pool_id)s, %(prefix)s || g, %(carrier_id)s, 1, %(status)s, now(),
       CASE WHEN %(due)s THEN '-infinity'::timestamptz ELSE now() + interval '1 hour' END,
       CASE WHEN %(due)s THEN NULL ELSE now() END
FROM generate_series(1, %(n)s::bigint) AS g
RETURNING tracking_id
"""
RESET_CLAIMS = """
UPDATE sequencing.tracking SET next_poll_at = '-infinity', claimed_until = NULL
WHERE freightcarrier_id = %s AND claimed_until IS NOT NULL
"""
RELEASE_SLOT = "UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL WHERE carrier_id = %s AND slot = %s"


def add_shipments(conn: psycopg.Connection, carrier_id: int, pool_id: int, prefix: str, n: int, *, due: bool,
                  status: str = "pending") -> list[str]:
    rows = conn.execute(SHIPMENTS, {"prefix": prefix, "pool_id": pool_id, "carrier_id": carrier_id, "n": n,
                                    "due": due, "status": status}).fetchall()
    return [r[0] for r in rows]


def time_claims(conn: psycopg.Connection, carrier_id: int, claims: int) -> float:
    """Return the median milliseconds of one claim (`poll_acquire`: slot and shipment), leaving nothing claimed."""
    round_start = conn.execute("SELECT now()").fetchone()[0]
    params = {"carrier": carrier_id, "holder": "bench", "lease": timedelta(seconds=60), "round": round_start,
              "all": False, "limit": 1, "stop": False}
    times = []
    for _ in range(claims):
        t = time.perf_counter()
        row = conn.execute(ACQUIRE, params).fetchone()
        times.append(time.perf_counter() - t)
        conn.execute(RELEASE_SLOT, (carrier_id, row[2]))
        if row[0] != "ok":
            raise RuntimeError(f"claim answered {row[0]!r}: not enough due shipments")
    conn.execute(RESET_CLAIMS, (carrier_id,))
    conn.execute("VACUUM ANALYZE sequencing.tracking")
    return statistics.median(times) * 1000


def run_poll(url: str, work: Path) -> tuple[int, float, dict]:
    env = {**os.environ, "TRACKCTL_DATABASE_URL": url, "TRACKCTL_HOME": str(work / "home")}
    started = time.perf_counter()
    proc = subprocess.run(trackctl_command() + ["poll", "--carrier", "bench", "--budget", "600s", "--format", "json"],
                          env=env, cwd=work, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"trackctl poll failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    (summary,) = json.loads(proc.stdout)
    return summary["polled"], elapsed, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--due", type=int, default=2_000, help="due shipments per polling run")
    parser.add_argument("--table", type=int, default=60_000, help="shipments in the table for the second run")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the carrier takes per request")
    parser.add_argument("--concurrency", type=int, default=6, help="the carrier's max_concurrency")
    parser.add_argument("--claims", type=int, default=1_000, help="claims timed alone per table size")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()
    if opts.table < 2 * opts.due + 1000 or opts.claims > opts.due:
        parser.error("--table must be well above twice --due, and --claims at most --due")

    rows = []
    server = CarrierServer("http-json", latency=opts.latency).start()
    try:
        with scratch_database(opts.database_url, "trackctl-bench-poll-") as scratch:
            conn, url, work = scratch.conn, scratch.url, scratch.work
            carrier = add_carrier(conn, "bench", adapter="http-json", url=server.url,
                                  max_concurrency=opts.concurrency, timeout=10)
            settings = carrier_settings(conn, "bench")
            bound = settings.max_concurrency / opts.latency
            for phase, filler in (("small", 0), ("large", opts.table - 2 * opts.due)):
                if filler:
                    say(f"adding {filler} shipments that are not due (half open, half delivered)")
                    add_shipments(conn, carrier.id, carrier.pool_id, "open-", filler // 2, due=False, status="in_transit")
                    add_shipments(conn, carrier.id, carrier.pool_id, "done-", filler - filler // 2, due=False,
                                  status="delivered")
                codes = add_shipments(conn, carrier.id, carrier.pool_id, f"{phase}-", opts.due, due=True)
                for code in codes:
                    server.history(code, [{"id": f"{code}-1", "status": "in_transit",
                                           "occurred_at": "2026-11-20T10:00:00Z", "description": "hub",
                                           "location": "Cajamar, SP"}])
                conn.execute("VACUUM ANALYZE sequencing.tracking")
                size = conn.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id IS NOT NULL").fetchone()[0]
                say(f"{phase}: timing {opts.claims} claims alone with {size} shipments in the table")
                claim_ms = time_claims(conn, carrier.id, opts.claims)
                say(f"{phase}: trackctl poll over {opts.due} due shipments, {opts.latency * 1000:.0f} ms per request")
                server.requests.clear()
                server.max_in_flight = 0
                polled, elapsed, summary = run_poll(url, work)
                span = max(r.ended for r in server.requests) - min(r.started for r in server.requests)
                rate = polled / span
                rows.append((phase, size, polled, span, rate, rate / bound, server.max_in_flight, claim_ms,
                             summary["failed"], polled / elapsed / bound, elapsed))
    finally:
        server.stop()

    print()
    print("trackctl polling benchmark (issue 4)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  carrier latency {opts.latency * 1000:.0f} ms, max_concurrency {opts.concurrency}: "
          f"bound {bound:.0f} requests/s; --due {opts.due} --table {opts.table} --claims {opts.claims}")
    print()
    print(f"{'table rows':>10}  {'polled':>6}  {'seconds':>7}  {'req/s':>6}  {'ratio':>5}  {'target':>6}  "
          f"{'max in flight':>13}  {'claim ms':>8}  {'process s':>9}  {'process ratio':>13}  result")
    ok = True
    for phase, size, polled, span, rate, ratio, in_flight, claim_ms, failed, process_ratio, elapsed in rows:
        good = ratio >= TARGET and polled == opts.due and failed == 0 and in_flight <= opts.concurrency
        ok &= good
        print(f"{size:>10}  {polled:>6}  {span:>7.2f}  {rate:>6.1f}  {ratio:>5.2f}  {'>= ' + str(TARGET):>6}  "
              f"{in_flight:>13}  {claim_ms:>8.3f}  {elapsed:>9.2f}  {process_ratio:>13.2f}  {'PASS' if good else 'FAIL'}")
    growth = rows[1][7] / rows[0][7]
    flat = rows[1][5] >= rows[0][5] * 0.9
    ok &= flat
    print()
    print(f"ratio at {rows[1][1]} rows / ratio at {rows[0][1]} rows: {rows[1][5] / rows[0][5]:.2f} "
          f"(target >= 0.90) {'PASS' if flat else 'FAIL'}; claim time large / small: {growth:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
