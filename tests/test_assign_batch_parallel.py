"""`assign_lines` with two chunks in flight, each on its own connection (`assign --batch`'s default)."""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest

from trackctl import db
from trackctl.assign import assign
from trackctl.assign_batch import WARM, assign_lines


def assigned(conn) -> dict[tuple[str, str, int], str]:
    return {(o, c, p): code for o, c, p, code in conn.execute(
        "SELECT t.order_id, c.name, t.parcel, t.tracking_id FROM sequencing.tracking t "
        "JOIN sequencing.carrier c ON c.id = t.freightcarrier_id")}


def others(conn) -> list[int]:
    """Server processes of this database other than `conn`'s (the batch's extra connections)."""
    return [pid for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'")]


def settled_others(conn, expected: list[int]) -> list[int]:
    """others(conn) once the server processes of closed connections have exited (they exit just after)."""
    for _ in range(200):
        now = others(conn)
        if now == expected:
            break
        time.sleep(0.05)
    return now


def lines_of(orders: list[tuple[str, str]]) -> list[tuple[int, dict]]:
    return [(n, {"order_id": o, "carrier": c}) for n, (o, c) in enumerate(orders, 1)]


def test_an_order_in_two_chunks_in_flight_gets_one_code_the_second_line_not_new(stocked, db_url):
    # Chunks of 3 lines; the first WARM chunks go out on the batch's connection, then a second one
    # opens. The next chunk ("chunk 3" below) holds a jadlog line and order "dup"; another session holds jadlog's carrier row, so
    # chunk 3 stops at the end of its claim with "dup"'s unique key written. Chunk 4, on the other
    # connection, reaches "dup" and waits for chunk 3; once jadlog is let go chunk 3 commits, and
    # chunk 4 meets the unique violation, runs again and finds "dup"'s code as existing.
    warm = [(f"w{i}", "correios") for i in range(3 * WARM)]
    third = [("j1", "jadlog"), ("dup", "correios"), ("a3", "correios")]
    fourth = [("b1", "correios"), ("dup", "correios"), ("b3", "correios")]
    records = lines_of(warm + third + fourth)
    before = others(stocked)
    blocker = db.open_connection(db_url)
    blocker.autocommit = False
    blocker.execute("SELECT 1 FROM sequencing.carrier WHERE name = 'jadlog' FOR UPDATE")
    seen = []

    def release() -> None:
        watch = db.open_connection(db_url)
        try:
            # A batch backend blocked by another batch backend, not by `blocker`: chunk 4 waiting for
            # chunk 3's "dup", or (when chunk 4 wrote "dup" first on a busy machine) chunk 3 waiting
            # for chunk 4 until chunk 4 gives way, a window of about TURN_POLL: looked for often.
            for _ in range(6000):
                row = watch.execute(
                    "SELECT a.application_name FROM pg_stat_activity a WHERE a.datname = current_database() "
                    "AND cardinality(pg_blocking_pids(a.pid)) > 0 AND NOT %s = ANY (pg_blocking_pids(a.pid))",
                    (blocker.info.backend_pid,)).fetchone()
                if row is not None:
                    seen.append(row[0])
                    break
                time.sleep(0.005)
        finally:
            watch.close()
            blocker.commit()

    helper = threading.Thread(target=release)
    helper.start()
    try:
        outcomes = list(assign_lines(stocked, records, chunk_size=3, overlap=True, connections=2))
    finally:
        helper.join()
        blocker.close()
    assert seen, "chunk 4 never waited for chunk 3: the two chunks were not in flight together"
    assert seen == ["trackctl"]  # the second connection is opened as the first was
    assert [o.line for o in outcomes] == [n for n, _ in records]
    got = {o.line: o.assignment for o in outcomes}
    first, second = got[len(warm) + 2], got[len(warm) + 5]
    assert first.order_id == second.order_id == "dup"
    assert first.code == second.code and first.new and not second.new
    codes = assigned(stocked)
    assert codes[("dup", "correios", 1)] == first.code
    assert len(codes) == len(set(codes.values())) == len({o for o, _ in warm + third + fourth})
    assert settled_others(stocked, before) == before  # the second connection is closed


def test_orders_repeated_across_consecutive_chunks_keep_input_order_and_one_code_each(stocked):
    # Every chunk repeats two orders of the chunk before it: whichever of two chunks in flight
    # reaches a shared key first, each key ends with one code and its first line is the new one.
    orders = []
    for chunk in range(30):
        orders += [(f"o{chunk}-{k}", "correios" if k % 2 else "jadlog") for k in range(3)]
        orders += [(f"o{chunk - 1}-{k}", "correios" if k % 2 else "jadlog") for k in range(2) if chunk]
    records = lines_of(orders)
    before = others(stocked)
    outcomes = list(assign_lines(stocked, records, chunk_size=5, overlap=True, connections=2))
    assert [o.line for o in outcomes] == [n for n, _ in records]
    assert all(o.error is None for o in outcomes), [o for o in outcomes if o.error]
    assert [(o.assignment.order_id, o.assignment.carrier) for o in outcomes] == orders
    codes = assigned(stocked)
    seen: set = set()
    for o in outcomes:
        key = (o.assignment.order_id, o.assignment.carrier)
        assert o.assignment.code == codes[(*key, 1)]
        assert o.assignment.new == (key not in seen), o
        seen.add(key)
    assert len(codes) == len(set(codes.values())) == len(seen)
    assert settled_others(stocked, before) == before


def test_an_exception_in_the_consumer_rolls_back_both_chunks_in_flight(stocked):
    # The consumer fails at the first answer: by then chunks 1 and 2 have committed (chunk 3's
    # start waited for chunk 1), chunks 3 and 4 may be in flight on the two connections. Whatever
    # was in flight rolls back: the database holds whole chunks, a prefix of the input.
    records = lines_of([(f"o{i}", "correios") for i in range(60)])
    before = others(stocked)
    outcomes = assign_lines(stocked, records, chunk_size=10, overlap=True, connections=2)
    with pytest.raises(RuntimeError), contextlib.closing(outcomes):  # as a `for` in a function that fails
        for outcome in outcomes:
            assert outcome.assignment.order_id == "o0"
            raise RuntimeError("the consumer failed")
    done = sorted(int(o[1:]) for o, _, _ in assigned(stocked))
    assert done in [list(range(10 * n)) for n in range(1, 7)], done
    assert stocked.info.transaction_status.name == "IDLE"
    assert settled_others(stocked, before) == before  # the second connection is closed on the error path too
    rest = list(assign_lines(stocked, records, chunk_size=10, overlap=True, connections=2))  # a rerun completes it
    assert [o.assignment.new for o in rest] == [i >= len(done) for i in range(60)]
    assert len({o.assignment.code for o in rest}) == 60


def test_a_refused_second_connection_leaves_the_batch_on_one(stocked, db_url):
    # A role allowed one connection: the batch's own. The second is refused and the batch goes on.
    stocked.execute("CREATE ROLE one_only LOGIN CONNECTION LIMIT 1")
    stocked.execute("GRANT ALL ON SCHEMA sequencing TO one_only")
    stocked.execute("GRANT ALL ON ALL TABLES IN SCHEMA sequencing TO one_only")
    stocked.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA sequencing TO one_only")
    stocked.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sequencing TO one_only")
    url = psycopg.conninfo.make_conninfo(db_url, user="one_only")
    limited = db.open_connection(url, wait_when_full=0)
    try:
        records = lines_of([(f"o{i}", "correios") for i in range(40)])
        outcomes = list(assign_lines(limited, records, chunk_size=4, overlap=True, connections=2))
    finally:
        limited.close()
    assert [o.assignment.order_id for o in outcomes] == [f"o{i}" for i in range(40)]
    assert len(assigned(stocked)) == 40


def test_a_pause_answers_both_chunks_in_flight_before_the_next_read(stocked):
    from trackctl.batch_input import IDLE

    answered = []

    def records():
        for i in range(12):
            yield i + 1, {"order_id": f"o{i}", "carrier": "correios"}
        yield IDLE
        assert len(answered) == 12  # every line before the pause, both connections' chunks included
        yield 13, {"order_id": "o0", "carrier": "correios"}

    for outcome in assign_lines(stocked, records(), chunk_size=2, overlap=True, connections=2):
        answered.append(outcome)
    assert [o.line for o in answered] == list(range(1, 14))
    assert answered[-1].assignment.code == answered[0].assignment.code and not answered[-1].assignment.new
    assert assign(stocked, "o5", "correios").new is False


@pytest.mark.parametrize("through_another", [False, True], ids=["directly", "through-a-third-session"])
def test_a_chunk_waiting_for_its_turn_gives_way_to_the_earlier_chunk_it_blocks(db_url, through_another):
    # The earlier chunk's server process waits for a lock the later chunk's transaction holds
    # (directly, or behind a third session that waits for it): the later chunk, waiting in the
    # client for the earlier one's commit, must roll back (GiveWay) rather than wait forever.
    from trackctl.assign_batch import _Chunk, _Stopped
    from trackctl.batch_claims import GiveWay

    later, earlier_conn, third = (db.open_connection(db_url) for _ in range(3))
    earlier = _Chunk([], [])
    earlier.pid = earlier_conn.info.backend_pid
    chunk = _Chunk([], [])
    chunk.before = earlier
    waiting = []
    try:
        later.autocommit = False
        later.execute("SELECT pg_advisory_xact_lock(14004)")
        if through_another:
            third.autocommit = False
            third.execute("SELECT pg_advisory_xact_lock(14005)")
            waiting.append(threading.Thread(target=third.execute, args=("SELECT pg_advisory_xact_lock(14004)",)))
            waiting.append(threading.Thread(target=earlier_conn.execute, args=("SELECT pg_advisory_xact_lock(14005)",)))
        else:
            waiting.append(threading.Thread(target=earlier_conn.execute, args=("SELECT pg_advisory_xact_lock(14004)",)))
        for t in waiting:
            t.start()
            time.sleep(0.2)
        stopper = threading.Timer(60, lambda: setattr(chunk, "stop", True))  # a hang ends as _Stopped
        stopper.start()
        try:
            with pytest.raises((GiveWay, _Stopped)) as raised:
                chunk._turn(later)
        finally:
            stopper.cancel()
        assert raised.type is GiveWay
        later.rollback()  # what the chunk's transaction does next: the earlier one goes on
        if through_another:
            third.commit()
        for t in waiting:
            t.join(30)
            assert not t.is_alive()
    finally:
        for c in (later, earlier_conn, third):
            c.close()


def test_a_chunk_waits_for_its_turn_and_rolls_back_if_the_earlier_one_failed(conn):
    from trackctl.assign_batch import _Chunk, _Stopped

    earlier, chunk = _Chunk([], []), _Chunk([], [])
    earlier.pid, chunk.before = conn.info.backend_pid, earlier
    done = threading.Timer(0.3, earlier.finished.set)
    done.start()
    chunk._turn(conn)  # returns once the earlier chunk has finished well
    assert earlier.finished.is_set()
    earlier.error = RuntimeError("the earlier chunk failed")
    with pytest.raises(_Stopped):
        chunk._turn(conn)
