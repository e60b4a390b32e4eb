"""Concurrency with real processes: many assigners, simultaneous refills, batch and single mixed.

Every worker is a separate Python (or shell) process against the test database. Each one
connects, says `ready`, and waits for `go` on stdin, so all of them start their work at the
same moment without any sleeping or timing in the test.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import trackctl_command
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import REFILL_LOCK_CLASS, refill, set_target

pytestmark = pytest.mark.slow

WORKER = r"""
import json, sys
from trackctl import db
from trackctl.assign import assign, assign_lines
from trackctl.pools import refill

url, mode, job = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
conn = db.open_connection(url)
print("ready", flush=True)
sys.stdin.readline()
out = []
if mode == "single":
    for order, carrier in job["items"]:
        a = assign(conn, order, carrier)
        out.append([a.order_id, a.carrier, a.code, a.new, a.generated_inline])
elif mode == "batch":
    records = ((n, {"order_id": o, "carrier": c}) for n, (o, c) in enumerate(job["items"], 1))
    for outcome in assign_lines(conn, records, chunk_size=job["chunk"]):
        a = outcome.assignment
        out.append([a.order_id, a.carrier, a.code, a.new, a.generated_inline])
elif mode == "refill":
    out = [[r.pool, r.free_before, r.generated, r.skipped] for r in refill(conn)]
print(json.dumps(out), flush=True)
"""


def run_together(commands: list[list[str]], timeout: float = 120) -> list[str]:
    """Start every command, wait until each prints `ready`, release them all at once; return their stdout."""
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    try:
        for p in procs:
            line = p.stdout.readline()
            assert line == "ready\n", (line, p.stderr.read() if p.poll() is not None else "")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"worker failed with exit {p.returncode}:\n{err}"
            results.append(out)
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def worker(db_url: str, tmp_path: Path, mode: str, **job) -> list[str]:
    path = tmp_path / f"job-{mode}-{len(list(tmp_path.glob('job-*')))}.json"
    path.write_text(json.dumps(job))
    return [sys.executable, "-c", WORKER, db_url, mode, str(path)]


def shell(cli, script: str, *args: str) -> list[str]:
    """A bash process running `script` with the installed trackctl on PATH, against the test database."""
    bin_dir = str(Path(trackctl_command()[0]).parent)
    env = [f"{k}={v}" for k, v in cli.env.items() if k.startswith("TRACKCTL_")]
    return ["env", f"PATH={bin_dir}:/usr/bin:/bin", *env, "bash", "-c", script, *args]


def db_assignments(conn) -> list[tuple[str, str, str]]:
    return conn.execute("SELECT t.order_id, c.name, t.tracking_id FROM sequencing.tracking t "
                        "JOIN sequencing.carrier c ON c.id = t.freightcarrier_id").fetchall()


def free_codes(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NULL")}


def check_one_code_per_key(conn, reports: list[list]) -> tuple[dict, int]:
    """Assert the database and the workers agree: one code per (order, carrier), no code twice."""
    rows = db_assignments(conn)
    by_key = {(o, c): code for o, c, code in rows}
    assert len(by_key) == len(rows), "an (order, carrier) has two codes"
    codes = Counter(code for _, _, code in rows)
    assert [c for c, n in codes.items() if n > 1] == [], "a code was given twice"
    new_per_key: Counter = Counter()
    inline = 0
    for order, carrier, code, new, generated_inline in reports:
        assert by_key[(order, carrier)] == code, (order, carrier, code)
        new_per_key[(order, carrier)] += new
        inline += generated_inline
    assert set(new_per_key) == set(by_key)
    assert {k: n for k, n in new_per_key.items() if n != 1} == {}, "a key was reported new zero or several times"
    return by_key, inline


@pytest.fixture
def big_pool(conn) -> set:
    """Carriers correios (3) and jadlog (7) on a default pool refilled to 3 000; return its free codes."""
    add_carrier(conn, "correios", 3)
    add_carrier(conn, "jadlog", 7)
    set_target(conn, "default", 3000)
    refill(conn)
    return free_codes(conn)


def test_eight_assigning_processes_never_share_a_code(conn, db_url, tmp_path, big_pool):
    before = big_pool
    shared = [(f"shared-{i}", "correios" if i % 2 else "jadlog") for i in range(60)]
    commands = []
    for w in range(8):
        own = [(f"w{w}-{i}", "correios" if i % 3 else "jadlog") for i in range(120)]
        items = own + shared
        random.Random(w).shuffle(items)
        commands.append(worker(db_url, tmp_path, "single", items=items))
    reports = [row for out in run_together(commands) for row in json.loads(out)]
    assert len(reports) == 8 * 180

    by_key, inline = check_one_code_per_key(conn, reports)
    assert len(by_key) == 8 * 120 + 60  # every order got exactly one code
    assert inline == 0  # the pool never ran dry, so every code came from it
    after = free_codes(conn)
    assert len(after) == len(before) - len(by_key)
    assert after == before - set(by_key.values())
    assert set(by_key.values()) <= before


def test_eight_trackctl_processes_assigning_the_same_order_print_one_code(cli, conn):
    add_carrier(conn, "correios", 3)
    refill(conn)
    script = "echo ready; read go; for o in same w$0; do trackctl assign $o correios || exit 1; done"
    commands = [shell(cli, script, str(w)) for w in range(8)]
    outputs = [out.splitlines() for out in run_together(commands)]
    assert all(len(lines) == 2 for lines in outputs), outputs
    assert len({lines[0] for lines in outputs}) == 1  # all eight printed the same code for order "same"
    by_key = {(o, c): code for o, c, code in db_assignments(conn)}
    assert len(by_key) == 1 + 8
    for w, lines in enumerate(outputs):
        assert lines == [by_key[("same", "correios")], by_key[(f"w{w}", "correios")]]
    assert len(set(by_key.values())) == 9
    assert len(free_codes(conn)) == 200 - 9


@pytest.mark.parametrize("target", [200, 4000])
def test_two_refills_at_the_same_moment_leave_exactly_the_target_free(conn, db_url, tmp_path, target):
    add_carrier(conn, "correios", 3)
    set_target(conn, "default", target)
    taken = 0
    for round_ in range(4):
        reports = [json.loads(out) for out in run_together(
            [worker(db_url, tmp_path, "refill") for _ in range(2)])]
        generated = sum(r[0][2] for r in reports)
        assert len(free_codes(conn)) == target, reports
        assert generated == (target if round_ == 0 else taken), reports
        taken = 7 + 13 * round_
        for i in range(taken):  # make a shortfall for the next round
            assign(conn, f"r{round_}-{i}", "correios")


def test_two_trackctl_refills_at_the_same_moment_leave_exactly_the_target_free(cli, conn):
    set_target(conn, "default", 3000)
    commands = [shell(cli, "echo ready; read go; trackctl refill --format json") for _ in range(2)]
    reports = [json.loads(out) for out in run_together(commands)]
    assert len(free_codes(conn)) == 3000
    assert sum(r["generated"] for report in reports for r in report) == 3000, reports


def test_a_refill_skips_a_pool_another_refill_is_filling(conn, db_url, tmp_path):
    pool_id = conn.execute("SELECT id FROM sequencing.pool WHERE name = 'default'").fetchone()[0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (REFILL_LOCK_CLASS, pool_id))
        [out] = run_together([worker(db_url, tmp_path, "refill")])
        assert json.loads(out) == [["default", -1, 0, True]]
    assert free_codes(conn) == set()


def test_batch_and_single_assigns_mixed_on_overlapping_orders(conn, db_url, tmp_path, big_pool):
    before = big_pool
    keys = [(f"o{i}", "correios" if i % 2 else "jadlog") for i in range(400)]
    commands = []
    for w in range(3):
        items = list(keys)
        random.Random(100 + w).shuffle(items)
        commands.append(worker(db_url, tmp_path, "batch", items=items, chunk=25 + 10 * w))
    for w in range(3):
        items = list(keys[:150])
        random.Random(200 + w).shuffle(items)
        commands.append(worker(db_url, tmp_path, "single", items=items))
    outputs = run_together(commands)
    reports = [row for out in outputs for row in json.loads(out)]
    assert len(reports) == 3 * 400 + 3 * 150

    by_key, inline = check_one_code_per_key(conn, reports)
    assert set(by_key) == set(keys)
    # Codes come from the pool, or (when every free code was locked by others) are made inline.
    after = free_codes(conn)
    from_pool = set(by_key.values()) & before
    assert len(from_pool) + inline == len(by_key)
    assert after == before - from_pool
    assert len(after) == len(before) - len(by_key) + inline


def test_concurrent_batches_on_overlapping_orders_in_different_orders(conn, db_url, tmp_path):
    # Each batch claims its chunk's keys in its own order, so two batches can deadlock on the
    # unique index; the loser must retry rather than fail.
    add_carrier(conn, "correios", 3)
    set_target(conn, "default", 2000)
    refill(conn)
    keys = [(f"o{i}", "correios") for i in range(500)]
    commands = []
    for w in range(4):
        items = list(keys)
        random.Random(300 + w).shuffle(items)
        commands.append(worker(db_url, tmp_path, "batch", items=items, chunk=100))
    reports = [row for out in run_together(commands) for row in json.loads(out)]
    assert len(reports) == 4 * 500
    by_key, inline = check_one_code_per_key(conn, reports)
    assert set(by_key) == set(keys)
    assert len(free_codes(conn)) == 2000 - len(keys) + inline
