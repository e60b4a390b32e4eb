"""Scale proof (issue 7): N simulated hosts run the full crontab against one database of
1 000 000 shipments while single `assign` claims are timed.

Each host is one process that runs the cron jobs as cron would, one after the other, for a fixed
number of rounds: refill, poll, notify, sweep-stale, outbox prune (each a real `trackctl` process,
timed). The carrier is the built-in simulator (no HTTP) with a webhook subscriber on a local
endpoint, so notify has real deliveries. The shipments are bulk-created with INSERT ... SELECT
generate_series (not through the CLI); a fraction of them is due for polling. Meanwhile this
process times single claims (`trackctl.assign.assign` on an open connection) and reports
p50/p95/p99, and the database size and table sizes before and after.

Run:  /tmp/dev/bin/python bench/bench_scale.py                      (defaults: ~3-5 min)
      /tmp/dev/bin/python bench/bench_scale.py --hosts 1,2,4,8      (a sweep: one phase per count)
      /tmp/dev/bin/python bench/bench_scale.py --hosts 8 --rounds 5 --shipments 5000000 --due 0.01
Before the phases it times claims with no job running: the limit the loaded figures compare to.
Without --database-url an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from trackctl import db, embedded, webhooks
from trackctl.assign import assign
from trackctl.carriers import add_carrier

JOBS = [["refill"], ["poll", "--budget", "20s"], ["notify", "--budget", "20s"], ["sweep-stale"],
        ["outbox", "prune", "--older-than", "30d"]]

BULK = """
INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status,
                                 assigned_at, next_poll_at, last_event_at)
SELECT gen_random_uuid()::text, %(pool)s, 'bulk-' || g, %(carrier)s, 1,
       (ARRAY['delivered','delivered','in_transit','out_for_delivery','pending','cancelled'])[1 + g %% 6],
       now() - make_interval(hours => g %% 500),
       CASE WHEN g %% %(due_every)s = 0 THEN '-infinity'::timestamptz ELSE now() + interval '1 hour' END,
       now() - make_interval(hours => g %% 500)
FROM generate_series(1, %(n)s) AS g
"""
# Each phase starts with the same share of shipments due (the previous phase's polls moved theirs
# into the future), so phases with different host counts do the same polling work.
RESET_DUE = """
UPDATE sequencing.tracking SET next_poll_at = '-infinity', claimed_until = NULL
WHERE order_id LIKE 'bulk-%%' AND substr(order_id, 6)::bigint %% %(due_every)s = 0
  AND next_poll_at > now()
"""
SIZES = """
SELECT pg_database_size(current_database()),
       (SELECT json_object_agg(relname, pg_total_relation_size(c.oid)) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sequencing' AND c.relkind = 'r')
"""


def host(args, url: str, name: str, out: Path) -> None:
    env = {**os.environ, "TRACKCTL_DATABASE_URL": url}
    exe = str(Path(sys.executable).with_name("trackctl"))
    times = []
    for _ in range(args.rounds):
        for job in JOBS:
            t = time.monotonic()
            r = subprocess.run([exe, *job], env=env, capture_output=True, timeout=600)
            times.append({"job": job[0] if job[0] != "outbox" else "outbox prune", "seconds": time.monotonic() - t,
                          "rc": r.returncode, "err": r.stderr.decode()[-300:] if r.returncode else ""})
    out.write_text(json.dumps(times))


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed_claims(conn, prefix: str, count: int, stop: threading.Event | None = None) -> list[float]:
    """Time `count` single claims 5 ms apart (fewer if `stop` is set first); return milliseconds."""
    latencies = []
    for n in range(count):
        if stop is not None and stop.is_set():
            break
        t = time.perf_counter()
        assign(conn, f"{prefix}-{n}", "sim")
        latencies.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    return latencies


def phase(args, conn, url: str, hosts: int, tag: str) -> dict:
    """N hosts x R rounds of the cron jobs while claims are timed; print the phase, return its summary."""
    conn.execute(RESET_DUE, {"due_every": max(1, int(1 / args.due))})
    size0, tables0 = conn.execute(SIZES).fetchone()
    tmp = Path(tempfile.mkdtemp())
    procs = []
    started = time.monotonic()
    for i in range(hosts):
        p = threading.Thread(target=host, args=(args, url, f"h{i}", tmp / f"h{i}.json"))
        p.start()
        procs.append(p)
    time.sleep(1.0)
    latencies = timed_claims(conn, f"claim-{tag}", args.claims)
    for p in procs:
        p.join()
    wall = time.monotonic() - started
    size1, tables1 = conn.execute(SIZES).fetchone()

    runs = [r for i in range(hosts) for r in json.loads((tmp / f"h{i}.json").read_text())]
    print(f"\n{hosts} hosts x {args.rounds} rounds of the crontab jobs, wall {wall:.1f} s "
          f"(shipments {args.shipments}, due for polling {int(args.shipments * args.due)})")
    print(f"{'job':<14}{'runs':>6}{'failed':>8}{'median s':>10}{'max s':>8}")
    medians = {}
    for job in ["refill", "poll", "notify", "sweep-stale", "outbox prune"]:
        rs = [r for r in runs if r["job"] == job]
        secs = [r["seconds"] for r in rs]
        bad = [r for r in rs if r["rc"] != 0]
        medians[job] = statistics.median(secs)
        print(f"{job:<14}{len(rs):>6}{len(bad):>8}{medians[job]:>10.2f}{max(secs):>8.2f}")
        for r in bad[:2]:
            print("   ", r["rc"], r["err"].strip()[:200])
    print(f"single claims while the jobs ran: {len(latencies)}; p50 {pct(latencies, 50):.2f} ms, "
          f"p95 {pct(latencies, 95):.2f} ms, p99 {pct(latencies, 99):.2f} ms, max {max(latencies):.2f} ms")
    print(f"database size: {size0 / 2**20:.0f} MiB before, {size1 / 2**20:.0f} MiB after "
          f"(+{(size1 - size0) / 2**20:.1f} MiB)")
    for name in sorted(tables1, key=lambda k: -tables1[k])[:6]:
        print(f"  {name:<22}{tables0.get(name, 0) / 2**20:>9.1f} MiB -> {tables1[name] / 2**20:>9.1f} MiB")
    return {"hosts": hosts, "wall": wall, "failed": sum(r["rc"] != 0 for r in runs), "runs": len(runs),
            "p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99),
            "growth": (size1 - size0) / 2**20, **medians}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", default="4", help="hosts, or a comma list (1,2,4,8): one phase each, same database")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shipments", type=int, default=1_000_000)
    ap.add_argument("--due", type=float, default=0.002, help="fraction of shipments due for polling")
    ap.add_argument("--claims", type=int, default=2000, help="single claims timed while the jobs run")
    ap.add_argument("--database-url")
    args = ap.parse_args()
    try:
        host_counts = [int(h) for h in args.hosts.split(",")]
    except ValueError:
        ap.error("--hosts takes a number or a comma list of numbers")
    home = None
    if args.database_url:
        url = args.database_url
    else:
        home = Path(tempfile.mkdtemp(prefix="trackctl-bench-scale-"))
        url = embedded.ensure_running(home)
    conn = db.open_connection(url)
    db.migrate(conn)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        carrier = add_carrier(conn, "sim", adapter="simulator", options={"step": "30s"}, max_concurrency=16)
        webhooks.add_subscriber(conn, f"http://127.0.0.1:{sink.server_address[1]}/", secret=webhooks.generate_secret())
        conn.execute("UPDATE sequencing.pool SET target = 5000 WHERE name = 'default'")
        pool = conn.execute("SELECT id FROM sequencing.pool WHERE name = 'default'").fetchone()[0]
        t = time.monotonic()
        conn.execute(BULK, {"pool": pool, "carrier": carrier.id, "n": args.shipments,
                            "due_every": max(1, int(1 / args.due))})
        conn.execute("VACUUM ANALYZE")
        setup = time.monotonic() - t
        size0, _ = conn.execute(SIZES).fetchone()
        print(f"setup: {args.shipments} shipments bulk-created in {setup:.1f} s; database {size0 / 2**20:.0f} MiB")
        subprocess.run([str(Path(sys.executable).with_name("trackctl")), "refill"],
                       env={**os.environ, "TRACKCTL_DATABASE_URL": url}, capture_output=True, check=True)
        idle = timed_claims(conn, "claim-idle", min(args.claims, 500))
        print(f"single claims with no job running (the limit): {len(idle)}; p50 {pct(idle, 50):.2f} ms, "
              f"p95 {pct(idle, 95):.2f} ms, p99 {pct(idle, 99):.2f} ms")

        summaries = [phase(args, conn, url, hosts, f"h{hosts}") for hosts in host_counts]

        polled = conn.execute("SELECT count(*) FROM sequencing.tracking WHERE last_polled_at IS NOT NULL").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM sequencing.outbox").fetchone()[0]
        done = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'done'").fetchone()[0]
        print(f"\nall phases: shipments polled {polled}; outbox events {events}; deliveries done {done}")
        print(f"\nsummary (claim latency as a ratio of the idle p50 {pct(idle, 50):.2f} ms):")
        print(f"{'hosts':>5}{'wall s':>8}{'failed':>8}{'p50 ms':>8}{'x idle':>7}{'p95 ms':>8}{'p99 ms':>8}"
              f"{'poll s':>8}{'notify s':>9}{'refill s':>9}{'+MiB':>7}")
        for r in summaries:
            print(f"{r['hosts']:>5}{r['wall']:>8.1f}{r['failed']:>5}/{r['runs']:<2}{r['p50']:>8.2f}"
                  f"{r['p50'] / pct(idle, 50):>7.1f}{r['p95']:>8.2f}{r['p99']:>8.2f}{r['poll']:>8.2f}"
                  f"{r['notify']:>9.2f}{r['refill']:>9.2f}{r['growth']:>7.1f}")
        print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        sink.shutdown()
        conn.close()
        if home is not None:
            embedded.stop(home)


if __name__ == "__main__":
    main()
