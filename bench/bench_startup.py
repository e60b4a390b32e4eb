#!/usr/bin/env python
"""Start-up and co-process benchmark (issue 14, rows 1 and 2), ratios against raw limits measured in
the same run:

1. one `trackctl assign ORDER CARRIER` process end to end vs `python -c` that imports psycopg,
   connects and runs the same claim statement (median of --runs each, interleaved so that drifting
   load falls on both alike). Target: trackctl / bare <= 1.2.
2. a line written to a running `trackctl assign --batch --format csv` and its answer read back, vs
   one claim through `trackctl.assign.assign` on an open connection (median of --lines each,
   interleaved). Target: co-process / open connection <= 3.

    .venv/bin/python bench/bench_startup.py [--runs N] [--lines N] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory and removed at
the end. The importtime of one lean `trackctl assign` run is printed for information.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import psycopg

from bench_foundation import PREFILL, bench_process, make_carrier, run_timed, vacuum
from scratch import say, scratch_database, trackctl_command
from trackctl.assign import assign


def bench_coprocess(url: str, carrier: str, lines: int, work) -> tuple[float, float]:
    proc = subprocess.Popen(trackctl_command() + ["--database-url", url, "assign", "--batch", "--format", "csv"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work, bufsize=0)
    answer = proc.stdout
    conn = psycopg.connect(url, autocommit=True)
    piped, direct = [], []
    try:
        for i in range(lines + 5):  # the first few warm both sides up
            start = time.perf_counter()
            proc.stdin.write(f"co-{i},{carrier}\n".encode())
            line = answer.readline()
            elapsed = time.perf_counter() - start
            assert line.startswith(f"co-{i},".encode()), line
            start = time.perf_counter()
            assign(conn, f"open-{i}", carrier)
            open_elapsed = time.perf_counter() - start
            if i >= 5:
                piped.append(elapsed)
                direct.append(open_elapsed)
    finally:
        conn.close()
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    return statistics.median(piped), statistics.median(direct)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="single-assign processes per side")
    parser.add_argument("--lines", type=int, default=300, help="lines written one at a time to the co-process")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()

    with scratch_database(opts.database_url, "trackctl-bench-startup-") as scratch:
        conn, url, work = scratch.conn, scratch.url, scratch.work
        pool, carrier = make_carrier(conn, "startup")
        conn.execute(PREFILL, (pool.id, 2 * opts.runs + 2 * opts.lines + 100))
        vacuum(conn)
        say(f"{opts.runs} single-assign processes per side")
        product, bare, empty = bench_process(url, carrier.name, opts.runs, work)
        say(f"{opts.lines} lines through a running assign --batch, and as many claims on an open connection")
        piped, direct = bench_coprocess(url, carrier.name, opts.lines, work)
        command = trackctl_command()
        importtime = subprocess.run([sys.executable, "-X", "importtime",
                                     *(command[1:] if command[0] == sys.executable else command),
                                     "--database-url", url, "assign", "importtime-probe", carrier.name],
                                    capture_output=True, text=True, cwd=work).stderr
        modules = {ln.split("|")[-1].strip() for ln in importtime.splitlines() if ln.startswith("import time:")}

    rows = [
        ("1 one `trackctl assign` process vs bare python -c (import psycopg, connect, same claim)",
         f"{product * 1e3:.0f} ms", f"{bare * 1e3:.0f} ms", product / bare, "<= 1.2", product / bare <= 1.2),
        ("2 a line through a running `assign --batch` vs one claim on an open connection",
         f"{piped * 1e3:.2f} ms", f"{direct * 1e3:.2f} ms", piped / direct, "<= 3", piped / direct <= 3),
    ]
    print()
    print("trackctl start-up benchmark (issue 14, rows 1 and 2)")
    print(f"  {scratch.where}, PostgreSQL {scratch.server_version}; "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}")
    print(f"  {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  --runs {opts.runs} --lines {opts.lines}")
    print()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'trackctl':>10}  {'raw':>10}  {'ratio':>6}  {'target':>7}  result")
    for label, p, b, ratio, target, ok in rows:
        print(f"{label:<{width}}  {p:>10}  {b:>10}  {ratio:>6.2f}  {target:>7}  {'PASS' if ok else 'FAIL'}")
    print()
    print("for information:")
    print(f"  python -c pass: {empty * 1e3:.0f} ms (median); modules imported by one lean assign: {len(modules)}, "
          f"typer/click/rich/pydantic among them: "
          f"{sorted(m for m in modules if m.split('.')[0] in ('typer', 'click', 'rich', 'pydantic')) or 'none'}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
