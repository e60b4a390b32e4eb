"""Batch assign across several pools in one chunk: each line takes the oldest free code of its own pool."""

from __future__ import annotations

from trackctl.assign import assign_lines
from trackctl.carriers import add_carrier
from trackctl.pools import create_pool

STOCK = "INSERT INTO sequencing.tracking (tracking_id, pool_id) SELECT %s || '-' || g, %s FROM generate_series(1, %s::int) g"


def code_owner(conn, code: str) -> tuple[str, str, str]:
    return conn.execute(
        "SELECT p.name, t.order_id, c.name FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id "
        "JOIN sequencing.carrier c ON c.id = t.freightcarrier_id WHERE t.tracking_id = %s", (code,)).fetchone()


def test_interleaved_pools_in_one_chunk_pair_each_line_with_its_own_pools_codes_oldest_first(conn):
    # Pool "big" has plenty, "small" runs dry mid-chunk, "empty" has nothing: lines interleave.
    for name, stock in (("big", 40), ("small", 3), ("empty", 0)):
        pool = create_pool(conn, name)
        add_carrier(conn, f"c-{name}", pool=name)
        conn.execute(STOCK, (name, pool.id, stock))
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
