"""Carrier records: add, change, list and resolve by name or numeric id (freightcarrier_id)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ..errors import AlreadyExists, InvalidValue, UnknownCarrier, UnknownPool
from ..names import carrier_ref_id, check_carrier_name, check_pool_name


@dataclass(frozen=True)
class Carrier:
    id: int
    name: str
    pool: str
    pool_id: int


SELECT_CARRIERS = """
SELECT c.id, c.name, p.name, p.id
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
"""
INSERT_CARRIER = """
INSERT INTO sequencing.carrier (id, name, pool_id)
SELECT coalesce(%(id)s, (SELECT coalesce(max(id), 0) + 1 FROM sequencing.carrier)), %(name)s, p.id
FROM sequencing.pool p WHERE p.name = %(pool)s
RETURNING id
"""


def list_carriers(conn: psycopg.Connection) -> list[Carrier]:
    """Return every carrier, by id."""
    return [Carrier(*row) for row in conn.execute(SELECT_CARRIERS + " ORDER BY c.id").fetchall()]


def unknown_carrier(ref: str, known: list[Carrier]) -> UnknownCarrier:
    names = ", ".join(c.name for c in known) or "none yet"
    return UnknownCarrier(f"unknown carrier {ref[:40]!r} (known: {names})",
                          hint="add one with 'trackctl carrier add NAME'")


def get_carrier(conn: psycopg.Connection, ref: str) -> Carrier:
    """Return the carrier named by `ref` (name or numeric id), or raise UnknownCarrier."""
    row = conn.execute(SELECT_CARRIERS + " WHERE c.name = %s OR c.id = %s",
                       (ref, carrier_ref_id(ref))).fetchone()
    if row is None:
        raise unknown_carrier(ref, list_carriers(conn))
    return Carrier(*row)


def add_carrier(conn: psycopg.Connection, name: str, carrier_id: int | None = None,
                pool: str = "default") -> Carrier:
    """Create a carrier drawing codes from `pool`; return it."""
    check_carrier_name(name)
    check_pool_name(pool)
    if carrier_id is not None and not 0 < carrier_id < 2**31:
        raise InvalidValue("carrier id must be a positive integer")
    try:
        with conn.transaction():
            row = conn.execute(INSERT_CARRIER, {"id": carrier_id, "name": name, "pool": pool}).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        what = f"id {carrier_id}" if exc.diag.constraint_name == "carrier_pkey" else f"name {name!r}"
        raise AlreadyExists(f"a carrier with {what} already exists",
                            hint="see 'trackctl carrier list'") from exc
    if row is None:
        raise UnknownPool(f"unknown pool {pool!r}", hint="create it with 'trackctl pool create'")
    return get_carrier(conn, name)
