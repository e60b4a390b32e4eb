#!/usr/bin/env python
"""Server CPU of issue 14's rows 4 and 5: what the database process itself spends per assignment
and per refilled code, trackctl against the issue's minimal SQL, in one run on one server.

Wall-clock ratios swing with the other work on a shared machine; the CPU time of the server
process serving a connection (utime + stime of /proc/<backend pid>/stat, read before and after)
moves much less. This script measures, on one connection:

- the minimal SQL of bench_assign.py (COPY orders into a temporary table, one claim statement
  with its events) for --rows orders in chunks of --chunk, one transaction each;
- `trackctl.assign_batch.assign_lines` for as many lines, chunk for chunk as `assign --batch`
  does, with its server CPU split by statement (the rest is COPY and commits);
- raw COPY of --rows uuids into the minimal refill table, and `trackctl.pools.refill_pool` of as
  many codes;

and prints µs per row and the ratios (minimal / trackctl: the same direction as the wall-clock
rows, higher is better). Runs --runs times, alternating, and prints each run and the medians.

    .venv/bin/python bench/bench_assign_cpu.py [--rows 50000] [--chunk 5000] [--runs 3]

Needs to read /proc of the server's processes: the server must run on this machine (the
embedded one started here does).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import uuid

import psycopg

from bench_assign import MINIMAL_CLAIM, MINIMAL_COPY, MINIMAL_PREFILL, MINIMAL_REFILL_COPY, MINIMAL_RESET, MINIMAL_SCHEMA, MINIMAL_TEMP
from bench_foundation import PREFILL, checkpoint, make_carrier, vacuum
from scratch import say, scratch_database
from trackctl.assign_batch import assign_lines
from trackctl.pools import create_pool, refill_pool

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the server process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class StatementCpu:
    """Server CPU per statement of the connection, by the statement's first line."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn, self.pid = conn, conn.info.backend_pid
        self.by_statement: collections.Counter[str] = collections.Counter()
        self._execute = None

    def __enter__(self) -> "StatementCpu":
        original = self._execute = psycopg.Connection.execute
        watched, pid, by_statement = self.conn, self.pid, self.by_statement

        def execute(conn, query, params=None, **kw):
            if conn is not watched:
                return original(conn, query, params, **kw)
            before = server_cpu(pid)
            cur = original(conn, query, params, **kw)
            rows = cur.fetchall() if cur.description is not None else None  # all of the work, here
            by_statement[str(query).strip().splitlines()[0][:70]] += server_cpu(pid) - before
            if rows:
                cur.scroll(0, mode="absolute")  # the caller reads the rows again
            return cur

        psycopg.Connection.execute = execute
        return self

    def __exit__(self, *exc) -> None:
        psycopg.Connection.execute = self._execute


def minimal_batch(conn: psycopg.Connection, rows: int, chunk: int, carrier: str, tag: str) -> float:
    conn.execute(MINIMAL_RESET)
    conn.execute(MINIMAL_PREFILL, (rows + 1000,))
    conn.execute("VACUUM ANALYZE bench_minimal.codes")
    checkpoint(conn)
    pid = conn.info.backend_pid
    start = server_cpu(pid)
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        with conn.transaction():
            conn.execute(MINIMAL_TEMP)
            with conn.cursor() as cur:
                with cur.copy(MINIMAL_COPY) as copy:
                    copy.write("".join(f"{i}\tmin-{tag}-{first + i}\n" for i in range(n)))
                cur.execute(MINIMAL_CLAIM, {"n": n, "carrier": carrier})
                assert len(cur.fetchall()) == n
    return server_cpu(pid) - start


def trackctl_batch(conn: psycopg.Connection, rows: int, chunk: int, carrier: str, pool_id: int,
                   tag: str) -> tuple[float, collections.Counter[str]]:
    conn.execute(PREFILL, (pool_id, rows + 1000))
    vacuum(conn)
    checkpoint(conn)
    pid = conn.info.backend_pid
    records = ((i + 1, {"order_id": f"cli-{tag}-{i}", "carrier": carrier}) for i in range(rows))
    with StatementCpu(conn) as statements:
        start = server_cpu(pid)
        done = sum(1 for o in assign_lines(conn, records, chunk) if o.assignment is not None)
        spent = server_cpu(pid) - start
    assert done == rows, done
    return spent, statements.by_statement


def minimal_refill(conn: psycopg.Connection, rows: int) -> float:
    conn.execute(MINIMAL_RESET)
    checkpoint(conn)
    raw = os.urandom(16 * rows)
    text = "\n".join(str(uuid.UUID(bytes=raw[i:i + 16], version=4)) for i in range(0, 16 * rows, 16)) + "\n"
    pid = conn.info.backend_pid
    start = server_cpu(pid)
    with conn.transaction(), conn.cursor() as cur, cur.copy(MINIMAL_REFILL_COPY) as copy:
        copy.write(text)
    return server_cpu(pid) - start


def trackctl_refill(conn: psycopg.Connection, rows: int, tag: str) -> float:
    pool = create_pool(conn, f"cpu-refill-{tag}", target=rows)
    checkpoint(conn)
    pid = conn.info.backend_pid
    start = server_cpu(pid)
    result = refill_pool(conn, pool)
    spent = server_cpu(pid) - start
    assert result.generated == rows, result
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="orders assigned and codes refilled per run")
    parser.add_argument("--chunk", type=int, default=5_000, help="lines per transaction, both sides (assign --batch: 5000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a scratch database on this machine (default: an embedded one)")
    opts = parser.parse_args()
    per = 1e6 / opts.rows
    batch, refill = [], []
    with scratch_database(opts.database_url, "trackctl-bench-assign-cpu-") as scratch:
        conn = scratch.conn
        conn.execute(MINIMAL_SCHEMA)
        print(f"server CPU per row, {opts.rows} rows, chunks of {opts.chunk}; {scratch.where}, PostgreSQL "
              f"{scratch.server_version}; load average at start {os.getloadavg()[0]:.2f}")
        for run in range(1, opts.runs + 1):
            tag = f"r{run}"
            pool, carrier = make_carrier(conn, f"cpu-{tag}")
            say(f"run {run}: minimal SQL, then trackctl's batch")
            raw = minimal_batch(conn, opts.rows, opts.chunk, carrier.name, tag)
            ours, statements = trackctl_batch(conn, opts.rows, opts.chunk, carrier.name, pool.id, tag)
            batch.append((raw, ours))
            say(f"run {run}: raw COPY, then trackctl's refill")
            raw_r, ours_r = minimal_refill(conn, opts.rows), trackctl_refill(conn, opts.rows, tag)
            refill.append((raw_r, ours_r))
            print(f"run {run} (load {os.getloadavg()[0]:.2f}): batch {ours * per:.1f} µs/line against minimal "
                  f"{raw * per:.1f} ({raw / ours:.2f}); refill {ours_r * per:.1f} µs/code against raw COPY "
                  f"{raw_r * per:.1f} ({raw_r / ours_r:.2f})")
            for text, cpu in statements.most_common(4):
                print(f"    {cpu * per:5.1f} µs/line  {text}")
    ratios_b = [r / o for r, o in batch]
    ratios_r = [r / o for r, o in refill]
    print(f"median: batch server CPU minimal/trackctl {statistics.median(ratios_b):.2f} "
          f"({statistics.median(o for _, o in batch) * per:.1f} µs/line); refill raw/trackctl "
          f"{statistics.median(ratios_r):.2f} ({statistics.median(o for _, o in refill) * per:.1f} µs/code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
