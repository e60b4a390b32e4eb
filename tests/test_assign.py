"""Single assign: `trackctl assign ORDER CARRIER`, the library call behind it, and the schema's own guards."""

from __future__ import annotations

import json
import re
import uuid

import psycopg
import pytest

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import InvalidValue, UnknownCarrier
from trackctl.pools import refill

UUID_LINE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$")


def rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM sequencing.tracking").fetchone()[0]


def assigned(conn) -> list[tuple]:
    return conn.execute("SELECT order_id, freightcarrier_id, parcel, tracking_id FROM sequencing.tracking "
                        "WHERE order_id IS NOT NULL ORDER BY order_id, freightcarrier_id, parcel").fetchall()


def free_count(conn, pool: str = "default") -> int:
    return conn.execute("SELECT count(*) FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id "
                        "WHERE p.name = %s AND t.order_id IS NULL", (pool,)).fetchone()[0]


# --- library level ---------------------------------------------------------------------------


def test_same_order_and_carrier_returns_the_same_code(stocked):
    first = assign(stocked, "42", "correios")
    again = assign(stocked, "42", "correios")
    assert first.new and not again.new
    assert again.code == first.code
    assert len(assigned(stocked)) == 1


def test_assignment_takes_a_code_from_the_pool_and_starts_pending(stocked):
    before = free_count(stocked)
    a = assign(stocked, "order-1", "correios")
    assert not a.generated_inline
    assert free_count(stocked) == before - 1
    status, pool = stocked.execute("SELECT t.status, p.name FROM sequencing.tracking t "
                                   "JOIN sequencing.pool p ON p.id = t.pool_id WHERE tracking_id = %s",
                                   (a.code,)).fetchone()
    assert (status, pool) == ("pending", "default")


def test_carrier_by_name_and_by_numeric_id_give_the_same_code(stocked):
    by_name = assign(stocked, "42", "jadlog")
    by_id = assign(stocked, "42", "7")
    assert by_id.code == by_name.code
    assert by_id.carrier == "jadlog"
    assert not by_id.new


def test_different_carriers_give_different_codes_for_one_order(stocked):
    assert assign(stocked, "42", "correios").code != assign(stocked, "42", "jadlog").code


def test_parcel_number_gives_a_distinct_idempotent_code(stocked):
    one = assign(stocked, "42", "correios")
    two = assign(stocked, "42", "correios", parcel=2)
    assert two.code != one.code and two.parcel == 2 and two.new
    assert assign(stocked, "42", "correios", parcel=2).code == two.code
    assert assign(stocked, "42", "correios").code == one.code


def test_next_parcel_takes_a_new_parcel_number_every_time(stocked):
    one = assign(stocked, "42", "correios")
    two = assign(stocked, "42", "correios", next_parcel=True)
    three = assign(stocked, "42", "correios", next_parcel=True)
    assert (two.parcel, three.parcel) == (2, 3)
    assert len({one.code, two.code, three.code}) == 3
    assert two.new and three.new


def test_next_parcel_on_a_new_order_is_parcel_one(stocked):
    a = assign(stocked, "fresh", "correios", next_parcel=True)
    assert a.parcel == 1
    assert assign(stocked, "fresh", "correios").code == a.code


def test_unknown_carrier_is_refused_and_writes_nothing(stocked):
    before = rows(stocked)
    with pytest.raises(UnknownCarrier) as info:
        assign(stocked, "42", "dhl")
    assert "dhl" in info.value.message and "correios" in info.value.message
    for ref in ("99", "corr\x00eios", "corr\udcffeios", "correios\n"):
        with pytest.raises(UnknownCarrier):
            assign(stocked, "42", ref)
    assert rows(stocked) == before
    assert assigned(stocked) == []


@pytest.mark.parametrize("order_id", ["", "x" * 65, "a\x00b", "a\nb", "a\x1bb", "a\tb", "a\u2028b", " 42", "42 ",
                                      "a\ud800b"])
def test_invalid_order_ids_are_refused_before_touching_the_database(stocked, order_id):
    before = rows(stocked)
    with pytest.raises(InvalidValue):
        assign(stocked, order_id, "correios")
    assert rows(stocked) == before


def test_order_id_of_64_characters_and_unicode_is_accepted(stocked):
    long_id = "é" * 64
    assert assign(stocked, long_id, "correios").code == assign(stocked, long_id, "correios").code
    assert assigned(stocked)[0][0] == long_id


def test_empty_uuid_pool_still_assigns_with_a_code_made_inline(conn):
    add_carrier(conn, "correios", 3)
    assert free_count(conn) == 0
    a = assign(conn, "42", "correios")
    assert a.generated_inline and a.new
    assert uuid.UUID(a.code).version == 4
    again = assign(conn, "42", "correios")
    assert again.code == a.code and not again.new and not again.generated_inline
    assert free_count(conn) == 0
    assert len(assigned(conn)) == 1


# --- command line ----------------------------------------------------------------------------


@pytest.fixture
def stocked_cli(cli, conn):
    add_carrier(conn, "correios", 3)
    add_carrier(conn, "jadlog", 7)
    refill(conn)
    return cli


def test_cli_prints_only_the_code(stocked_cli):
    r = stocked_cli("assign", "42", "correios")
    assert r.returncode == 0, r
    assert UUID_LINE.match(r.stdout), r
    assert r.stderr == ""


def test_cli_assign_is_idempotent(stocked_cli, conn):
    first = stocked_cli("assign", "42", "correios")
    again = stocked_cli("assign", "42", "correios")
    assert first.returncode == again.returncode == 0, (first, again)
    assert again.stdout == first.stdout
    assert len(assigned(conn)) == 1


def test_cli_carrier_by_name_and_by_id_give_the_same_code(stocked_cli):
    by_name = stocked_cli("assign", "42", "jadlog")
    by_id = stocked_cli("assign", "42", "7")
    assert by_name.returncode == by_id.returncode == 0, (by_name, by_id)
    assert by_id.stdout == by_name.stdout


def test_cli_parcel_option_gives_a_distinct_idempotent_code(stocked_cli):
    one = stocked_cli("assign", "42", "correios").stdout
    two = stocked_cli("assign", "42", "correios", "--parcel", "2")
    assert two.returncode == 0, two
    assert UUID_LINE.match(two.stdout) and two.stdout != one
    assert stocked_cli("assign", "42", "correios", "--parcel", "2").stdout == two.stdout


def test_cli_next_parcel_takes_a_new_parcel_number(stocked_cli, conn):
    one = stocked_cli("assign", "42", "correios").stdout
    two = stocked_cli("assign", "42", "correios", "--next-parcel")
    assert two.returncode == 0, two
    assert UUID_LINE.match(two.stdout) and two.stdout != one
    parcels = [(order, parcel) for order, _, parcel, _ in assigned(conn)]
    assert parcels == [("42", 1), ("42", 2)]
    assert stocked_cli("assign", "42", "correios", "--parcel", "2").stdout == two.stdout


@pytest.mark.parametrize("args", [
    ["assign", "42", "correios", "--next-parcel", "--parcel", "5"],
    ["assign", "--batch", "--parcel", "4"],
    ["assign", "--batch", "--next-parcel"],
], ids=["next-and-parcel", "batch-parcel", "batch-next-parcel"])
def test_cli_parcel_options_that_cannot_both_hold_are_refused(stocked_cli, conn, args):
    r = stocked_cli(*args, input="43,correios\n")
    assert r.returncode == 2, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("trackctl: error: "), r
    assert assigned(conn) == []


def test_cli_one_assignment_as_csv_or_json_line(stocked_cli):
    code = stocked_cli("assign", "42", "correios").stdout.strip()
    r = stocked_cli("assign", "42", "correios", "--format", "jsonl")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"order_id": "42", "carrier": "correios", "code": code, "new": False, "parcel": 1}
    r = stocked_cli("assign", "42", "correios", "--format", "csv")
    assert r.stdout == f"42,correios,{code}\n", r


@pytest.mark.parametrize("parcel", ["0", "1000", "two"])
def test_cli_parcel_out_of_range_is_a_usage_error(stocked_cli, conn, parcel):
    r = stocked_cli("assign", "42", "correios", "--parcel", parcel)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert assigned(conn) == []


def test_cli_unknown_carrier_is_one_line_on_stderr_and_exit_1(stocked_cli, conn):
    before = rows(conn)
    r = stocked_cli("assign", "42", "dhl")
    assert r.returncode == 1, r
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("trackctl: error: unknown carrier 'dhl'")
    assert "correios" in lines[0] and "jadlog" in lines[0]
    assert rows(conn) == before


@pytest.mark.parametrize("order_id", ["", "x" * 65, "a\nb", "a\x1bb", "a\rb", " 42", "42 "])
def test_cli_invalid_order_id_is_a_usage_error(stocked_cli, conn, order_id):
    r = stocked_cli("assign", order_id, "correios")
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "order id" in r.stderr, r
    assert "Traceback" not in r.stderr
    assert assigned(conn) == []


def test_cli_order_id_that_is_not_valid_utf8_is_a_usage_error(stocked_cli, conn):
    # A shell can pass any bytes; Python hands them over as surrogate escapes.
    import os
    import subprocess

    from conftest import trackctl_command

    proc = subprocess.run(trackctl_command() + ["assign", os.fsencode("a\udcffb"), "correios"],
                          capture_output=True, env=stocked_cli.env)
    assert proc.returncode == 2, proc
    assert proc.stdout == b""
    assert b"Traceback" not in proc.stderr
    assert assigned(conn) == []


def test_cli_assign_without_carrier_is_a_usage_error(stocked_cli):
    r = stocked_cli("assign", "42")
    assert r.returncode == 2, r
    assert r.stdout == ""


def test_cli_empty_pool_assigns_and_warns_on_stderr(cli, conn):
    add_carrier(conn, "correios", 3)
    r = cli("assign", "42", "correios")
    assert r.returncode == 0, r
    assert UUID_LINE.match(r.stdout), r
    assert "warning" in r.stderr and "refill" in r.stderr
    again = cli("assign", "42", "correios")
    assert again.stdout == r.stdout
    assert free_count(conn) == 0


# --- the schema's own guards -------------------------------------------------------------------


def pool_id(conn) -> int:
    return conn.execute("SELECT id FROM sequencing.pool WHERE name = 'default'").fetchone()[0]


def test_schema_refuses_a_duplicate_code(stocked):
    code = stocked.execute("SELECT tracking_id FROM sequencing.tracking LIMIT 1").fetchone()[0]
    with pytest.raises(psycopg.errors.UniqueViolation):
        stocked.execute("INSERT INTO sequencing.tracking (tracking_id, pool_id, ticket) VALUES (%s, %s, 1000000)",
                        (code, pool_id(stocked)))


def test_schema_refuses_an_assigned_row_without_carrier(stocked):
    with pytest.raises(psycopg.errors.CheckViolation):
        stocked.execute("INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, parcel, status, assigned_at) "
                        "VALUES ('x-1', %s, '42', 1, 'pending', now())", (pool_id(stocked),))
    with pytest.raises(psycopg.errors.CheckViolation):
        stocked.execute("UPDATE sequencing.tracking SET order_id = '42', parcel = 1, status = 'pending', "
                        "assigned_at = now() WHERE id = (SELECT min(id) FROM sequencing.tracking)")


def test_schema_refuses_control_characters_in_order_ids(stocked):
    with pytest.raises(psycopg.errors.CheckViolation):
        stocked.execute("INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, "
                        "status, assigned_at) VALUES ('x-2', %s, E'4\\n2', 3, 1, 'pending', now())",
                        (pool_id(stocked),))


def test_schema_refuses_a_second_code_for_the_same_order_carrier_and_parcel(stocked):
    assign(stocked, "42", "correios")
    with pytest.raises(psycopg.errors.UniqueViolation):
        stocked.execute("UPDATE sequencing.tracking SET order_id = '42', freightcarrier_id = 3, parcel = 1, "
                        "status = 'pending', assigned_at = now() "
                        "WHERE id = (SELECT min(id) FROM sequencing.tracking WHERE order_id IS NULL)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        stocked.execute("INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, "
                        "status, assigned_at) VALUES ('x-3', %s, '42', 3, 1, 'pending', now())", (pool_id(stocked),))


def test_schema_refuses_reassigning_or_freeing_an_assigned_code(stocked):
    a = assign(stocked, "42", "correios")
    changes = ["order_id = '43'", "freightcarrier_id = 7", "parcel = 2", "tracking_id = 'other'",
               "order_id = NULL, freightcarrier_id = NULL, parcel = NULL, status = NULL, assigned_at = NULL"]
    for change in changes:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
            stocked.execute(f"UPDATE sequencing.tracking SET {change} WHERE tracking_id = %s", (a.code,))
    assert assign(stocked, "42", "correios").code == a.code


def test_schema_refuses_deleting_an_assigned_code(stocked):
    a = assign(stocked, "42", "correios")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        stocked.execute("DELETE FROM sequencing.tracking WHERE tracking_id = %s", (a.code,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        stocked.execute("DELETE FROM sequencing.tracking")
    assert stocked.execute("SELECT order_id FROM sequencing.tracking WHERE tracking_id = %s",
                           (a.code,)).fetchone() == ("42",)


def test_schema_allows_status_changes_of_an_assigned_code(stocked):
    # The guard protects the binding, not the shipment's progress.
    a = assign(stocked, "42", "correios")
    stocked.execute("UPDATE sequencing.tracking SET status = 'in_transit' WHERE tracking_id = %s", (a.code,))
    assert stocked.execute("SELECT status FROM sequencing.tracking WHERE tracking_id = %s",
                           (a.code,)).fetchone() == ("in_transit",)


def test_cli_carrier_that_is_not_valid_utf8_is_refused_as_unknown(stocked_cli, conn):
    import os
    import subprocess

    from conftest import trackctl_command

    proc = subprocess.run(trackctl_command() + ["assign", "42", os.fsencode("corr\udcffeios")],
                          capture_output=True, env=stocked_cli.env)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(b"trackctl: error: unknown carrier"), proc
    assert assigned(conn) == []


# -- a cancelled code is not handed out again (issue 11.8) --------------------------------------


def test_assign_after_cancel_refuses_the_cancelled_code_and_names_the_way_to_a_new_one(stocked, cli):
    from trackctl.errors import CodeCancelled
    from trackctl.shipments import cancel

    conn = stocked
    code = assign(conn, "42", "correios").code
    cancel(conn, "42")
    with pytest.raises(CodeCancelled, match=f"its code {code} is not handed out again"):
        assign(conn, "42", "correios")
    r = cli("assign", "42", "correios")
    assert r.returncode == 1 and r.stdout == "", r  # nothing a script could take for a live code
    assert r.stderr == (f"trackctl: error: order 42 with correios was cancelled: its code {code} is not handed "
                        "out again (a new parcel gets a new code: 'trackctl assign 42 correios --next-parcel')\n")
    r = cli("assign", "42", "correios", "--next-parcel")
    assert r.returncode == 0 and r.stdout.strip() not in ("", code), r
    new = r.stdout.strip()
    assert cli("assign", "42", "correios", "--parcel", "2").stdout == f"{new}\n"  # idempotent again
    assert assign(conn, "42", "jadlog").new  # other carriers of the order are not affected


# --- claims by ticket (issue 14.3, sql/0009_claim_tickets.sql) ----------------------------------


def small_pool(conn, target: int = 3) -> list[str]:
    """Pool 'small' (carrier 'c-small') refilled to `target` codes; return them in ticket order."""
    from trackctl.pools import available_codes, create_pool

    create_pool(conn, "small", target=target)
    add_carrier(conn, "c-small", pool="small")
    refill(conn, "small")
    return list(available_codes(conn, "small"))


def tickets(conn, codes: list[str]) -> list[int | None]:
    found = dict(conn.execute("SELECT tracking_id, ticket FROM sequencing.tracking WHERE tracking_id = ANY(%s)",
                              (codes,)).fetchall())
    return [found.get(c) for c in codes]


def test_a_rolled_back_claim_leaves_its_code_free_and_out_of_reach_until_refill_renumbers_it(conn):
    c1, c2, c3 = small_pool(conn)
    assert tickets(conn, [c1, c2, c3]) == [1, 2, 3]
    with conn.transaction(force_rollback=True):  # a claim that rolls back (an error, a kill) drew ticket 1
        assert assign(conn, "gone", "c-small").code == c1
    assert free_count(conn, "small") == 3  # c1 is free: nothing of the rolled-back claim stayed
    # Later claims go on from ticket 2; none waits or fails.
    assert [assign(conn, o, "c-small").code for o in ("o2", "o3")] == [c2, c3]
    dry = assign(conn, "o4", "c-small")  # every ticket in stock is drawn: the code is made inline
    assert dry.generated_inline and dry.code not in (c1, c2, c3)
    assert free_count(conn, "small") == 1  # c1, out of reach

    (result,) = refill(conn, "small")
    assert (result.free_before, result.generated) == (1, 2)  # c1 counts as free; the shortfall is made
    # c1 got a ticket after every ticket drawn so far; the new codes follow it.
    assert tickets(conn, [c1]) == [4]  # after ticket 3, the last drawn (a dry pool draws none)
    after = [assign(conn, o, "c-small") for o in ("o5", "o6", "o7")]
    assert after[0].code == c1 and not any(a.generated_inline for a in after)
    assert free_count(conn, "small") == 0
    codes = [r[0] for r in conn.execute("SELECT tracking_id FROM sequencing.tracking WHERE order_id IS NOT NULL")]
    assert len(codes) == len(set(codes)) == 6


def test_a_rolled_back_batch_chunk_leaves_its_codes_for_refill_and_the_rerun_takes_later_ones(conn):
    from trackctl.assign import assign_lines

    codes = small_pool(conn, target=10)
    records = [(i + 1, {"order_id": f"b{i}", "carrier": "c-small"}) for i in range(4)]
    with conn.transaction(force_rollback=True):
        first = [o.assignment.code for o in assign_lines(conn, records)]
    assert first == codes[:4]
    again = [o.assignment.code for o in assign_lines(conn, records)]
    assert again == codes[4:8]  # the drawn tickets are not drawn again
    (result,) = refill(conn, "small")
    assert (result.free_before, result.generated) == (6, 4)
    assert tickets(conn, codes[:4]) == [11, 12, 13, 14]  # renumbered after ticket 10, in their old order
    more = [assign(conn, f"m{i}", "c-small").code for i in range(6)]
    assert more == codes[8:10] + codes[:4]


def test_renumbering_leaves_a_code_that_is_being_claimed_to_its_claimer(conn, db_url):
    c1, c2, c3 = small_pool(conn)
    with conn.transaction(force_rollback=True):
        assert assign(conn, "gone", "c-small").code == c1  # ticket 1 drawn, c1 left behind
    with psycopg.connect(db_url) as claimer:  # holds the claim of c2 open (ticket 2, row locked)
        assert assign(claimer, "slow", "c-small").code == c2
        renumbered = conn.execute("SELECT sequencing.renumber_skipped(p.id) FROM sequencing.pool p "
                                  "WHERE p.name = 'small'").fetchone()[0]
        assert renumbered == 1 and tickets(conn, [c1, c2]) == [4, 2]  # c2 is locked: left alone
        claimer.commit()
    assert [assign(conn, o, "c-small").code for o in ("o3", "o4")] == [c3, c1]
    rows = conn.execute("SELECT order_id FROM sequencing.tracking WHERE tracking_id = ANY(%s) ORDER BY ticket",
                        ([c1, c2, c3],)).fetchall()
    assert sorted(r[0] for r in rows) == ["o3", "o4", "slow"]


def test_a_used_up_s10_range_hands_out_its_left_behind_codes_before_refusing(conn):
    from trackctl.errors import PoolExhausted
    from trackctl.pools import S10Range, available_codes, create_pool

    create_pool(conn, "tiny", target=2, kind="s10", s10=S10Range("AA", "BR", 10000000, 10000001))
    add_carrier(conn, "c-tiny", pool="tiny")
    refill(conn, "tiny")
    c1, c2 = available_codes(conn, "tiny")
    with conn.transaction(force_rollback=True):
        assert assign(conn, "gone", "c-tiny").code == c1
    assert assign(conn, "o2", "c-tiny").code == c2
    # No serial is left to make a code inline, but c1 is free: it gets a new ticket and is handed out.
    got = assign(conn, "o3", "c-tiny")
    assert got.code == c1 and not got.generated_inline
    with pytest.raises(PoolExhausted):
        assign(conn, "o4", "c-tiny")


# Index entries that scans of the tracking table's indexes returned in this transaction, dead ones
# included (pg_stat_get_xact_tuples_returned counts every entry the index hands to the executor).
INDEX_ENTRIES_READ = """SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0)::bigint
                        FROM pg_index WHERE indrelid = 'sequencing.tracking'::regclass"""


def entries_read(conn, sql: str, params=None) -> int:
    """Index entries of the tracking table the statement reads (it is committed)."""
    with conn.transaction():
        before = conn.execute(INDEX_ENTRIES_READ).fetchone()[0]
        conn.execute(sql, params)
        return conn.execute(INDEX_ENTRIES_READ).fetchone()[0] - before


def claim_pages(conn, sql: str, params=None) -> int:
    """Shared buffers (hit + read) the statement touches, from EXPLAIN (ANALYZE, BUFFERS) (it is committed)."""
    with conn.transaction():
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0]
    top = plan[0]["Plan"]  # the top node counts every node run under it, the claim's UPDATE among them
    return top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)


def test_the_claim_reads_no_more_after_a_thousand_claims_under_a_held_snapshot(conn, db_url):
    """Dead tuples that a held snapshot keeps from vacuum do not reach the claim: it reads as many
    index entries, and as many pages, after 1 200 more claims under the snapshot as before
    (counts from the server, not a timing). The control, a scan for the first free code as the
    claim did before tickets, shows that the dead entries are there to be stepped over."""
    from trackctl.assign import SQL

    small_pool(conn, target=3000)
    conn.execute("VACUUM ANALYZE sequencing.tracking")
    pool = conn.execute("SELECT id FROM sequencing.pool WHERE name = 'small'").fetchone()[0]
    scan = ("SELECT id FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NULL "
            "ORDER BY ticket LIMIT 1 FOR UPDATE SKIP LOCKED")

    def probe(order: str) -> tuple[int, int, int]:
        # Real claims, committed: a rolled-back one would leave its code behind, ahead of the scan.
        def params(n):
            return {"order_id": f"{order}-{n}", "carrier": "c-small", "carrier_id": None, "parcel": 1,
                    "next_parcel": False}
        return (entries_read(conn, SQL.assign_one, params(1)), claim_pages(conn, SQL.assign_one, params(2)),
                entries_read(conn, scan, (pool,)))

    claims = 1200
    with psycopg.connect(db_url) as holder:
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM sequencing.pool").fetchone()  # BEGIN; the snapshot is taken here
        for i in range(300):  # under the snapshot already: the heap and indexes settle into holding versions
            assign(conn, f"settle-{i}", "c-small")
        entries_before, pages_before, scan_before = probe("probe-1")
        for i in range(claims):
            assign(conn, f"held-{i}", "c-small")
        entries_after, pages_after, scan_after = probe("probe-2")
        holder.rollback()
    assert scan_after - scan_before >= claims, (scan_before, scan_after)  # every claim's entry is still there
    # The ticket's look-up (one entry) and the outbox row's foreign-key check of the claimed row
    # (its old and new version in the primary key): the same few entries whatever the dead ones.
    assert entries_before == entries_after <= 3, (entries_before, entries_after)
    assert pages_after <= pages_before + 2, (pages_before, pages_after)


def test_a_shipment_names_an_existing_carrier_and_keeps_it(stocked, db_url):
    # Migration 0012 checks a shipment's carrier once per statement instead of a foreign key per
    # row; the guarantees stay those of the key: no shipment of a missing carrier (assigned from a
    # pool or inserted as an external one), no carrier deleted or renumbered under its shipments,
    # and an assignment in progress holds its carrier against a delete.
    missing = stocked.execute("SELECT max(id) + 1 FROM sequencing.carrier").fetchone()[0]
    free = "SELECT min(id) FROM sequencing.tracking WHERE order_id IS NULL"
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        stocked.execute(f"UPDATE sequencing.tracking SET order_id = '42', freightcarrier_id = %s, parcel = 1, "
                        f"status = 'pending', assigned_at = now() WHERE id = ({free})", (missing,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        stocked.execute("INSERT INTO sequencing.tracking (tracking_id, source, order_id, freightcarrier_id, "
                        "status, assigned_at) VALUES ('EXT-00001', 'external', '42', %s, 'pending', now())", (missing,))
    assert assigned(stocked) == []  # both statements were refused whole

    unused = add_carrier(stocked, "unused", 11)
    stocked.execute("DELETE FROM sequencing.carrier WHERE id = %s", (unused.id,))  # no shipments: it may go
    a = assign(stocked, "42", "correios")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        stocked.execute("DELETE FROM sequencing.carrier WHERE id = 3")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        stocked.execute("UPDATE sequencing.carrier SET id = 13 WHERE id = 3")
    # Statements that give no row a new carrier pass: an assigned row's other columns change freely.
    stocked.execute("UPDATE sequencing.tracking SET next_poll_at = now() WHERE tracking_id = %s", (a.code,))

    # An assignment in progress holds its carrier: a delete waits for it, then sees its shipment.
    with psycopg.connect(db_url) as assigning:
        assigning.execute(f"UPDATE sequencing.tracking SET order_id = '43', freightcarrier_id = 7, parcel = 1, "
                          f"status = 'pending', assigned_at = now() WHERE id = ({free})")
        with stocked.transaction():
            stocked.execute("SET LOCAL lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                stocked.execute("DELETE FROM sequencing.carrier WHERE id = 7")
        assigning.commit()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        stocked.execute("DELETE FROM sequencing.carrier WHERE id = 7")
    assert [r[:3] for r in assigned(stocked)] == [("42", 3, 1), ("43", 7, 1)]
