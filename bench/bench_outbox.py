#!/usr/bin/env python
"""Outbox benchmark (issue 5): trackctl against the bare work it wraps, as ratios.

1. events: `trackctl events > file` (a real subprocess) streaming --events outbox rows vs
   `COPY (SELECT <the same JSON line> ...) TO STDOUT` of the same rows into a file, on an open
   psycopg connection. Both produce the same bytes. Median of --runs each.
   Target: COPY time / trackctl time >= 0.3.
2. notify: `trackctl notify --concurrency C` (a real subprocess, wall time including start-up)
   delivering --deliveries events to a local endpoint that answers after 20 ms, vs the bound
   its concurrency sets: C requests in flight, each 20 ms, is C / 0.020 deliveries per second.
   Target: achieved rate / bound >= 0.8.

Setup (bulk INSERT ... SELECT of outbox rows, VACUUM ANALYZE) is never timed.

    /tmp/dev/bin/python bench/bench_outbox.py [--events N] [--deliveries N] [--concurrency C] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory and stopped
and removed at the end. A URL must name a scratch database: the benchmark migrates it and
fills its outbox.
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
from pathlib import Path

import psycopg

from scratch import ENDPOINT_LATENCY, say, scratch_database, start_endpoint, trackctl_command
from trackctl import webhooks

LATENCY = ENDPOINT_LATENCY

FILL = """
INSERT INTO sequencing.outbox (type, payload)
SELECT 'tracking.assigned', jsonb_build_object(
    'code', md5(n::text)::uuid::text, 'order_id', 'order-' || n, 'carrier', 'correios', 'pool', 'default',
    'assigned_at', sequencing.rfc3339(now()))
FROM generate_series(1, %s) AS n
"""
COPY_EVENTS = "COPY (SELECT sequencing.event_line(o) FROM sequencing.outbox o ORDER BY o.id) TO STDOUT"


def bench_events(conn: psycopg.Connection, env: dict, n: int, runs: int, work: Path) -> dict:
    conn.execute("TRUNCATE sequencing.outbox CASCADE")
    conn.execute(FILL, (n,))
    conn.execute("VACUUM ANALYZE sequencing.outbox")
    product, baseline = [], []
    out = work / "events.jsonl"
    for _ in range(runs):
        with open(out, "wb") as f:
            start = time.perf_counter()
            proc = subprocess.run(trackctl_command() + ["events"], stdout=f, stderr=subprocess.PIPE, env=env)
            product.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"trackctl events failed: {proc.stderr.decode()}")
        product_size = out.stat().st_size
        with open(out, "wb") as f:
            start = time.perf_counter()
            with conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
                for block in copy:
                    f.write(block)
            baseline.append(time.perf_counter() - start)
        if out.stat().st_size != product_size:
            raise SystemExit(f"trackctl events wrote {product_size} bytes, COPY {out.stat().st_size}")
    with open(out, "rb") as f:
        lines = sum(1 for _ in f)
    if lines != n:
        raise SystemExit(f"expected {n} lines, got {lines}")
    p, b = statistics.median(product), statistics.median(baseline)
    return {"label": f"events: stream {n} rows", "product": f"{p:.3f} s", "baseline": f"{b:.3f} s (COPY)",
            "ratio": b / p, "target": ">= 0.3", "ok": b / p >= 0.3, "bytes": product_size}


def bench_notify(conn: psycopg.Connection, env: dict, n: int, concurrency: int) -> dict:
    conn.execute("TRUNCATE sequencing.outbox, sequencing.webhook_subscriber CASCADE")
    secret = webhooks.generate_secret()
    endpoint, port, stats = start_endpoint(LATENCY)
    try:
        webhooks.add_subscriber(conn, f"http://127.0.0.1:{port}/hooks", secret=secret,
                                max_in_flight=concurrency)
        conn.execute(FILL, (n,))
        conn.execute("VACUUM ANALYZE sequencing.outbox, sequencing.webhook_delivery")
        cpu_before = _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(trackctl_command() + ["notify", "--concurrency", str(concurrency), "--format", "json"],
                              capture_output=True, env=env)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu_before
        if proc.returncode != 0:
            raise SystemExit(f"trackctl notify failed: {proc.stderr.decode()}")
        report = json.loads(proc.stdout)
        if report["delivered"] != n or int(stats[0]) != n:
            raise SystemExit(f"delivered {report['delivered']} of {n} ({int(stats[0])} answered)")
        peak = int(stats[1])
        bare = _bare_client(port, min(n, 4000), concurrency)
    finally:
        endpoint.terminate()
        endpoint.join(10)
    bound = concurrency / LATENCY
    rate = n / wall
    return {"label": f"notify: {n} deliveries, {concurrency} in flight, 20 ms endpoint",
            "product": f"{rate:.0f}/s", "baseline": f"{bound:.0f}/s (bound)", "ratio": rate / bound,
            "target": ">= 0.8", "ok": rate / bound >= 0.8, "wall": wall, "inside": report["seconds"], "peak": peak,
            "inside_ratio": (n / report["seconds"]) / bound, "cpu": cpu, "bare": bare, "bare_ratio": bare / bound}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bare_client(port: int, n: int, concurrency: int) -> float:
    """Requests per second of a bare http.client loop (no database, no signing) with the same concurrency."""
    import http.client
    import threading

    body = b'{"id":"evt_01JD3Q8Z8X7K2M4N5P6R7S8T9V","type":"tracking.assigned","data":{}}' * 3
    left = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                if next(left, None) is None:
                    return
            conn.request("POST", "/hooks", body=body, headers={"Content-Type": "application/json"})
            conn.getresponse().read()

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="outbox rows streamed by `trackctl events`")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side of the events comparison")
    parser.add_argument("--deliveries", type=int, default=8_000, help="deliveries made by `trackctl notify`")
    parser.add_argument("--concurrency", type=int, default=16, help="notify --concurrency (and the endpoint's cap)")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()

    with scratch_database(opts.database_url, "trackctl-bench-outbox-") as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
        env.update(TRACKCTL_DATABASE_URL=scratch.url, TRACKCTL_HOME=str(scratch.home))
        say(f"events: {opts.events} rows, {opts.runs} runs per side")
        events = bench_events(scratch.conn, env, opts.events, opts.runs, scratch.work)
        say(f"notify: {opts.deliveries} deliveries")
        notify = bench_notify(scratch.conn, env, opts.deliveries, opts.concurrency)

    results = [events, notify]
    print()
    print("trackctl outbox benchmark (issue 5)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  --events {opts.events} --runs {opts.runs} --deliveries {opts.deliveries} --concurrency {opts.concurrency}")
    print()
    width = max(len(r["label"]) for r in results)
    print(f"{'measure':<{width}}  {'trackctl':>12}  {'raw / bound':>18}  {'ratio':>6}  {'target':>7}  result")
    for r in results:
        print(f"{r['label']:<{width}}  {r['product']:>12}  {r['baseline']:>18}  {r['ratio']:>6.2f}  {r['target']:>7}  "
              f"{'PASS' if r['ok'] else 'FAIL'}")
    print()
    print("for information:")
    print(f"  events output: {events['bytes'] / 1e6:.1f} MB, identical in size to COPY's")
    print(f"  notify: wall {notify['wall']:.2f} s including start-up; {notify['inside']:.2f} s inside the run "
          f"(ratio {notify['inside_ratio']:.2f}); peak concurrent requests at the endpoint {notify['peak']}; "
          f"CPU used by notify {notify['cpu']:.2f} s")
    print(f"  the same endpoint driven by a bare http.client loop (no database, no signing), same concurrency: "
          f"{notify['bare']:.0f}/s, ratio {notify['bare_ratio']:.2f} of the bound: what this machine allows now")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
