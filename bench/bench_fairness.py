#!/usr/bin/env python
"""Fair webhook delivery benchmark (issue 11.3): a healthy subscriber's rate beside bad ones, as a ratio.

Each run makes --events outbox events and runs `trackctl notify --concurrency C` (a real
subprocess) twice:

1. alone: one healthy subscriber, a local endpoint that answers every POST with 204 after 20 ms
   (keep-alive, in its own process);
2. beside: the same healthy subscriber plus a black hole (a process that accepts connections and
   never answers) and a subscriber whose host does not resolve (a name under the reserved
   `.invalid` TLD: the resolver refuses it at once, without the network). Every event goes to
   all three; each subscriber may have 16 requests in flight, as many as --concurrency.

The healthy subscriber's rate is taken at its endpoint: answered requests divided by the time
from its first to its last answer (the run itself lasts longer: the black hole's requests end
only at their timeout). Ratio: rate beside / rate alone, both measured in the same run; the
bound C / 20 ms is printed as the raw limit. Target: ratio >= 0.8. Median of --runs.

    .venv/bin/python bench/bench_fairness.py [--events N] [--runs R] [--concurrency C] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import psycopg

from bench_outbox import FILL  # the same events as the outbox benchmark
from scratch import ENDPOINT_LATENCY, say, scratch_database, start_endpoint, trackctl_command
from trackctl import webhooks

LATENCY = ENDPOINT_LATENCY
UNRESOLVABLE = "http://hooks.bench-fairness.invalid/hooks"


def _black_hole_process(port_out, accepted, ready) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port_out.value = sock.getsockname()[1]
    ready.set()
    held = []
    while True:
        client, _ = sock.accept()
        held.append(client)  # never read, never answered, never closed
        accepted.value += 1


def _start(target, *shared) -> tuple[multiprocessing.Process, int]:
    port, ready = multiprocessing.Value("i", 0), multiprocessing.Event()
    proc = multiprocessing.Process(target=target, args=(port, *shared, ready), daemon=True)
    proc.start()
    if not ready.wait(30):
        raise SystemExit("an endpoint process did not start")
    return proc, port.value


def one_run(conn: psycopg.Connection, env: dict, n: int, concurrency: int, beside: bool) -> dict:
    conn.execute("TRUNCATE sequencing.outbox, sequencing.webhook_subscriber CASCADE")
    secret = webhooks.generate_secret()
    accepted = multiprocessing.Value("i", 0)
    healthy, port, stats = start_endpoint(LATENCY)
    procs = [healthy]
    try:
        webhooks.add_subscriber(conn, f"http://127.0.0.1:{port}/hooks", secret=secret, max_in_flight=16)
        if beside:
            hole, hole_port = _start(_black_hole_process, accepted)
            procs.append(hole)
            webhooks.add_subscriber(conn, f"http://127.0.0.1:{hole_port}/hooks", secret=secret, max_in_flight=16)
            webhooks.add_subscriber(conn, UNRESOLVABLE, secret=secret, max_in_flight=16)
        conn.execute(FILL, (n,))
        conn.execute("VACUUM ANALYZE sequencing.outbox, sequencing.webhook_delivery")
        start = time.perf_counter()
        proc = subprocess.run(trackctl_command() + ["notify", "--concurrency", str(concurrency), "--timeout", "10s",
                                                    "--format", "json"], capture_output=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"trackctl notify failed: {proc.stderr.decode()}")
        report = json.loads(proc.stdout)
        answered, first, last = int(stats[0]), stats[2], stats[3]
        if answered != n:
            raise SystemExit(f"the healthy endpoint answered {answered} of {n} (report {report})")
        return {"rate": n / max(last - first, 1e-6), "wall": wall, "report": report, "black_hole_connections":
                accepted.value}
    finally:
        for p in procs:
            p.terminate()
            p.join(10)


def dns_check() -> float:
    """Seconds the resolver takes to refuse the .invalid name (it must fail fast, without the network)."""
    host = UNRESOLVABLE.split("/")[2]
    start = time.perf_counter()
    try:
        socket.getaddrinfo(host, 80)
    except socket.gaierror:
        return time.perf_counter() - start
    raise SystemExit(f"{host} resolved: this machine's resolver answers for .invalid, the benchmark needs it not to")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events delivered to each subscriber per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (median)")
    parser.add_argument("--concurrency", type=int, default=16, help="notify --concurrency")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()

    lookup = dns_check()
    with scratch_database(opts.database_url, "trackctl-bench-fairness-") as scratch:
        env = {**os.environ, "TRACKCTL_DATABASE_URL": scratch.url, "TRACKCTL_LOG_FORMAT": "text"}
        alone, beside = [], []
        for i in range(opts.runs):
            say(f"run {i + 1}/{opts.runs}: alone")
            alone.append(one_run(scratch.conn, env, opts.events, opts.concurrency, beside=False))
            say(f"run {i + 1}/{opts.runs}: beside a black hole and an unresolvable host")
            beside.append(one_run(scratch.conn, env, opts.events, opts.concurrency, beside=True))
        rate_alone = statistics.median(r["rate"] for r in alone)
        rate_beside = statistics.median(r["rate"] for r in beside)
        ratio = rate_beside / rate_alone
        bound = opts.concurrency / LATENCY
        print(f"fairness benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, PostgreSQL "
              f"{scratch.server_version} ({scratch.where})")
        print(f"resolver refuses the .invalid name in {lookup * 1000:.1f} ms")
        print(f"healthy subscriber, {opts.events} events, endpoint 20 ms, --concurrency {opts.concurrency}; "
              f"raw limit {bound:.0f}/s (C / 20 ms)")
        print(f"  alone:  {rate_alone:7.0f}/s  ({rate_alone / bound:.2f} of the limit)   runs: "
              + ", ".join(f"{r['rate']:.0f}" for r in alone))
        print(f"  beside: {rate_beside:7.0f}/s  ({rate_beside / bound:.2f} of the limit)   runs: "
              + ", ".join(f"{r['rate']:.0f}" for r in beside))
        last = beside[-1]
        print(f"  beside, last run: wall {last['wall']:.1f} s (the black hole's requests end at their 10 s "
              f"timeout), black-hole connections {last['black_hole_connections']}, report {last['report']}")
        verdict = "PASS" if ratio >= 0.8 else "FAIL"
        print(f"ratio beside / alone: {ratio:.2f}   target >= 0.8   {verdict}")
        return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
