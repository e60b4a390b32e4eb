"""Code pools: creation, levels, and refill to target with COPY."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from .errors import AlreadyExists, InvalidValue, UnknownPool
from .names import check_pool_name

# Two-key advisory lock (class, pool id) held by the refill of one pool.
REFILL_LOCK_CLASS = 7_262_002
COPY_CHUNK = 20_000
MAX_TARGET = 10_000_000


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    kind: str
    target: int


@dataclass(frozen=True)
class PoolLevel:
    name: str
    kind: str
    target: int
    free: int
    assigned: int


@dataclass(frozen=True)
class RefillResult:
    pool: str
    target: int
    free_before: int
    generated: int
    skipped: bool = False  # another refill of this pool held the lock


SELECT_POOLS = "SELECT id, name, kind, target FROM sequencing.pool"
POOL_LEVELS = """
SELECT p.name, p.kind, p.target,
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NULL),
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NOT NULL)
FROM sequencing.pool p
"""
COUNT_FREE = "SELECT count(*) FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NULL"
TRY_REFILL_LOCK = "SELECT pg_try_advisory_xact_lock(%s, %s)"
COPY_CODES = "COPY sequencing.tracking (tracking_id, pool_id) FROM STDIN"
AVAILABLE = """
SELECT t.tracking_id FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id
WHERE t.order_id IS NULL AND (%(pool)s::text IS NULL OR p.name = %(pool)s)
ORDER BY t.pool_id, t.id LIMIT %(limit)s
"""


def check_target(target: int) -> int:
    if not 0 <= target <= MAX_TARGET:
        raise InvalidValue(f"target must be between 0 and {MAX_TARGET}")
    return target


def get_pool(conn: psycopg.Connection, name: str) -> Pool:
    row = conn.execute(SELECT_POOLS + " WHERE name = %s", (name,)).fetchone()
    if row is None:
        known = ", ".join(r[1] for r in conn.execute(SELECT_POOLS + " ORDER BY name"))
        raise UnknownPool(f"unknown pool {name[:40]!r} (known: {known})",
                          hint="create it with 'trackctl pool create NAME'")
    return Pool(*row)


def create_pool(conn: psycopg.Connection, name: str, target: int = 200, kind: str = "uuid") -> Pool:
    """Create an empty pool; `trackctl refill` fills it."""
    check_pool_name(name)
    check_target(target)
    if kind != "uuid":
        raise InvalidValue(f"unsupported pool kind {kind!r}", hint="use --kind uuid")
    try:
        with conn.transaction():
            conn.execute("INSERT INTO sequencing.pool (name, kind, target) VALUES (%s, %s, %s)",
                         (name, kind, target))
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(f"pool {name!r} already exists", hint="change it with 'trackctl pool set'") from exc
    return get_pool(conn, name)


def set_target(conn: psycopg.Connection, name: str, target: int) -> Pool:
    check_target(target)
    with conn.transaction():
        row = conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = %s RETURNING id",
                           (target, name)).fetchone()
    if row is None:
        get_pool(conn, name)  # raises UnknownPool with the known names
    return get_pool(conn, name)


def pool_levels(conn: psycopg.Connection, name: str | None = None) -> list[PoolLevel]:
    """Return free and assigned counts of every pool (or one), by name."""
    if name is not None:
        get_pool(conn, name)
        rows = conn.execute(POOL_LEVELS + " WHERE p.name = %s", (name,)).fetchall()
    else:
        rows = conn.execute(POOL_LEVELS + " ORDER BY p.name").fetchall()
    return [PoolLevel(*row) for row in rows]


def available_codes(conn: psycopg.Connection, pool: str | None = None, limit: int | None = None) -> Iterator[str]:
    """Yield free codes, oldest first (of one pool, or of all pools in turn)."""
    if pool is not None:
        get_pool(conn, pool)
    if limit is not None and limit < 0:
        raise InvalidValue("--limit must be zero or more")
    with conn.cursor(name=None) as cur:
        cur.execute(AVAILABLE, {"pool": pool, "limit": limit})
        for (code,) in cur:
            yield code


def uuid_codes(count: int) -> Iterator[str]:
    """Yield `count` random (version 4) UUIDs as text, made here rather than by the database."""
    left = count
    while left > 0:
        n = min(left, COPY_CHUNK)
        raw = os.urandom(16 * n)
        for i in range(0, 16 * n, 16):
            yield str(uuid.UUID(bytes=raw[i:i + 16], version=4))
        left -= n


def copy_codes(conn: psycopg.Connection, pool_id: int, codes: Iterator[str]) -> int:
    """COPY codes into a pool as free rows; return how many were written."""
    written = 0
    suffix = f"\t{pool_id}\n"
    with conn.cursor() as cur, cur.copy(COPY_CODES) as copy:
        batch: list[str] = []
        for code in codes:
            batch.append(code)
            if len(batch) == COPY_CHUNK:
                copy.write(suffix.join(batch) + suffix)
                written += len(batch)
                batch.clear()
        if batch:
            copy.write(suffix.join(batch) + suffix)
            written += len(batch)
    return written


def refill_pool(conn: psycopg.Connection, pool: Pool) -> RefillResult:
    """Top one pool up to its target: nothing when at least the target is free, else the shortfall.

    The pool's advisory lock makes refills on several hosts safe: whoever holds it fills the
    exact shortfall, the others skip the pool instead of adding a second shortfall.
    """
    with conn.transaction():
        locked = conn.execute(TRY_REFILL_LOCK, (REFILL_LOCK_CLASS, pool.id)).fetchone()[0]
        if not locked:
            return RefillResult(pool.name, pool.target, -1, 0, skipped=True)
        free = conn.execute(COUNT_FREE, (pool.id,)).fetchone()[0]
        short = pool.target - free
        generated = 0
        if short > 0:
            generated = copy_codes(conn, pool.id, generate_codes(conn, pool, short))
    return RefillResult(pool.name, pool.target, free, generated)


def generate_codes(conn: psycopg.Connection, pool: Pool, count: int) -> Iterator[str]:
    """Return new codes for a pool of any kind."""
    if pool.kind == "uuid":
        return uuid_codes(count)
    raise InvalidValue(f"pool {pool.name!r} has kind {pool.kind!r}, which this trackctl cannot generate")


def refill(conn: psycopg.Connection, name: str | None = None) -> list[RefillResult]:
    """Top every pool (or the named one) up to its target; return what each got."""
    pools = [get_pool(conn, name)] if name else [Pool(*r) for r in conn.execute(SELECT_POOLS + " ORDER BY name")]
    return [refill_pool(conn, p) for p in pools]
