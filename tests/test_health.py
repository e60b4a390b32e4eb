"""`trackctl health`: exit 0 when nothing needs a person, else exit 1 with one line per problem."""

from __future__ import annotations

import json


from trackctl.health import run_checks
from trackctl.pools import create_pool, refill, set_target

UNREACHABLE = "postgresql://u:secretpw@127.0.0.1:1/x"


def test_healthy_database_exits_0_with_no_output(cli, conn):
    refill(conn)
    assert run_checks(conn) == []
    r = cli("health")
    assert r.returncode == 0, r
    assert r.stdout == ""
    r = cli("health", "--format", "json")
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert doc["healthy"] is True and doc["problems"] == []


def test_pool_below_a_quarter_of_its_target_is_a_problem(cli, conn):
    r = cli("health")  # a fresh database: the default pool was never refilled
    assert r.returncode == 1, r
    assert r.stdout.splitlines() == [line for line in r.stdout.splitlines() if line.startswith("pool: ")]
    assert len(r.stdout.splitlines()) == 1
    assert "pool 'default' has 0 free codes" in r.stdout and "trackctl refill" in r.stdout


def test_pool_exactly_at_a_quarter_is_fine_and_one_below_is_not(conn):
    refill(conn)  # 200 free
    set_target(conn, "default", 800)
    assert run_checks(conn) == []
    set_target(conn, "default", 801)
    [problem] = run_checks(conn)
    assert problem.check == "pool" and "'default' has 200 free codes" in problem.message


def test_one_line_per_low_pool_and_a_zero_target_pool_is_never_low(cli, conn):
    create_pool(conn, "express", target=40)
    create_pool(conn, "paused", target=0)
    r = cli("health", "--format", "json")
    assert r.returncode == 1, r
    doc = json.loads(r.stdout)
    assert doc["healthy"] is False
    assert sorted(p["message"].split("'")[1] for p in doc["problems"] if p["check"] == "pool") == ["default", "express"]
    r = cli("health")
    assert sorted(line.split("'")[1] for line in r.stdout.splitlines()) == ["default", "express"]
    refill(conn)
    assert cli("health").returncode == 0


def test_unreachable_database_is_one_problem_line_without_the_password(cli):
    r = cli("health", env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert r.returncode == 1, r
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("database: cannot connect to the database at 127.0.0.1:1/x")
    assert "secretpw" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    r = cli("health", "--format", "json", env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert r.returncode == 1, r
    doc = json.loads(r.stdout)
    assert doc["healthy"] is False
    assert [p["check"] for p in doc["problems"]] == ["database"]
    assert "secretpw" not in r.stdout


def test_schema_newer_than_the_code_is_a_problem(cli, conn):
    refill(conn)
    conn.execute("INSERT INTO sequencing.schema_migration (version, name, checksum) VALUES (9999, '9999_x.sql', 'x')")
    r = cli("health")
    assert r.returncode == 1, r
    assert r.stdout.startswith("schema: ") and "upgrade trackctl" in r.stdout


def test_csv_and_jsonl_formats_carry_the_same_problems(cli, conn):
    create_pool(conn, "express", target=40)
    r = cli("health", "--format", "csv")
    assert r.returncode == 1, r
    rows = r.stdout.splitlines()
    assert rows[0] == "check,message" and sorted(row.split("'")[1] for row in rows[1:]) == ["default", "express"], r
    r = cli("health", "--format", "jsonl")
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 1, r
    assert [p["check"] for p in json.loads(r.stdout)["problems"]] == ["pool", "pool"]
    refill(conn)
    r = cli("health", "--format", "csv")
    assert (r.returncode, r.stdout) == (0, "check,message\n"), r
