"""Batch assign across several pools in one chunk: each line takes the oldest free code of its own pool."""

from __future__ import annotations

import json
import re

from trackctl.assign import assign_lines
from trackctl.carriers import add_carrier
from trackctl.pools import create_pool

# Free codes NAME-1..NAME-n with their claim tickets, in that order (sql/0009_claim_tickets.sql).
STOCK = "SELECT sequencing.add_free_codes(%(pool)s, ARRAY(SELECT %(name)s || '-' || g FROM generate_series(1, %(n)s::int) g))"


def code_owner(conn, code: str) -> tuple[str, str, str]:
    return conn.execute(
        "SELECT p.name, t.order_id, c.name FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id "
        "JOIN sequencing.carrier c ON c.id = t.freightcarrier_id WHERE t.tracking_id = %s", (code,)).fetchone()


def test_interleaved_pools_in_one_chunk_pair_each_line_with_its_own_pools_codes_oldest_first(conn):
    # Pool "big" has plenty, "small" runs dry mid-chunk, "empty" has nothing: lines interleave.
    for name, stock in (("big", 40), ("small", 3), ("empty", 0)):
        pool = create_pool(conn, name)
        add_carrier(conn, f"c-{name}", pool=name)
        conn.execute(STOCK, {"name": name, "pool": pool.id, "n": stock})
    carriers = ["c-big", "c-small", "c-empty", "c-big"]
    records = [(i + 1, {"order_id": f"o{i}", "carrier": carriers[i % 4]}) for i in range(24)]
    outcomes = list(assign_lines(conn, records, chunk_size=10))

    codes = [o.assignment.code for o in outcomes]
    assert len(set(codes)) == len(codes) == 24
    for o in outcomes:
        pool, order, carrier = code_owner(conn, o.assignment.code)
        assert (order, carrier, f"c-{pool}") == (o.assignment.order_id, o.assignment.carrier, o.assignment.carrier)
    by_carrier = {c: [o.assignment for o in outcomes if o.assignment.carrier == c] for c in set(carriers)}
    assert [a.code for a in by_carrier["c-big"]] == [f"big-{n}" for n in range(1, 13)]
    assert [a.code for a in by_carrier["c-small"][:3]] == ["small-1", "small-2", "small-3"]
    assert [a.generated_inline for a in by_carrier["c-small"]] == [False] * 3 + [True] * 3
    assert all(a.generated_inline for a in by_carrier["c-empty"])


def test_a_used_up_s10_range_refuses_only_its_own_lines_and_the_rest_of_the_chunk_is_assigned(conn):
    from trackctl.pools import S10Range, s10_code

    create_pool(conn, "big")
    add_carrier(conn, "c-big", pool="big")
    conn.execute(STOCK, {"name": "big", "pool": conn.execute("SELECT id FROM sequencing.pool WHERE name = 'big'").fetchone()[0],
                        "n": 20})
    create_pool(conn, "tiny", target=0, kind="s10", s10=S10Range("AA", "BR", 10000000, 10000002))
    add_carrier(conn, "c-tiny", pool="tiny")
    # Lines 1-5 ask the three-serial range for four keys (line 4 repeats line 1's key, line 5 is
    # the fourth key); lines 6-9 go to the big pool.
    orders = [("t1", "c-tiny"), ("t2", "c-tiny"), ("t3", "c-tiny"), ("t1", "c-tiny"), ("t4", "c-tiny"),
              ("b1", "c-big"), ("b2", "c-big"), ("b3", "c-big"), ("b1", "c-big")]
    records = [(i + 1, {"order_id": o, "carrier": c}) for i, (o, c) in enumerate(orders)]
    outcomes = list(assign_lines(conn, records, chunk_size=100))

    assert [o.line for o in outcomes] == list(range(1, 10))
    tiny, big = outcomes[:5], outcomes[5:]
    assert all(o.assignment is not None for o in big) and len({o.assignment.code for o in big}) == 3
    first, second, third = (s10_code("AA", n, "BR") for n in (10000000, 10000001, 10000002))
    assert [o.assignment and o.assignment.code for o in tiny] == [first, second, third, first, None], tiny
    assert "S10 pool 'tiny' has used its whole range AA10000000-10000002BR" in tiny[4].error, tiny[4]
    # Nothing of the refused lines is in the database, everything else is, with its event.
    rows = conn.execute("""SELECT t.order_id, c.name FROM sequencing.tracking t
                           JOIN sequencing.carrier c ON c.id = t.freightcarrier_id""").fetchall()
    assert sorted(rows) == sorted({(o.assignment.order_id, o.assignment.carrier) for o in outcomes if o.assignment})
    events = conn.execute("SELECT count(*) FROM sequencing.outbox WHERE type = 'tracking.assigned'").fetchone()[0]
    assert events == len(rows) == 6


def test_cli_batch_on_a_used_up_s10_range_rejects_those_lines_with_exit_3_and_assigns_the_others(cli, conn):
    from trackctl.pools import S10Range

    add_carrier(conn, "correios")
    create_pool(conn, "tiny", target=0, kind="s10", s10=S10Range("AA", "BR", 10000000, 10000001))
    add_carrier(conn, "sedex", pool="tiny")
    for order in ("1", "2"):
        assert cli("assign", order, "sedex").returncode == 0  # the range's two serials are gone
    r = cli("assign", "--batch", input="2001,correios\n2004,sedex\n2005,correios\n")
    assert r.returncode == 3, r
    assert [line.split(",")[0] for line in r.stdout.splitlines()] == ["2001", "2005"], r
    errors = r.stderr.splitlines()
    assert errors[0].startswith("line 2: S10 pool 'tiny' has used its whole range"), r
    assert errors[-1].startswith("trackctl: error: 1 of 3 lines rejected"), r
    assert "Traceback" not in r.stderr
    status = cli("status", "--order", "2001", "--format", "json")
    assert status.returncode == 0 and json.loads(status.stdout)[0]["carrier"] == "correios", status


def test_claims_do_not_step_over_assigned_history_to_find_free_codes(conn):
    """The free-code scan of a batch chunk and of a single claim stays flat as history grows
    (EXPLAIN ANALYZE of the real statements, not a timing)."""
    from trackctl import assign as claims

    # The pool claimed from was created before the one holding the history, so its pool id and
    # its rows' places in the table run in opposite directions: with that, and free codes a tenth
    # of the history, PostgreSQL 18 planned both claim statements as a walk over the primary key
    # that stepped over every assigned row first (while profiling with a million-row history:
    # 0.1 s for every chunk of 5 000 lines, 130 ms for every single claim).
    pool, history = create_pool(conn, "fresh"), create_pool(conn, "history")
    carrier = add_carrier(conn, "c-fresh", pool="fresh")
    hist_carrier = add_carrier(conn, "c-history", pool="history")
    conn.execute("""INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status,
                                                     assigned_at)
                    SELECT gen_random_uuid()::text, %s, 'h' || g, %s, 1, 'pending', now()
                    FROM generate_series(1, 50000) g""", (history.id, hist_carrier.id))
    conn.execute("SELECT sequencing.add_free_codes(%s, ARRAY(SELECT gen_random_uuid()::text "  # made after the history
                 "FROM generate_series(1, 5000)))", (pool.id,))
    conn.execute("VACUUM ANALYZE sequencing.tracking")

    def stepped_over(plan: str) -> int:
        return sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan))

    rows = "".join(f"{i}\to{i}\t{carrier.id}\t{pool.id}\t1\n" for i in range(500))
    with conn.transaction(force_rollback=True):
        conn.execute(claims.SQL.batch_table)
        with conn.cursor() as cur, cur.copy(claims.SQL.batch_copy) as copy:
            copy.write(rows)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + claims.SQL.batch_claim))
    assert "rows=500" in plan and "tracking_ticket" in plan and stepped_over(plan) < 500, f"{stepped_over(plan)} rows stepped over:\n{plan}"

    params = {"order_id": "single", "carrier": "c-fresh", "carrier_id": None, "parcel": 1, "next_parcel": False}
    with conn.transaction(force_rollback=True):
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + claims.SQL.assign_one, params))
    assert "tracking_ticket" in plan and stepped_over(plan) < 10, f"{stepped_over(plan)} rows stepped over:\n{plan}"
