"""trackctl events: JSON lines from a cursor, --follow over LISTEN/NOTIFY, and consumer groups of real processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from trackctl import outbox
from trackctl.events import settled_horizon
from conftest import trackctl_command

BULK = """
INSERT INTO sequencing.outbox (type, payload)
SELECT CASE WHEN n %% 10 = 0 THEN 'shipment.stale' ELSE 'tracking.assigned' END, jsonb_build_object('n', n)
FROM generate_series(1, %s) AS n
"""


def bulk(conn, n: int) -> None:
    conn.execute(BULK, (n,))


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_events_prints_every_event_oldest_first_with_a_cursor(cli, conn):
    bulk(conn, 25)
    r = cli("events")
    assert r.returncode == 0 and r.stderr == "", r
    got = lines(r.stdout)
    assert [e["data"]["n"] for e in got] == list(range(1, 26))
    assert list(got[0]) == ["id", "type", "timestamp", "data", "cursor"]
    resumed = lines(cli("events", "--after", got[9]["cursor"], "--limit", "5").stdout)
    assert [e["data"]["n"] for e in resumed] == [11, 12, 13, 14, 15]
    stale = lines(cli("events", "--types", "shipment.stale").stdout)
    assert [e["data"]["n"] for e in stale] == [10, 20]
    assert cli("events", "--after", "not-a-cursor").returncode == 2
    assert cli("events", "--types", "shipment.lost").returncode == 2


def test_a_closed_pipe_ends_the_stream_quietly(cli, conn):
    bulk(conn, 20_000)
    cmd = " ".join(trackctl_command()) + " events | head -n 3; echo \"exit=${PIPESTATUS[0]}\" >&2"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=cli.env, timeout=120)
    assert len(r.stdout.splitlines()) == 3
    assert r.stderr.strip() == "exit=0", r.stderr
    follow = " ".join(trackctl_command()) + " events --follow | head -n 1; echo \"exit=${PIPESTATUS[0]}\" >&2"
    r = subprocess.run(["bash", "-c", follow], capture_output=True, text=True, env=cli.env, timeout=120)
    assert len(r.stdout.splitlines()) == 1 and r.stderr.strip() == "exit=0", r.stderr


def _reader(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_follow_prints_new_events_as_they_commit_and_never_skips_a_slower_transaction(cli, conn, db_url):
    bulk(conn, 2)
    proc = subprocess.Popen(trackctl_command() + ["events", "--follow"], env=cli.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out = _reader(proc)
        assert [json.loads(out.get(timeout=30))["data"]["n"] for _ in range(2)] == [1, 2]
        slow = psycopg.connect(db_url)  # a transaction that takes an id first and commits last
        slow.execute("INSERT INTO sequencing.outbox (type, payload) VALUES ('shipment.stale', '{\"n\": 3}')")
        outbox.record(conn, "shipment.stale", {"n": 4})  # committed while 3 is still open
        time.sleep(1.0)
        assert out.empty()  # 4 is held back: 3 may still commit
        slow.commit()
        slow.close()
        assert [json.loads(out.get(timeout=30))["data"]["n"] for _ in range(2)] == [3, 4]
        rolled_back = psycopg.connect(db_url)
        rolled_back.execute("INSERT INTO sequencing.outbox (type, payload) VALUES ('shipment.stale', '{\"n\": 5}')")
        outbox.record(conn, "shipment.stale", {"n": 6})
        rolled_back.rollback()  # its id will never exist: the stream moves on
        rolled_back.close()
        assert json.loads(out.get(timeout=30))["data"]["n"] == 6
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_settled_horizon_waits_only_for_transactions_writing_the_outbox(conn, db_url):
    bulk(conn, 3)
    unrelated = psycopg.connect(db_url)
    unrelated.execute("UPDATE sequencing.pool SET target = target")  # a long transaction elsewhere
    assert settled_horizon(conn, max_wait=5) == 3
    writer = psycopg.connect(db_url)
    writer.execute("INSERT INTO sequencing.outbox (type, payload) VALUES ('shipment.stale', '{}')")
    with pytest.raises(TimeoutError):
        settled_horizon(conn, max_wait=0.3)
    writer.commit()
    assert settled_horizon(conn, max_wait=5) == 4
    writer.close()
    unrelated.close()


# --- consumer groups ---------------------------------------------------------------------------

def _start_collector(cli, group: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(trackctl_command() + ["events", "--group", group, *extra], env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _live_collectors(conn, group: str) -> int:
    from trackctl.events import list_groups

    return next((g.collectors for g in list_groups(conn) if g.name == group), 0)


def _wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_six_collectors_share_ten_thousand_events_exactly_once_and_a_seventh_is_refused(cli, conn):
    collectors = [_start_collector(cli, "billing", "--follow") for _ in range(6)]
    try:
        outputs: list[list[str]] = [[] for _ in collectors]
        pumps = []
        for proc, sink in zip(collectors, outputs):
            t = threading.Thread(target=lambda p=proc, s=sink: s.extend(p.stdout), daemon=True)
            t.start()
            pumps.append(t)
        _wait_for(lambda: _live_collectors(conn, "billing") == 6)
        seventh = cli("events", "--group", "billing", "--follow", timeout=60)
        assert seventh.returncode == 7, seventh
        assert "already has 6 live collectors" in seventh.stderr and seventh.stdout == ""
        # The events come once all six are waiting: a collector that started first could otherwise
        # print all of them before the last one has started (seen under load).
        bulk(conn, 10_000)
        _wait_for(lambda: sum(len(o) for o in outputs) >= 10_000, timeout=300)
        groups = json.loads(cli("events", "groups", "--format", "json").stdout)
        assert [(g["name"], g["collectors"], g["waiting"]) for g in groups] == [("billing", 6, 0)]
        _wait_for(lambda: groups_unacknowledged(conn) == 0)
    finally:
        for proc in collectors:
            proc.terminate()
        for proc in collectors:
            proc.wait(timeout=30)
    for t in pumps:
        t.join(timeout=30)
    seen = [json.loads(line)["data"]["n"] for out in outputs for line in out]
    assert len(seen) == 10_000 and set(seen) == set(range(1, 10_001))
    assert sum(1 for out in outputs if out) >= 2  # the work really was shared


def groups_unacknowledged(conn) -> int:
    return conn.execute("SELECT count(*) FROM sequencing.event_group_lease").fetchone()[0]


@pytest.mark.slow
def test_a_collector_killed_with_sigkill_loses_nothing(cli, conn):
    bulk(conn, 2_000)
    # Nobody reads this collector's stdout: it writes until the pipe is full and blocks there,
    # holding an unacknowledged batch, and is killed in that state.
    victim = _start_collector(cli, "audit", "--follow")
    _wait_for(lambda: conn.execute("SELECT count(*) FROM sequencing.event_group_lease l "
                                   "JOIN sequencing.event_group g ON g.id = l.group_id "
                                   "WHERE g.name = 'audit'").fetchone()[0] >= 1)
    time.sleep(1.0)  # let it fill the pipe and block mid-batch
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    victim_lines = victim.stdout.read().split("\n")[:-1]  # whole lines it wrote before dying
    victim.stderr.close()
    survivors = [cli("events", "--group", "audit", timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in survivors), survivors
    seen_victim = [json.loads(line)["data"]["n"] for line in victim_lines]
    seen_others = [json.loads(line)["data"]["n"] for r in survivors for line in r.stdout.splitlines()]
    assert set(seen_victim) | set(seen_others) == set(range(1, 2_001))
    assert len(seen_others) == len(set(seen_others))  # the survivors got each event once
    duplicates = set(seen_victim) & set(seen_others)
    assert len(duplicates) <= 100  # at most the batch it was writing when it died
    assert 0 < len(seen_victim) < 2_000  # it died mid-stream
    redelivered = conn.execute("SELECT count(*) FROM sequencing.event_group_lease").fetchone()[0]
    assert redelivered == 0 and _live_collectors(conn, "audit") == 0


def test_group_options_and_drop(cli, conn):
    bulk(conn, 30)
    first = cli("events", "--group", "ops", "--types", "shipment.stale", "--limit", "2")
    assert [e["data"]["n"] for e in lines(first.stdout)] == [10, 20], first
    wrong = cli("events", "--group", "ops", "--types", "tracking.assigned")
    assert wrong.returncode == 2 and "was created for shipment.stale" in wrong.stderr
    rest = cli("events", "--group", "ops")
    assert [e["data"]["n"] for e in lines(rest.stdout)] == [30]
    assert cli("events", "--group", "ops").stdout == ""  # nothing left for the group
    late = cli("events", "--group", "late", "--after", "25")
    assert [e["data"]["n"] for e in lines(late.stdout)] == list(range(26, 31))
    dropped = cli("events", "drop-group", "ops")
    assert dropped.returncode == 0 and "dropped" in dropped.stderr
    assert cli("events", "drop-group", "ops").returncode == 1
    assert cli("events", "--group", "Bad Name").returncode == 2
