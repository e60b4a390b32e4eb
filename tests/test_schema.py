"""sql/schema.sql is the schema a fresh `trackctl db migrate` makes, and `trackctl db schema` writes it."""

from __future__ import annotations

import difflib
from pathlib import Path

from trackctl.schema import HEADER, dump_schema, normalise

SCHEMA = Path(__file__).resolve().parents[1] / "sql" / "schema.sql"


def test_schema_sql_is_what_the_migrations_make(conn):
    """Each test database is a fresh migrate (tests/conftest.py): its dump must be the file."""
    live, kept = dump_schema(conn), SCHEMA.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(kept.splitlines(True), live.splitlines(True), "sql/schema.sql", "fresh migrate"))
    assert live == kept, ("sql/schema.sql is out of date: run 'trackctl db migrate && trackctl db schema "
                          "--output sql/schema.sql' in the checkout\n" + diff[:4000])


def test_schema_sql_shows_every_table_function_and_trigger(conn):
    text = SCHEMA.read_text(encoding="utf-8")
    tables = [t for (t,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'sequencing' ORDER BY 1").fetchall()]
    functions = [f for (f,) in conn.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'sequencing' ORDER BY 1").fetchall()]
    triggers = [t for (t,) in conn.execute(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sequencing' AND NOT tgisinternal").fetchall()]
    assert tables and functions and triggers
    missing = [t for t in tables if f"CREATE TABLE sequencing.{t} (" not in text]
    missing += [f for f in functions if f"FUNCTION sequencing.{f}(" not in text]
    missing += [t for t in triggers if f"CREATE TRIGGER {t} " not in text]
    assert missing == []


def test_normalise_drops_the_lines_that_vary_per_run():
    dump = ("\\restrict abc123\n-- Dumped from database version 18.6\n-- Dumped by pg_dump version 18.6\n\n\n"
            "CREATE TABLE sequencing.t (a int);\n\n\n\\unrestrict abc123\n")
    assert normalise(dump) == HEADER + "\nCREATE TABLE sequencing.t (a int);\n"


def test_cli_db_schema_prints_and_writes_the_same_text(cli, conn, tmp_path):
    r = cli("db", "schema")
    assert r.returncode == 0, r
    assert r.stdout == dump_schema(conn)
    target = tmp_path / "schema.sql"
    r = cli("db", "schema", "--output", str(target))
    assert r.returncode == 0 and r.stdout == "", r
    assert target.read_text(encoding="utf-8") == dump_schema(conn)
    assert "wrote" in r.stderr
