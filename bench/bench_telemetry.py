#!/usr/bin/env python
"""Telemetry benchmark (issue 15): what tracing costs when it is off, and when it is on.

1. One `trackctl assign ORDER CARRIER` process with telemetry off (no OTEL_* variable) vs the
   bare `python -c` claim, as in bench_foundation.py's measure 3 (median of --runs each,
   interleaved). Target as there: trackctl / bare <= 2.0; the figure to compare is the one
   recorded before issue 15 in docs/BENCHMARKS.md. It also counts the opentelemetry modules such a
   process imports (must be 0).
2. `trackctl poll --all` over --shipments shipments of an http-json carrier on 127.0.0.1
   (--latency s per request, --concurrency at once), untraced vs traced to a real OTLP/HTTP
   receiver on 127.0.0.1 (tests/otlp_receiver.py), --runs runs each, interleaved, medians. The
   ratio traced / untraced is printed (target <= 1.5: tracing a run must not make it much slower).
   For information, the same traced run with the collector down (a closed port).

    python bench/bench_telemetry.py [--runs N] [--shipments N] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory and removed at
the end.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from carrier_server import CarrierServer  # noqa: E402
from otlp_receiver import OtlpReceiver, closed_port  # noqa: E402

import psycopg  # noqa: E402
from bench_foundation import bench_single  # noqa: E402
from scratch import say, scratch_database, trackctl_command  # noqa: E402
from trackctl.carriers import add_carrier  # noqa: E402

OTEL_MODULES = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("otel-modules=%d\\n" % sum(m.startswith("opentelemetry") for m in sys.modules)))
sys.argv = ["trackctl", "--database-url", sys.argv[1], "assign", "otel-count", "single"]
from trackctl.cli import main
main()
"""
POLL_TARGET = 1.5


def opentelemetry_modules(url: str, work: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", OTEL_MODULES, url], capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return int(proc.stderr.rsplit("otel-modules=", 1)[1].split()[0])


def run_poll(url: str, work: Path, otel: dict) -> tuple[float, int]:
    env = {**os.environ, "TRACKCTL_DATABASE_URL": url, "TRACKCTL_HOME": str(work / "home"), **otel}
    started = time.perf_counter()
    proc = subprocess.run(trackctl_command() + ["poll", "--carrier", "bench", "--all", "--budget", "600s",
                                                "--format", "json"], env=env, cwd=work, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"trackctl poll failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    (summary,) = json.loads(proc.stdout)
    return elapsed, summary["polled"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per side (assign: 3x this)")
    parser.add_argument("--shipments", type=int, default=200, help="shipments each poll run fetches")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the carrier takes per request")
    parser.add_argument("--concurrency", type=int, default=4, help="the carrier's max_concurrency")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]  # measure 1 is about telemetry off; measure 2 sets its own

    server = CarrierServer("http-json", latency=opts.latency).start()
    try:
        with scratch_database(opts.database_url, "trackctl-bench-otel-") as scratch, OtlpReceiver() as otlp:
            conn, url, work = scratch.conn, scratch.url, scratch.work
            say(f"{3 * opts.runs} single assign processes per side, telemetry off")
            single, _ = bench_single(conn, url, 3 * opts.runs, work)
            modules = opentelemetry_modules(url, work)

            add_carrier(conn, "bench", adapter="http-json", url=server.url, max_concurrency=opts.concurrency, timeout=10)
            from trackctl.assign import assign
            from trackctl.pools import refill

            conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (opts.shipments + 10,))
            refill(conn)
            for i in range(opts.shipments):
                code = assign(conn, f"otel-bench-{i}", "bench").code
                server.history(code, [{"id": f"{code}-1", "status": "in_transit", "occurred_at": "2026-11-20T10:00:00Z",
                                       "description": "hub", "location": "Cajamar, SP"}])
            conn.execute("VACUUM ANALYZE sequencing.tracking")
            traced_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url}
            down_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
            run_poll(url, work, {})  # warm-up
            plain, traced, down = [], [], []
            spans_before = 0
            say(f"{opts.runs} poll runs per side over {opts.shipments} shipments")
            for i in range(opts.runs):
                order = [("plain", {}), ("traced", traced_env)] if i % 2 == 0 else [("traced", traced_env), ("plain", {})]
                for kind, env in order:
                    elapsed, polled = run_poll(url, work, env)
                    assert polled == opts.shipments, polled
                    (plain if kind == "plain" else traced).append(elapsed)
                if i < 3:
                    down.append(run_poll(url, work, down_env)[0])
            spans = len(otlp.spans()) - spans_before
    finally:
        server.stop()

    p, t = statistics.median(plain), statistics.median(traced)
    ratio = t / p
    print()
    print("trackctl telemetry benchmark (issue 15)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  --runs {opts.runs} --shipments {opts.shipments} --latency {opts.latency} --concurrency {opts.concurrency}")
    print()
    print(f"{single.label}, telemetry off: {single.product} vs {single.baseline}, ratio {single.ratio:.2f} "
          f"(target {single.target}) {'PASS' if single.ok else 'FAIL'}")
    print(f"  opentelemetry modules imported by that process: {modules} {'PASS' if modules == 0 else 'FAIL'}")
    print(f"poll --all over {opts.shipments} shipments (median of {opts.runs}): untraced {p:.2f} s, traced {t:.2f} s, "
          f"ratio traced/untraced {ratio:.2f} (target <= {POLL_TARGET}) {'PASS' if ratio <= POLL_TARGET else 'FAIL'}")
    print(f"  spans received per traced run: {spans / opts.runs:.0f}")
    print(f"  traced with the collector down (median of {len(down)}): {statistics.median(down):.2f} s, "
          f"{statistics.median(down) - p:+.2f} s against untraced")
    return 0 if single.ok and modules == 0 and ratio <= POLL_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
