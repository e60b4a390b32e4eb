"""Named queries: sql/queries/*.sql is where every statement lives, and the loader reads it exactly."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import trackctl
from trackctl import queries

PACKAGE = Path(trackctl.__file__).resolve().parent
# The start of a statement as PostgreSQL reads it; enough to tell SQL from prose and messages.
STATEMENT = re.compile(r"^\s*(SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+[a-z_.]+\s+SET\s|DELETE\s+FROM\s|"
                       r"WITH\s+[a-z_]+\s+AS\s*\(|CREATE\s+(TABLE|INDEX|DATABASE|FUNCTION)\s|LISTEN\s+[a-z_]+\s*;?\s*$|"
                       r"COPY\s+[a-z_.]+\s*(\(|FROM\s|TO\s))",
                       re.IGNORECASE | re.DOTALL)


def test_no_sql_statement_text_in_any_python_string_of_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and STATEMENT.match(node.value):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert found == [], "SQL belongs in sql/queries/<area>.sql:\n" + "\n".join(found)


def test_the_check_above_would_see_a_statement():
    assert STATEMENT.match("\nSELECT id FROM sequencing.pool WHERE name = %s")
    assert STATEMENT.match("UPDATE sequencing.tracking SET status = %s")
    assert STATEMENT.match("COPY sequencing.tracking (tracking_id, pool_id) FROM STDIN")
    assert not STATEMENT.match("select a pool, then update its target")
    assert not STATEMENT.match("COPY codes into a pool as free rows")


def test_every_query_file_parses_and_names_are_unique_per_file():
    files = sorted(queries.queries_dir().glob("*.sql"))
    assert len(files) >= 10
    for path in files:
        names = queries.load(path.stem).names()
        assert names, f"{path} has no named query"


def test_parse_reads_blocks_and_refuses_duplicates_and_empties():
    text = "-- name: a\n-- why\nSELECT 1;\n\n-- name: b\nUPDATE t SET x = 1\n"
    assert queries.parse(text) == {"a": "-- why\nSELECT 1", "b": "UPDATE t SET x = 1"}
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="no statement"):
        queries.parse("-- name: a\n-- only a comment\n")


def test_an_unknown_name_fails_naming_the_file():
    with pytest.raises(AttributeError, match=r"no query named 'nope' in .*status\.sql"):
        queries.load("status").nope
