"""Pools and refill: `trackctl pool ...`, `trackctl refill` and the library functions under them."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import AlreadyExists, InvalidValue, UnknownPool
from trackctl.pools import available_codes, create_pool, pool_levels, refill, set_target, uuid_codes


def levels(conn) -> dict[str, tuple]:
    return {p.name: (p.kind, p.target, p.free, p.assigned) for p in pool_levels(conn)}


def free_codes(conn, pool: str = "default") -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT t.tracking_id FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id "
        "WHERE p.name = %s AND t.order_id IS NULL ORDER BY t.id", (pool,))]


# --- library level ---------------------------------------------------------------------------


def test_default_pool_has_target_200_and_no_codes_after_migrate(conn):
    assert levels(conn) == {"default": ("uuid", 200, 0, 0)}


def test_refill_generates_exactly_the_target_into_an_empty_pool(conn):
    [r] = refill(conn)
    assert (r.pool, r.target, r.free_before, r.generated, r.skipped) == ("default", 200, 0, 200, False)
    assert levels(conn)["default"] == ("uuid", 200, 200, 0)


def test_refill_tops_up_exactly_the_shortfall(conn):
    add_carrier(conn, "correios", 3)
    refill(conn)
    for order in range(37):
        assign(conn, str(order), "correios")
    [r] = refill(conn)
    assert (r.free_before, r.generated) == (163, 37)
    assert levels(conn)["default"] == ("uuid", 200, 200, 37)


def test_refill_does_nothing_when_the_pool_is_full_or_over_target(conn):
    refill(conn)
    before = free_codes(conn)
    [r] = refill(conn)
    assert (r.free_before, r.generated) == (200, 0)
    set_target(conn, "default", 50)
    [r] = refill(conn)
    assert (r.free_before, r.generated) == (200, 0)
    assert free_codes(conn) == before


def test_refill_of_one_pool_leaves_the_others_alone(conn):
    create_pool(conn, "express", target=10)
    [r] = refill(conn, "express")
    assert (r.pool, r.generated) == ("express", 10)
    assert levels(conn) == {"default": ("uuid", 200, 0, 0), "express": ("uuid", 10, 10, 0)}


def test_refill_with_target_zero_generates_nothing(conn):
    create_pool(conn, "paused", target=0)
    assert [(r.pool, r.generated) for r in refill(conn, "paused")] == [("paused", 0)]


def test_codes_are_distinct_version_4_uuids_made_by_the_application(conn):
    refill(conn)
    codes = free_codes(conn)
    assert len(set(codes)) == 200
    for code in codes:
        assert str(uuid.UUID(code)) == code and uuid.UUID(code).version == 4
        assert uuid.UUID(code).variant == uuid.RFC_4122
    # Made in Python and copied in: no column default or trigger could have produced them.
    default = conn.execute("SELECT column_default FROM information_schema.columns WHERE table_schema = "
                           "'sequencing' AND table_name = 'tracking' AND column_name = 'tracking_id'").fetchone()
    assert default == (None,)


def test_uuid_codes_spread_over_every_random_digit():
    # The codes are formatted from random hex by hand: every one of the 30 random hex digits takes
    # all 16 values, the variant digit all four it may, and no code repeats.
    codes = list(uuid_codes(4000))
    assert len(set(codes)) == 4000
    digits = [c.replace("-", "") for c in codes]
    for position in range(32):
        seen = {d[position] for d in digits}
        if position == 12:
            assert seen == {"4"}
        elif position == 16:
            assert seen == set("89ab")
        else:
            assert len(seen) == 16, position


def test_create_pool_refuses_duplicates_bad_names_bad_targets_and_unknown_kinds(conn):
    create_pool(conn, "express", target=5)
    with pytest.raises(AlreadyExists):
        create_pool(conn, "express")
    for bad in ("Express", "", "-x", "a" * 33, "ex press", "ex\x00"):
        with pytest.raises(InvalidValue):
            create_pool(conn, bad)
    for target in (-1, 10_000_001):
        with pytest.raises(InvalidValue):
            create_pool(conn, "other", target=target)
    with pytest.raises(InvalidValue):
        create_pool(conn, "other", kind="sha1")
    assert set(levels(conn)) == {"default", "express"}


def test_unknown_pool_names_the_known_ones(conn):
    for call in (lambda: refill(conn, "nope"), lambda: set_target(conn, "nope", 5),
                 lambda: pool_levels(conn, "nope"), lambda: list(available_codes(conn, "nope"))):
        with pytest.raises(UnknownPool) as info:
            call()
        assert "nope" in info.value.message and "default" in info.value.message


def test_available_codes_are_free_ones_oldest_first(conn):
    add_carrier(conn, "correios", 3)
    refill(conn)
    oldest = free_codes(conn)
    taken = assign(conn, "1", "correios").code
    assert taken == oldest[0]
    assert list(available_codes(conn, "default", 3)) == oldest[1:4]
    assert list(available_codes(conn)) == oldest[1:]


# --- command line ----------------------------------------------------------------------------


def test_cli_refill_reports_what_it_generated(cli, conn):
    r = cli("refill")
    assert r.returncode == 0, r
    assert r.stdout == "default\t200\t0\t200\n"
    again = cli("refill", "--format", "json")
    assert again.returncode == 0, again
    assert json.loads(again.stdout) == [{"pool": "default", "target": 200, "free_before": 200, "generated": 0}]
    assert levels(conn)["default"] == ("uuid", 200, 200, 0)


def test_cli_refill_of_one_pool(cli, conn):
    create_pool(conn, "express", target=3)
    r = cli("refill", "--pool", "express", "--format", "csv")
    assert r.returncode == 0, r
    assert r.stdout == "pool,target,free_before,generated\nexpress,3,0,3\n"
    assert levels(conn)["default"][2] == 0


def test_cli_lists_pools(cli):
    r = cli("pool", "list")
    assert r.returncode == 0, r
    assert r.stdout == "default\tuuid\t200\t0\t0\n"


def test_cli_pool_create_set_and_list(cli):
    r = cli("pool", "create", "express", "--target", "500")
    assert r.returncode == 0, r
    assert r.stdout == "" and "express" in r.stderr
    r = cli("pool", "set", "default", "--target", "20")
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert cli("refill").returncode == 0
    r = cli("pool", "list")
    assert r.returncode == 0, r
    assert r.stdout == "default\tuuid\t20\t20\t0\nexpress\tuuid\t500\t500\t0\n"


def test_cli_pool_list_json_and_csv_keys(cli, conn):
    add_carrier(conn, "correios", 3)
    refill(conn)
    assign(conn, "1", "correios")
    r = cli("pool", "list", "--format", "json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == [{"name": "default", "kind": "uuid", "target": 200, "free": 199, "assigned": 1}]
    r = cli("pool", "list", "--format", "csv")
    assert r.stdout.splitlines() == ["name,kind,target,free,assigned", "default,uuid,200,199,1"]
    r = cli("pool", "list", "--format", "jsonl")
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"name": "default", "kind": "uuid", "target": 200, "free": 199, "assigned": 1}]


def test_cli_pool_available_prints_one_free_code_per_line(cli, conn):
    create_pool(conn, "express", target=4)
    refill(conn)
    r = cli("pool", "available", "--pool", "express")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == free_codes(conn, "express")
    r = cli("pool", "available", "--limit", "3")
    assert r.stdout.splitlines() == free_codes(conn)[:3]
    r = cli("pool", "available")
    assert len(r.stdout.splitlines()) == 204
    r = cli("pool", "available", "--limit", "0")
    assert r.returncode == 0 and r.stdout == "", r


def test_cli_pool_available_negative_limit_is_a_usage_error(cli):
    r = cli("pool", "available", "--limit", "-1")
    assert r.returncode == 2, r
    assert r.stdout == ""


def test_cli_pool_available_into_a_closed_pipe_exits_quietly(cli, conn):
    import subprocess

    refill(conn)
    from conftest import trackctl_command

    cmd = " ".join(trackctl_command()) + " pool available | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, env=cli.env)
    assert proc.returncode == 0, proc
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == b""


@pytest.mark.parametrize("args", [("pool", "set", "nope", "--target", "5"), ("pool", "available", "--pool", "nope"),
                                  ("refill", "--pool", "nope")])
def test_cli_unknown_pool_is_an_error_naming_the_known_pools(cli, args):
    r = cli(*args)
    assert r.returncode == 1, r
    assert r.stdout == ""
    # The error is the last line (a cron job such as refill may log its failed run before it).
    assert r.stderr.splitlines()[-1].startswith("trackctl: error: unknown pool 'nope' (known: default; create it with"), r
    assert "Traceback" not in r.stderr


def test_cli_pool_create_twice_is_an_error(cli):
    assert cli("pool", "create", "express").returncode == 0
    r = cli("pool", "create", "express")
    assert r.returncode == 1, r
    assert "already exists" in r.stderr


@pytest.mark.parametrize("target", ["-5", "10000001"])
def test_cli_pool_target_out_of_range_is_a_usage_error(cli, conn, target):
    r = cli("pool", "set", "default", "--target", target)
    assert r.returncode == 2, r
    assert levels(conn)["default"][1] == 200


# --- pool remove (issue 11, "also expected") ---------------------------------------------------


def test_an_unused_pool_is_removed_with_its_free_codes(conn, cli):
    from trackctl.pools import remove_pool

    create_pool(conn, "spare", target=3)
    refill(conn, "spare")
    removed = remove_pool(conn, "spare")
    assert (removed.name, removed.free_codes) == ("spare", 3)
    assert "spare" not in levels(conn)
    assert conn.execute("SELECT count(*) FROM sequencing.tracking").fetchone()[0] == 0

    create_pool(conn, "empty", target=0)
    r = cli("pool", "remove", "empty")
    assert r.returncode == 0 and r.stdout == "", r
    assert r.stderr == "trackctl: removed pool empty (0 free codes deleted)\n"
    assert "empty" not in levels(conn)


def test_a_pool_in_use_is_not_removed_and_nothing_changes(conn, cli):
    from trackctl.errors import InUse
    from trackctl.pools import remove_pool

    create_pool(conn, "express", target=2)
    refill(conn, "express")
    add_carrier(conn, "jadlog", pool="express")
    with pytest.raises(InUse, match="carrier jadlog draws from it"):
        remove_pool(conn, "express")
    r = cli("pool", "remove", "express")
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert "pool 'express' is in use: carrier jadlog draws from it" in r.stderr
    assert "trackctl carrier set jadlog --pool OTHER" in r.stderr

    assign(conn, "42", "jadlog")
    conn.execute("UPDATE sequencing.carrier SET pool_id = (SELECT id FROM sequencing.pool WHERE name = 'default')")
    r = cli("pool", "remove", "express")  # no carrier left, but a code of it is assigned
    assert r.returncode == 1 and "1 of its codes are assigned" in r.stderr and "--target 0" in r.stderr, r
    assert levels(conn)["express"] == ("uuid", 2, 1, 1)  # free code kept too


def test_removing_an_unknown_pool_is_one_clear_error(conn, cli):
    from trackctl.pools import remove_pool

    with pytest.raises(UnknownPool):
        remove_pool(conn, "nosuch")
    r = cli("pool", "remove", "nosuch")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == ("trackctl: error: unknown pool 'nosuch' (known: default; "
                        "create it with 'trackctl pool create NAME')\n")
    r = cli("pool", "remove", "Bad Name")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r


def test_a_code_names_an_existing_pool_and_keeps_it(conn, db_url):
    # Migration 0011 checks a code's pool once per statement instead of a foreign key per row;
    # the guarantees stay those of the key: no code of a missing pool, no pool deleted under its
    # codes, a code never moves to another pool.
    pool = create_pool(conn, "kept")
    other = create_pool(conn, "other")
    missing = conn.execute("SELECT max(id) + 1 FROM sequencing.pool").fetchone()[0]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        with conn.cursor() as cur, cur.copy("COPY sequencing.tracking (tracking_id, pool_id, ticket) FROM STDIN") as copy:
            copy.write(f"{next(uuid_codes(1))}\t{pool.id}\t900001\n{next(uuid_codes(1))}\t{missing}\t900001\n")
    assert levels(conn)["kept"][2] == 0  # the whole statement was refused
    refill(conn, "kept")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("DELETE FROM sequencing.pool WHERE id = %s", (pool.id,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("UPDATE sequencing.tracking SET pool_id = %s WHERE pool_id = %s", (other.id, pool.id))
    conn.execute("DELETE FROM sequencing.pool WHERE id = %s", (other.id,))  # no codes: it may go

    # A refill in progress holds its pool: a delete waits for it, then sees its codes.
    with psycopg.connect(db_url) as filling:
        with filling.cursor() as cur, cur.copy("COPY sequencing.tracking (tracking_id, pool_id, ticket) FROM STDIN") as copy:
            copy.write(f"{next(uuid_codes(1))}\t{pool.id}\t900002\n")
        conn.execute("DELETE FROM sequencing.tracking WHERE pool_id = %s", (pool.id,))  # the committed codes
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("DELETE FROM sequencing.pool WHERE id = %s", (pool.id,))
        filling.commit()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("DELETE FROM sequencing.pool WHERE id = %s", (pool.id,))
