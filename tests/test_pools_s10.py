"""UPU S10 pools: check digits, generation in order from an allotted range, never a serial twice."""

from __future__ import annotations

import json

import psycopg
import pytest

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import AlreadyExists, InvalidValue, PoolExhausted
from trackctl.pools import (S10Range, create_pool, is_valid_s10, parse_s10_range, pool_levels, refill, s10_check_digit,
                            s10_code, s10_usage, set_target)

WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)

# Worked by hand from the weights 8 6 4 2 3 5 9 7 (check = 11 - sum mod 11; 10 -> 0; 11 -> 5):
#   12345678: 8+12+12+8+15+30+63+56 = 204, 204 mod 11 = 6, 11-6 = 5
#   47312482: 32+42+12+2+6+20+72+14 = 200, 200 mod 11 = 2, 11-2 = 9
#   00000000: sum 0, 11-0 = 11 -> 5
#   00000008: 8*7 = 56, 56 mod 11 = 1, 11-1 = 10 -> 0
#   00000001: 7, 11-7 = 4
#   87654321: 64+42+24+10+12+15+18+7 = 192, 192 mod 11 = 5, 11-5 = 6
KNOWN_VALID = ["RA123456785BR", "EE473124829GB", "AA000000005BR", "AA000000080BR", "AA000000014BR", "CP876543216CN"]


def independent_check(code: str) -> bool:
    """A second way to verify: sum + check is a multiple of 11, except the two remapped cases."""
    digits = [int(d) for d in code[2:10]]
    check = int(code[10])
    total = sum(w * d for w, d in zip(WEIGHTS, digits))
    return (total + check) % 11 == 0 or (check == 0 and total % 11 == 1) or (check == 5 and total % 11 == 0)


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_known_codes_are_valid_and_generated_the_same(code):
    assert independent_check(code)
    assert is_valid_s10(code)
    assert s10_code(code[:2], int(code[2:10]), code[11:]) == code


def test_the_two_computations_agree_on_many_serials():
    for serial in list(range(0, 2000)) + list(range(99_998_000, 100_000_000)) + [12345678, 47312482, 50505050]:
        assert independent_check(s10_code("AA", serial, "BR")), serial


@pytest.mark.parametrize("code", ["RA123456784BR", "RA12345678BR", "ra123456785br", "RA1234567855BR", "1A123456785BR"])
def test_malformed_or_wrong_codes_are_invalid(code):
    assert not is_valid_s10(code)


def test_check_digit_refuses_serials_of_more_than_eight_digits():
    with pytest.raises(ValueError):
        s10_check_digit(100_000_000)


@pytest.fixture
def s10_pool(conn):
    create_pool(conn, "corr", target=4, kind="s10", s10=S10Range("AA", "BR", 12345678, 12345687))
    add_carrier(conn, "correios", pool="corr")
    return "corr"


def codes_of(conn, pool: str) -> list[str]:
    return [c for (c,) in conn.execute("""SELECT t.tracking_id FROM sequencing.tracking t JOIN sequencing.pool p
                                          ON p.id = t.pool_id WHERE p.name = %s ORDER BY t.id""", (pool,))]


def test_refill_generates_the_range_in_order_and_assign_hands_it_out_in_order(conn, s10_pool):
    refill(conn, s10_pool)
    assert codes_of(conn, s10_pool) == [s10_code("AA", n, "BR") for n in range(12345678, 12345682)]
    assert codes_of(conn, s10_pool)[0] == "AA123456785BR"
    assert [assign(conn, f"o{i}", "correios").code for i in range(3)] == codes_of(conn, s10_pool)[:3]
    refill(conn, s10_pool)  # 1 free left: 3 more, continuing the range
    assert codes_of(conn, s10_pool) == [s10_code("AA", n, "BR") for n in range(12345678, 12345685)]
    assert all(is_valid_s10(c) for c in codes_of(conn, s10_pool))


def test_an_exhausted_range_is_a_clear_error_and_no_serial_is_reused(conn, s10_pool, cli):
    refill(conn, s10_pool)
    for i in range(4):
        assign(conn, f"o{i}", "correios")
    r = cli("refill", "--pool", s10_pool)  # 6 serials left, target 4: fine
    assert r.returncode == 0, r
    for i in range(4, 8):
        assign(conn, f"o{i}", "correios")
    r = cli("refill", "--pool", s10_pool)  # 2 serials left for a shortfall of 4
    assert r.returncode == 1 and "S10 serial range used up" in r.stderr, r
    assert r.stdout == "corr\t4\t0\t2\n"
    assign(conn, "o8", "correios")
    assign(conn, "o9", "correios")
    with pytest.raises(PoolExhausted, match=r"S10 pool 'corr' has used its whole range AA12345678-12345687BR"):
        assign(conn, "o10", "correios")
    r = cli("assign", "o11", "correios")
    assert r.returncode == 1 and "used its whole range" in r.stderr and "new range" in r.stderr, r
    codes = codes_of(conn, s10_pool)
    assert codes == [s10_code("AA", n, "BR") for n in range(12345678, 12345688)]  # each serial once
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never reused"):
        conn.execute("UPDATE sequencing.pool SET s10_next = s10_first WHERE name = %s", (s10_pool,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="cannot be changed"):
        conn.execute("UPDATE sequencing.pool SET s10_last = s10_last + 10 WHERE name = %s", (s10_pool,))


def test_health_warns_when_at_most_ten_percent_of_a_range_is_left(conn, s10_pool, cli):
    refill(conn, s10_pool)
    for i in range(8):
        assign(conn, f"o{i}", "correios")
    (usage,) = s10_usage(conn)
    assert (usage.size, usage.left) == (10, 2)
    h = cli("health", "--format", "json")
    messages = [p["message"] for p in json.loads(h.stdout)["problems"] if p["check"] == "s10"]
    assert messages == []  # 2 of 10 left is 20%
    assign(conn, "o8", "correios")
    h = cli("health", "--format", "json")
    assert h.returncode == 1
    (message,) = [p["message"] for p in json.loads(h.stdout)["problems"] if p["check"] == "s10"]
    assert message.startswith("S10 pool 'corr' has 1 of 10 codes left in its range AA12345678-12345687BR")


def test_health_on_a_used_up_range_says_to_add_a_range_not_to_refill(conn, s10_pool, cli):
    # issue 11.8: "run 'trackctl refill'" cannot help a pool whose serials are all used
    refill(conn, s10_pool)
    refill(conn, s10_pool)
    for i in range(10):
        assign(conn, f"o{i}", "correios")
    assert refill(conn, s10_pool)[0].exhausted
    h = cli("health", "--format", "json")
    assert h.returncode == 1, h
    problems = json.loads(h.stdout)["problems"]
    (pool,) = [p["message"] for p in problems if p["check"] == "pool" and "'corr'" in p["message"]]
    assert "trackctl refill" not in pool and "S10 range is used up, so refill cannot help" in pool, pool
    for message in (pool, next(p["message"] for p in problems if p["check"] == "s10")):
        assert ("'trackctl pool create NEW --kind s10 --prefix AA --country BR --range FIRST-LAST'" in message
                and "'trackctl carrier set correios --pool NEW'" in message), message


def test_overlapping_ranges_are_refused_other_prefixes_are_not(conn, s10_pool):
    with pytest.raises(AlreadyExists, match="overlaps pool corr"):
        create_pool(conn, "corr2", kind="s10", s10=S10Range("AA", "BR", 12345680, 12345699))
    create_pool(conn, "corr3", kind="s10", s10=S10Range("AB", "BR", 12345680, 12345699))
    create_pool(conn, "corr4", kind="s10", s10=S10Range("AA", "BR", 12345688, 12345699))
    assert [u.pool for u in s10_usage(conn)] == ["corr", "corr3", "corr4"]


def test_pool_create_on_the_command_line(cli):
    r = cli("pool", "create", "sro", "--kind", "s10", "--prefix", "ra", "--country", "br", "--range", "12345678-12345678")
    assert r.returncode == 0, r
    assert "target 1 (the whole S10 range)" in r.stderr, r  # no --target: the default 200 is capped
    assert cli("refill", "--pool", "sro").returncode == 0  # the whole range of 1 serial: reached
    assert cli("pool", "available", "--pool", "sro").stdout == "RA123456785BR\n"
    for args, message in [
        (("--kind", "s10", "--prefix", "A1", "--country", "BR", "--range", "1-2"), "invalid S10 prefix"),
        (("--kind", "s10", "--prefix", "AA", "--country", "BRA", "--range", "1-2"), "invalid S10 country"),
        (("--kind", "s10", "--prefix", "AA", "--country", "BR", "--range", "5-3"), "ends before it starts"),
        (("--kind", "s10", "--prefix", "AA", "--country", "BR", "--range", "1-123456789"), "invalid S10 range"),
        (("--kind", "s10",), "invalid S10 prefix"),
        (("--prefix", "AA", "--country", "BR", "--range", "1-2"), "are for S10 pools"),
    ]:
        r = cli("pool", "create", "bad", *args)
        assert r.returncode == 2 and message in r.stderr, (args, r)


def test_a_target_larger_than_the_range_is_refused_and_the_default_is_capped(conn, cli):
    # issue 11.8: target 200 on a range of 101 serials was accepted, and every refill then failed
    r = cli("pool", "create", "tiny", "--kind", "s10", "--prefix", "AA", "--country", "BR", "--range", "100-200",
            "--target", "200")
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
    assert "target 200 is more than the 101 serials" in r.stderr and "--target 101 or less" in r.stderr, r
    assert [lv.name for lv in pool_levels(conn)] == ["default"]  # nothing created
    with pytest.raises(InvalidValue, match="more than the 101 serials"):
        create_pool(conn, "tiny", target=102, kind="s10", s10=S10Range("AA", "BR", 100, 200))

    pool = create_pool(conn, "tiny", kind="s10", s10=S10Range("AA", "BR", 100, 200))
    assert pool.target == 101
    assert create_pool(conn, "exact", target=5, kind="s10", s10=S10Range("AB", "BR", 1, 5)).target == 5
    [result] = refill(conn, "tiny")
    assert (result.generated, result.exhausted) == (101, False)

    r = cli("pool", "set", "tiny", "--target", "150")
    assert r.returncode == 2 and "more than the 101 serials" in r.stderr, r
    assert set_target(conn, "tiny", 50).target == 50
    with pytest.raises(psycopg.errors.CheckViolation):  # the schema holds it too
        conn.execute("UPDATE sequencing.pool SET target = 102 WHERE name = 'tiny'")


def test_parse_range():
    assert parse_s10_range("aa", "br", " 1 - 99999999 ") == S10Range("AA", "BR", 1, 99_999_999)
    with pytest.raises(InvalidValue):
        parse_s10_range("AA", "BR", "12")
