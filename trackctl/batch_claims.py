"""The database work of one chunk of `assign --batch`, in one transaction (trackctl/assign_batch.py
splits the input into chunks and keeps them in flight).

The set-based path copies the chunk's keys into the session's temporary table `batch_in` and
claims codes for all of them in a few statements (sql/queries/assign.sql); a small chunk (a
co-process's line or few) runs the single claim per key instead. Keys whose pool ran dry get codes
made inline, as a single assign does.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from .assign import RETRIES, SQL
from .carriers import list_carriers, unknown_carrier
from .errors import PoolExhausted, TrackctlError
from .pools import Pool, generate_codes

if TYPE_CHECKING:
    from .assign_batch import BatchLine


class GiveWay(Exception):
    """This chunk rolled back because the earlier chunk waits for one of its locks (the same order
    in both): it runs again once the earlier one has finished."""


def copy_escaped(value: str) -> str:
    # Order ids never hold control characters, but backslash must be escaped for COPY text format.
    return value.replace("\\", "\\\\")


# Connections whose session holds the batch_in temporary table (made by a committed chunk).
_HAS_BATCH_TABLE: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()

Codes = dict[int, tuple[str, bool]]  # seq of a chunk's first line of a key -> (code, new)


Turn = Callable[[psycopg.Connection], None]  # called last in a chunk's transaction: may it commit?


def _go(conn: psycopg.Connection) -> None:
    pass


def claim_set(conn: psycopg.Connection, copy_text: str, keys: int,
           turn: Turn = _go) -> tuple[Codes, set[int], dict[int, str]]:
    """The database work of one chunk, in one transaction: its codes, the seqs made inline, and
    the seqs refused because their pool can make no more codes (with the reason)."""
    codes: Codes = {}
    inline: set[int] = set()
    refused: dict[int, str] = {}
    with conn.transaction():
        if conn not in _HAS_BATCH_TABLE:
            conn.execute(SQL.batch_table)
        with conn.cursor() as cur, cur.copy(SQL.batch_copy) as copy:
            copy.write(copy_text)
        codes.update((seq, (code, False)) for seq, code in conn.execute(SQL.batch_existing))
        claimed = conn.execute(SQL.batch_claim).fetchall()
        codes.update((seq, (code, True)) for seq, code in claimed)
        if len(codes) < keys:
            # Some codes were locked by other claimers: one more pass takes what became free.
            if claimed:
                conn.execute(SQL.batch_set_codes, ([r[0] for r in claimed], [r[1] for r in claimed]))
            codes.update((seq, (code, True)) for seq, code in conn.execute(SQL.batch_claim))
        if len(codes) < keys:
            short = [row for row in conn.execute(SQL.batch_short) if row[0] not in codes]
            made, refused = _generate_for(conn, short)
            codes.update((seq, (code, True)) for seq, code in made.items())
            inline = set(made)
        turn(conn)
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # Committed for real (not a savepoint of the caller's transaction, which may still roll
        # back the table's creation): the session keeps the (now empty) table.
        _HAS_BATCH_TABLE.add(conn)
    return codes, inline, refused


def claim_few(conn: psycopg.Connection, rows: list[tuple[int, BatchLine]],
               turn: Turn = _go) -> tuple[Codes, set[int], dict[int, str]]:
    """The database work of a small chunk (a co-process's line or few) in one transaction: the single
    claim statement per key, which skips the temporary table, COPY and catalog work of `claim_set`."""
    codes: Codes = {}
    short = []
    with conn.transaction():
        for seq, item in rows:
            row = conn.execute(SQL.assign_one, {"order_id": item.order_id, "carrier": item.carrier.name,
                                                "carrier_id": item.carrier.id, "parcel": item.parcel,
                                                "next_parcel": False}).fetchone()
            if row is None:  # the carrier was removed while the batch ran
                raise unknown_carrier(item.carrier.name, list_carriers(conn))
            carrier_id, _, pool_id, _, parcel, existing, claimed = row
            if existing or claimed:
                codes[seq] = (existing or claimed, existing is None)
            else:
                short.append((seq, item.order_id, carrier_id, pool_id, parcel))
        made, refused = _generate_for(conn, short) if short else ({}, {})
        turn(conn)
    codes.update((seq, (code, True)) for seq, code in made.items())
    return codes, set(made), refused


def claim_with_retries(conn: psycopg.Connection, claim, keys: int, lines: str,
                        after_yield: Callable[[], None] = lambda: None) -> tuple[Codes, set[int], dict[int, str]]:
    # A unique violation means another process committed one of this chunk's keys, which the next
    # pass finds as existing: every retry has one key fewer to claim, so the number of keys bounds
    # the retries (a fixed few ran out while single assigns kept taking keys of the same chunk).
    # Two batches claiming overlapping keys in different orders can deadlock: the loser retries.
    # A chunk that gave way to the earlier chunk in flight (GiveWay) waits for it and runs again:
    # that happens once at most, and is no attempt.
    attempts = RETRIES + keys
    tried = 0
    while tried < attempts:
        try:
            return claim()
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            tried += 1  # another process assigned some of these orders meanwhile: look again
        except GiveWay:
            after_yield()
    raise TrackctlError(f"could not assign lines {lines} after {attempts} attempts",
                        hint="the database is under heavy contention; rerun the same input (it is idempotent)")


def _generate_for(conn: psycopg.Connection, short: list[tuple]) -> tuple[dict[int, str], dict[int, str]]:
    """Make codes for rows whose pool ran dry and insert them assigned.

    Return ({seq: code}, {seq: reason}): a pool that can make no more codes (an S10 range used
    up) refuses the rows beyond what it could make, and only those; the rest of the chunk goes on.
    """
    pools = {r[0]: Pool(*r) for r in conn.execute(SQL.batch_pools, ([r[3] for r in short],))}
    by_pool: dict[int, list[tuple]] = {}
    for row in short:
        by_pool.setdefault(row[3], []).append(row)
    made: dict[int, str] = {}
    refused: dict[int, str] = {}
    pool_ids, orders, carriers, parcels = [], [], [], []
    for pool_id, rows in by_pool.items():
        codes, reason = _codes_while_they_last(conn, pools[pool_id], len(rows))
        for (seq, order_id, carrier_id, _, parcel), code in zip(rows, codes):
            made[seq] = code
            pool_ids.append(pool_id)
            orders.append(order_id)
            carriers.append(carrier_id)
            parcels.append(parcel)
        refused.update((row[0], reason) for row in rows[len(codes):])
    if made:
        conn.execute(SQL.insert_assigned, (list(made.values()), pool_ids, orders, carriers, parcels))
    return made, refused


def _codes_while_they_last(conn: psycopg.Connection, pool: Pool, count: int) -> tuple[list[str], str]:
    """Return up to `count` new codes of the pool, and why there are fewer (the pool's own error)."""
    codes: list[str] = []
    try:
        while len(codes) < count:  # an S10 range gives what is left of it, then refuses
            codes += generate_codes(conn, pool, count - len(codes))
    except PoolExhausted as exc:
        return codes, str(exc)
    return codes, ""
