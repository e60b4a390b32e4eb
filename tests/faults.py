"""Shared pieces of the fault suite (tests/test_faults_*.py): processes started, waited for and
killed with SIGKILL; polling for progress; what the database holds after a fault.

Random fault points come from one seed per test (the `rng` fixture), printed at the start of the
test (pytest shows it with the failure) and part of every assertion message; rerun a failure
with TRACKCTL_FAULT_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import tempfile
import time

import pytest
from conftest import trackctl_command

@pytest.fixture
def rng():
    seed = int(os.environ.get("TRACKCTL_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed: TRACKCTL_FAULT_SEED={seed}")
    r = random.Random(seed)
    r.seed_value = seed
    return r


def start(cli, *args: str, env_extra: dict | None = None) -> subprocess.Popen:
    # Output goes to files: a pipe nobody reads would block the process (and hide the fault).
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(trackctl_command() + list(args), env={**cli.env, **(env_extra or {})},
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    proc.out_file, proc.err_file = out, err
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    """Wait for the process (a hang fails the test) and return exit code, stdout, stderr."""
    proc.wait(timeout=timeout)
    texts = []
    for f in (proc.out_file, proc.err_file):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    return proc.returncode, texts[0], texts[1]


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL the process; return True if it was still running (the kill hit it mid-run)."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    finish(proc, 60)
    return alive


def wait_for(predicate, timeout: float = 60, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


def backend_busy(conn, dbname: str, prefix: str, *, any_state: bool = False) -> bool:
    """True while another trackctl session of the database runs a statement starting with `prefix`
    (with `any_state`: while one is connected at all)."""
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                        "AND application_name = 'trackctl' AND (%s OR state = 'active') AND query ILIKE %s",
                        (dbname, any_state, prefix + "%")).fetchone()[0] > 0


def batch_input(prefix: str, n: int) -> str:
    rows = []
    for i in range(n):
        carrier = "correios" if i % 3 else "jadlog"
        if i % 7 == 0:
            rows.append(json.dumps({"order_id": f"{prefix}-{i}", "carrier": carrier, "parcel": 1 + i % 2}))
        else:
            rows.append(f"{prefix}-{i},{carrier},{1 + i % 2}")
    return "order,carrier,parcel\n" + "\n".join(rows) + "\n"


def applied(conn, prefix: str) -> dict[tuple[str, str, int], str]:
    rows = conn.execute("""SELECT t.order_id, c.name, t.parcel, t.tracking_id FROM sequencing.tracking t
                           JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
                           WHERE t.order_id LIKE %s""", (prefix + "-%",)).fetchall()
    keys = [(o, c, p) for o, c, p, _ in rows]
    assert len(keys) == len(set(keys)), "one (order, carrier, parcel) holds two codes"
    return {(o, c, p): code for o, c, p, code in rows}


def assigned_events(conn, prefix: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT payload->>'code' FROM sequencing.outbox WHERE type = 'tracking.assigned' "
        "AND payload->>'order_id' LIKE %s", (prefix + "-%",))]


def no_code_twice(conn) -> None:
    dup = conn.execute("""SELECT tracking_id FROM sequencing.tracking GROUP BY tracking_id HAVING count(*) > 1
                          UNION ALL
                          SELECT payload->>'code' FROM sequencing.outbox WHERE type = 'tracking.assigned'
                          GROUP BY payload->>'code' HAVING count(*) > 1""").fetchall()
    assert dup == [], f"codes given twice: {dup[:5]}"


def ship(conn, carrier: str, n: int) -> list[str]:
    from trackctl.assign import assign

    return [assign(conn, f"p{i}", carrier).code for i in range(n)]


def delivery_states(conn) -> dict[str, str]:
    """event id -> status of its (one subscriber's) delivery."""
    return dict(conn.execute("SELECT sequencing.event_id(o), d.status FROM sequencing.webhook_delivery d "
                             "JOIN sequencing.outbox o ON o.id = d.outbox_id").fetchall())


def whole_lines(text: str) -> list[int]:
    """The event numbers of the complete lines a killed collector wrote (a torn last line is dropped)."""
    return [json.loads(line)["data"]["n"] for line in text.split("\n")[:-1]]
