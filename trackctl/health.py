"""Health checks: each returns the problems it found, each problem one line for a person."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from . import db
from .pools import pool_levels

LOW_POOL_FRACTION = 0.25


@dataclass(frozen=True)
class Problem:
    check: str
    message: str


def check_schema(conn: psycopg.Connection) -> list[Problem]:
    have, want = db.schema_version(conn), db.latest_version()
    if have < want:
        return [Problem("schema", f"database schema is at version {have}, trackctl needs {want}: run 'trackctl db migrate'")]
    if have > want:
        return [Problem("schema", f"database schema version {have} is newer than this trackctl ({want}): upgrade trackctl")]
    return []


def check_pools(conn: psycopg.Connection) -> list[Problem]:
    problems = []
    for level in pool_levels(conn):
        if level.target > 0 and level.free < level.target * LOW_POOL_FRACTION:
            problems.append(Problem(
                "pool", f"pool {level.name!r} has {level.free} free codes, below a quarter of its target "
                        f"{level.target}: run 'trackctl refill' (is the refill cron job running?)"))
    return problems


def run_checks(conn: psycopg.Connection) -> list[Problem]:
    """Return every problem found in a reachable database; an empty list means healthy."""
    problems = check_schema(conn)
    if problems:
        return problems  # the other checks read tables that may not exist yet
    return check_pools(conn)
