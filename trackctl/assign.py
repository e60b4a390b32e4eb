"""Claiming a code for one order (the batch of input lines is in assign_batch)."""

from __future__ import annotations

from typing import NamedTuple

import psycopg

from . import queries
from .errors import CodeCancelled, PoolExhausted, TrackctlError
from .names import carrier_ref_id, check_order_id, check_parcel

# trackctl.carriers and trackctl.pools are imported where needed (an unknown carrier, a dry pool):
# a `trackctl assign` process pays for every import at every start (trackctl/entry.py).

RETRIES = 5  # a unique violation means another process assigned the same order first: look again


class Assignment(NamedTuple):
    # A named tuple, not a frozen dataclass: `assign --batch` makes one per line, and a frozen
    # dataclass's __init__ (one object.__setattr__ per field) cost several times a tuple's creation.
    order_id: str
    carrier: str
    code: str
    new: bool
    parcel: int = 1
    generated_inline: bool = False  # the pool was dry and the code was made on the spot


SQL = queries.load("assign")  # sql/queries/assign.sql


def __getattr__(name: str):
    # The batch lives in assign_batch; these names stay importable from here without a single
    # `trackctl assign` paying for the batch module's imports.
    if name in ("CHUNK", "BatchLine", "BatchOutcome", "assign_lines"):
        from . import assign_batch

        return getattr(assign_batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def assign(conn: psycopg.Connection, order_id: str, carrier: str, *, parcel: int = 1,
           next_parcel: bool = False) -> Assignment:
    """Return the code of (order, carrier, parcel), claiming a free one the first time.

    `next_parcel` takes a code for a new parcel number (one above the highest the order has
    with this carrier); it is the one call that is not idempotent.
    """
    check_order_id(order_id)
    check_parcel(parcel)
    if not (carrier.isascii() and carrier.isprintable()):  # no carrier name is; undecodable argv or NUL cannot be sent
        raise _unknown(conn, carrier)
    params = {"order_id": order_id, "carrier": carrier, "carrier_id": carrier_ref_id(carrier),
              "parcel": parcel, "next_parcel": next_parcel}
    renumbered = False
    for _ in range(RETRIES):
        try:
            row = conn.execute(SQL.assign_one, params).fetchone()
        except psycopg.errors.UniqueViolation:
            continue  # a concurrent assign of the same order won; the next pass returns its code
        if row is None:
            raise _unknown(conn, carrier)
        carrier_id, name, pool_id, kind, number, existing, claimed = row
        if existing:
            _refuse_cancelled(conn, existing, order_id, name, number)
        if existing or claimed:
            return Assignment(order_id, name, existing or claimed, new=existing is None, parcel=number)
        try:
            code = _generate_one(conn, pool_id, kind, order_id, carrier_id, number)
        except PoolExhausted:
            # An S10 range used up may still have free codes out of reach (their tickets were drawn
            # by claims that rolled back): give them new tickets and claim again, once.
            if renumbered or not _renumber_skipped(conn, pool_id):
                raise
            renumbered = True
            continue
        if code:
            return Assignment(order_id, name, code, new=True, parcel=number, generated_inline=True)
    raise TrackctlError(f"could not assign a code to order {order_id!r} after {RETRIES} attempts",
                        hint="the database is under heavy contention; retry")


def _refuse_cancelled(conn: psycopg.Connection, code: str, order_id: str, carrier: str, parcel: int) -> None:
    """Raise CodeCancelled when the existing code of (order, carrier, parcel) was cancelled."""
    import shlex

    lookups = queries.load("shipments")
    if conn.execute(lookups.code_status, (code,)).fetchone()[0] == "cancelled":
        parcel_opt = f" --parcel {parcel}" if parcel != 1 else ""
        raise CodeCancelled(
            f"order {order_id}{parcel_opt and f' parcel {parcel}'} with {carrier} was cancelled: its code {code} "
            "is not handed out again",
            hint=f"a new parcel gets a new code: 'trackctl assign {shlex.quote(order_id)} {carrier} --next-parcel'")


def _unknown(conn: psycopg.Connection, carrier: str) -> TrackctlError:
    from .carriers import list_carriers, unknown_carrier

    return unknown_carrier(carrier, list_carriers(conn))


def _renumber_skipped(conn: psycopg.Connection, pool_id: int) -> int:
    from .pools import SQL as POOLS

    return conn.execute(POOLS.renumber_skipped, (pool_id,)).fetchone()[0]


def _generate_one(conn: psycopg.Connection, pool_id: int, kind: str, order_id: str, carrier_id: int,
                  parcel: int) -> str | None:
    from .pools import Pool, generate_codes

    code = next(iter(generate_codes(conn, Pool(pool_id, "", kind, 0), 1)))
    try:
        conn.execute(SQL.insert_assigned, ([code], [pool_id], [order_id], [carrier_id], [parcel]))
    except psycopg.errors.UniqueViolation:
        return None
    return code
