"""Claiming codes for orders: one at a time, or set-based for a stream of input lines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import threading
from dataclasses import dataclass

import psycopg

from .carriers import Carrier, list_carriers, unknown_carrier
from .errors import CodeCancelled, PoolExhausted, TrackctlError
from .names import CARRIER_NAME, carrier_ref_id, check_order_id, check_parcel
from .pools import Pool, generate_codes

CANCEL_TIMEOUT = 10.0  # seconds to wait for a cancelled chunk of an abandoned batch
RETRIES = 5  # a unique violation means another process assigned the same order first: look again


@dataclass(frozen=True)
class Assignment:
    order_id: str
    carrier: str
    code: str
    new: bool
    parcel: int = 1
    generated_inline: bool = False  # the pool was dry and the code was made on the spot


# One round trip in the common case: resolve the carrier, return the existing code for
# (order, carrier, parcel) if there is one, otherwise claim the oldest free code of the
# carrier's pool. SKIP LOCKED lets concurrent assigners take different codes without waiting.
# A new claim writes its `tracking.assigned` outbox row in the same statement (WEBHOOKS.md).
ASSIGN_ONE = """
WITH carrier AS (
    SELECT c.id, c.name, c.pool_id, p.kind, p.name AS pool_name FROM sequencing.carrier c
    JOIN sequencing.pool p ON p.id = c.pool_id
    WHERE (c.name = %(carrier)s OR c.id = %(carrier_id)s) AND c.removed_at IS NULL
), parcel AS (
    SELECT CASE WHEN %(next_parcel)s THEN
        (SELECT coalesce(max(t.parcel), 0) + 1 FROM sequencing.tracking t
         WHERE t.order_id = %(order_id)s AND t.freightcarrier_id = (SELECT id FROM carrier))
        ELSE %(parcel)s END AS n
), existing AS (
    SELECT t.tracking_id FROM sequencing.tracking t
    WHERE t.order_id = %(order_id)s AND t.freightcarrier_id = (SELECT id FROM carrier)
      AND t.parcel = (SELECT n FROM parcel)
), pick AS (
    SELECT f.id FROM sequencing.tracking f
    WHERE f.pool_id = (SELECT pool_id FROM carrier) AND f.order_id IS NULL
      AND f.id >= (SELECT min(m.id) FROM sequencing.tracking m    -- the oldest free code: see BATCH_CLAIM
                   WHERE m.pool_id = (SELECT pool_id FROM carrier) AND m.order_id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM existing)
    ORDER BY f.id LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE sequencing.tracking t
    SET order_id = %(order_id)s, freightcarrier_id = (SELECT id FROM carrier),
        parcel = (SELECT n FROM parcel), status = 'pending', assigned_at = now()
    FROM pick WHERE t.id = pick.id
    RETURNING t.id, t.tracking_id, t.order_id, t.assigned_at
), event AS (
    INSERT INTO sequencing.outbox (type, shipment_id, payload)
    SELECT 'tracking.assigned', cl.id,
           sequencing.assigned_payload(cl.tracking_id, cl.order_id, c.name, c.pool_name, cl.assigned_at)
    FROM claimed cl CROSS JOIN carrier c
)
SELECT c.id, c.name, c.pool_id, c.kind, (SELECT n FROM parcel),
       (SELECT tracking_id FROM existing), (SELECT tracking_id FROM claimed)
FROM carrier c
"""

# The `tracking.assigned` outbox rows (WEBHOOKS.md) of the rows of a CTE `assigned` (id,
# tracking_id, order_id, freightcarrier_id, pool_id, assigned_at, input_order), in input order.
_ASSIGNED_EVENTS = """
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'tracking.assigned', a.id,
       sequencing.assigned_payload(a.tracking_id, a.order_id, c.name, p.name, a.assigned_at)
FROM assigned a
JOIN sequencing.carrier c ON c.id = a.freightcarrier_id
JOIN sequencing.pool p ON p.id = a.pool_id
ORDER BY a.input_order"""

# The pool was dry: the code is made here and inserted already assigned, so it can never be
# seen free by another assigner. Its `tracking.assigned` outbox row goes in the same statement.
INSERT_ASSIGNED = """
WITH assigned AS (
    INSERT INTO sequencing.tracking
        (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status, assigned_at)
    SELECT u.code, u.pool_id, u.order_id, u.carrier_id, u.parcel, 'pending', now()
    FROM unnest(%s::text[], %s::int[], %s::text[], %s::int[], %s::int[])
         AS u(code, pool_id, order_id, carrier_id, parcel)
    RETURNING id, id AS input_order, tracking_id, pool_id, order_id, freightcarrier_id, assigned_at
)""" + _ASSIGNED_EVENTS


def assign(conn: psycopg.Connection, order_id: str, carrier: str, *, parcel: int = 1,
           next_parcel: bool = False) -> Assignment:
    """Return the code of (order, carrier, parcel), claiming a free one the first time.

    `next_parcel` takes a code for a new parcel number (one above the highest the order has
    with this carrier); it is the one call that is not idempotent.
    """
    check_order_id(order_id)
    check_parcel(parcel)
    if not (carrier.isascii() and carrier.isprintable()):  # no carrier name is; undecodable argv or NUL cannot be sent
        raise unknown_carrier(carrier, list_carriers(conn))
    params = {"order_id": order_id, "carrier": carrier, "carrier_id": carrier_ref_id(carrier),
              "parcel": parcel, "next_parcel": next_parcel}
    for _ in range(RETRIES):
        try:
            row = conn.execute(ASSIGN_ONE, params).fetchone()
        except psycopg.errors.UniqueViolation:
            continue  # a concurrent assign of the same order won; the next pass returns its code
        if row is None:
            raise unknown_carrier(carrier, list_carriers(conn))
        carrier_id, name, pool_id, kind, number, existing, claimed = row
        if existing:
            _refuse_cancelled(conn, existing, order_id, name, number)
        if existing or claimed:
            return Assignment(order_id, name, existing or claimed, new=existing is None, parcel=number)
        code = _generate_one(conn, Pool(pool_id, "", kind, 0), order_id, carrier_id, number)
        if code:
            return Assignment(order_id, name, code, new=True, parcel=number, generated_inline=True)
    raise TrackctlError(f"could not assign a code to order {order_id!r} after {RETRIES} attempts",
                        hint="the database is under heavy contention; retry")


def _refuse_cancelled(conn: psycopg.Connection, code: str, order_id: str, carrier: str, parcel: int) -> None:
    """Raise CodeCancelled when the existing code of (order, carrier, parcel) was cancelled."""
    import shlex

    from . import queries

    lookups = queries.load("shipments")
    if conn.execute(lookups.code_status, (code,)).fetchone()[0] == "cancelled":
        parcel_opt = f" --parcel {parcel}" if parcel != 1 else ""
        raise CodeCancelled(
            f"order {order_id}{parcel_opt and f' parcel {parcel}'} with {carrier} was cancelled: its code {code} "
            "is not handed out again",
            hint=f"a new parcel gets a new code: 'trackctl assign {shlex.quote(order_id)} {carrier} --next-parcel'")


def _generate_one(conn: psycopg.Connection, pool: Pool, order_id: str, carrier_id: int, parcel: int) -> str | None:
    code = next(iter(generate_codes(conn, pool, 1)))
    try:
        conn.execute(INSERT_ASSIGNED, ([code], [pool.id], [order_id], [carrier_id], [parcel]))
    except psycopg.errors.UniqueViolation:
        return None
    return code


# ---------------------------------------------------------------------------------------------
# Batch: lines are validated here, then each chunk goes to the database in one transaction as
# COPY into a temporary table followed by a few set-based statements.

CHUNK = 5_000

BATCH_TABLE = """
CREATE TEMPORARY TABLE batch_in (
    seq integer PRIMARY KEY, order_id text NOT NULL, carrier_id integer NOT NULL,
    pool_id integer NOT NULL, parcel integer NOT NULL, code text
) ON COMMIT DROP
"""
BATCH_COPY = "COPY batch_in (seq, order_id, carrier_id, pool_id, parcel) FROM STDIN"
BATCH_EXISTING = """
UPDATE batch_in b SET code = t.tracking_id
FROM sequencing.tracking t
WHERE t.order_id = b.order_id AND t.freightcarrier_id = b.carrier_id AND t.parcel = b.parcel
RETURNING b.seq, b.code
"""
# Pair the n-th input row of each pool with the n-th free code taken from that pool. Rows are
# numbered across the whole chunk (pool by pool) and each pool's codes continue its own range,
# so the pairing is a join on one integer key: joining on (pool_id, per-pool row number) let
# the planner, which has no statistics for CTEs, merge on pool_id alone and filter on the
# number, quadratic in the chunk size (5 s per 5 000 lines). The codes come back to the client
# directly; batch_in learns them only when a second pass is needed (BATCH_SET_CODES).
# The lower bound on t.id (the pool's oldest free code, one probe of tracking_free; ASSIGN_ONE
# has it too) keeps the free-code scan flat as history grows: for a pool id known only at run
# time the planner may walk the primary key in id order (when the pool's codes lie in the table
# against the order of pool ids and free codes are many), and without the bound that walk
# stepped over every assigned row first: 1 000 000 rows, 0.1 s, for every chunk of 5 000 and
# for every single claim with a million-row history.
BATCH_CLAIM = """
WITH need AS (
    SELECT seq, order_id, carrier_id, pool_id, parcel,
           row_number() OVER (ORDER BY pool_id, seq) AS rn
    FROM batch_in WHERE code IS NULL
), per_pool AS (
    SELECT pool_id, count(*) AS n, min(rn) - 1 AS start FROM need GROUP BY pool_id
), free AS (
    SELECT f.id, p.start + row_number() OVER (PARTITION BY p.pool_id ORDER BY f.id) AS rn
    FROM per_pool p CROSS JOIN LATERAL (
        SELECT t.id FROM sequencing.tracking t
        WHERE t.pool_id = p.pool_id AND t.order_id IS NULL
          AND t.id >= (SELECT min(m.id) FROM sequencing.tracking m WHERE m.pool_id = p.pool_id AND m.order_id IS NULL)
        ORDER BY t.id LIMIT p.n
        FOR UPDATE SKIP LOCKED
    ) f
), assigned AS (
    UPDATE sequencing.tracking t
    SET order_id = need.order_id, freightcarrier_id = need.carrier_id, parcel = need.parcel,
        status = 'pending', assigned_at = now()
    FROM need JOIN free USING (rn)
    WHERE t.id = free.id
    RETURNING need.seq, need.seq AS input_order, t.id, t.tracking_id, t.pool_id, t.order_id,
              t.freightcarrier_id, t.assigned_at
), event AS (
    -- Issue 5: each new claim's `tracking.assigned` outbox row, in this same statement (keep it).""" \
    + _ASSIGNED_EVENTS + """
)
SELECT seq, tracking_id FROM assigned
"""
BATCH_SHORT = "SELECT b.seq, b.order_id, b.carrier_id, b.pool_id, b.parcel FROM batch_in b WHERE b.code IS NULL ORDER BY b.seq"
BATCH_POOLS = "SELECT id, name, kind, target FROM sequencing.pool WHERE id = ANY(%s)"
BATCH_SET_CODES = """
UPDATE batch_in b SET code = u.code
FROM unnest(%s::int[], %s::text[]) AS u(seq, code) WHERE b.seq = u.seq
"""


@dataclass(frozen=True)
class BatchLine:
    line: int
    order_id: str
    carrier: Carrier
    parcel: int = 1


@dataclass(frozen=True)
class BatchOutcome:
    """One input line's fate: an assignment, or a rejection with its reason."""

    line: int
    assignment: Assignment | None = None
    error: str | None = None


def _copy_text(value: str) -> str:
    # Order ids never hold control characters, but backslash must be escaped for COPY text format.
    return value.replace("\\", "\\\\")


Codes = dict[int, tuple[str, bool]]  # seq of a chunk's first line of a key -> (code, new)


def _claim(conn: psycopg.Connection, copy_text: str, keys: int) -> tuple[Codes, set[int], dict[int, str]]:
    """The database work of one chunk, in one transaction: its codes, the seqs made inline, and
    the seqs refused because their pool can make no more codes (with the reason)."""
    codes: Codes = {}
    inline: set[int] = set()
    refused: dict[int, str] = {}
    with conn.transaction():
        conn.execute(BATCH_TABLE)
        with conn.cursor() as cur, cur.copy(BATCH_COPY) as copy:
            copy.write(copy_text)
        codes.update((seq, (code, False)) for seq, code in conn.execute(BATCH_EXISTING))
        claimed = conn.execute(BATCH_CLAIM).fetchall()
        codes.update((seq, (code, True)) for seq, code in claimed)
        if len(codes) < keys:
            # Some codes were locked by other claimers: one more pass takes what became free.
            if claimed:
                conn.execute(BATCH_SET_CODES, ([r[0] for r in claimed], [r[1] for r in claimed]))
            codes.update((seq, (code, True)) for seq, code in conn.execute(BATCH_CLAIM))
        if len(codes) < keys:
            short = [row for row in conn.execute(BATCH_SHORT) if row[0] not in codes]
            made, refused = _generate_for(conn, short)
            codes.update((seq, (code, True)) for seq, code in made.items())
            inline = set(made)
    return codes, inline, refused


def _claim_with_retries(conn: psycopg.Connection, copy_text: str, keys: int,
                        lines: str) -> tuple[Codes, set[int], dict[int, str]]:
    # A unique violation means another process committed one of this chunk's keys, which the next
    # pass finds as existing: every retry has one key fewer to claim, so the number of keys bounds
    # the retries (a fixed few ran out while single assigns kept taking keys of the same chunk).
    # Two batches claiming overlapping keys in different orders can deadlock: the loser retries.
    attempts = RETRIES + keys
    for _ in range(attempts):
        try:
            return _claim(conn, copy_text, keys)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            continue  # another process assigned some of these orders meanwhile: look again
    raise TrackctlError(f"could not assign lines {lines} after {attempts} attempts",
                        hint="the database is under heavy contention; rerun the same input (it is idempotent)")


def _generate_for(conn: psycopg.Connection, short: list[tuple]) -> tuple[dict[int, str], dict[int, str]]:
    """Make codes for rows whose pool ran dry and insert them assigned.

    Return ({seq: code}, {seq: reason}): a pool that can make no more codes (an S10 range used
    up) refuses the rows beyond what it could make, and only those; the rest of the chunk goes on.
    """
    pools = {r[0]: Pool(*r) for r in conn.execute(BATCH_POOLS, ([r[3] for r in short],))}
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
        conn.execute(INSERT_ASSIGNED, (list(made.values()), pool_ids, orders, carriers, parcels))
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


class _Chunk:
    """One chunk of a batch: its lines, the held outcomes in input order, and its database work.

    The COPY text is made and the assignments are built by the caller's thread; only `run`, the
    database work, may go to a background thread.
    """

    def __init__(self, lines: list[BatchLine], held: list[BatchOutcome | BatchLine]) -> None:
        self.lines, self.held = lines, held
        # The same (order, carrier, parcel) may appear twice in a chunk: only its first line claims.
        self.first: dict[tuple[str, int, int], int] = {}
        rows = []
        for seq, item in enumerate(lines):
            key = (item.order_id, item.carrier.id, item.parcel)
            if key not in self.first:
                self.first[key] = seq
                rows.append(f"{seq}\t{_copy_text(item.order_id)}\t{item.carrier.id}\t{item.carrier.pool_id}\t{item.parcel}\n")
        self.copy_text = "".join(rows)
        self.codes: Codes = {}
        self.inline: set[int] = set()
        self.refused: dict[int, str] = {}
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self, conn: psycopg.Connection) -> None:
        try:
            if self.lines:
                self.codes, self.inline, self.refused = _claim_with_retries(
                    conn, self.copy_text, len(self.first), f"{self.lines[0].line}-{self.lines[-1].line}")
        except BaseException as exc:  # handed to the reader of the outcomes, in whichever thread
            self.error = exc

    def start(self, conn: psycopg.Connection) -> None:
        self.thread = threading.Thread(target=self.run, args=(conn,), name="trackctl-assign-chunk", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self, conn: psycopg.Connection) -> None:
        """Stop the chunk's statement (its transaction rolls back, as if never sent) and wait for it."""
        if self.thread is not None and self.thread.is_alive():
            try:
                conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            except Exception:  # a lost server: the transaction is gone with the connection anyway
                pass
            self.thread.join(CANCEL_TIMEOUT)

    def assignments(self) -> list[Assignment | str]:
        """One assignment per line, in order, or the reason its pool refused it."""
        self.wait()
        out: list[Assignment | str] = []
        for seq, item in enumerate(self.lines):
            first = self.first[(item.order_id, item.carrier.id, item.parcel)]
            if first in self.refused:
                out.append(self.refused[first])
                continue
            code, new = self.codes[first]
            is_first = first == seq
            out.append(Assignment(item.order_id, item.carrier.name, code, new=new and is_first,
                                  parcel=item.parcel, generated_inline=is_first and seq in self.inline))
        return out

    def outcomes(self) -> Iterator[BatchOutcome]:
        by_line = {item.line: a for item, a in zip(self.lines, self.assignments())}
        for item in self.held:
            if isinstance(item, BatchOutcome):
                yield item
            elif isinstance(result := by_line[item.line], str):
                yield BatchOutcome(item.line, error=result)
            else:
                yield BatchOutcome(item.line, result)


def assign_lines(conn: psycopg.Connection, records: Iterable[tuple[int, dict]],
                 chunk_size: int = CHUNK, *, overlap: bool = False) -> Iterator[BatchOutcome]:
    """Yield one outcome per parsed input record, in input order, assigning a chunk at a time.

    `records` are (line number, fields) pairs from `trackctl.batch_input`; fields hold
    `order_id`, `carrier` and optionally `parcel`, or `error` for a line that did not parse.
    Memory stays bounded by the chunk size whatever the length of the input.

    With `overlap` each chunk's database work runs in a background thread while the next chunk
    is read and the previous one's outcomes are consumed, so parsing and printing cost no
    wall-clock time on a second core. `records` must then not use `conn` itself. At most two
    chunks are held; each is still one transaction, and an interrupted or failing run cancels
    the chunk in flight (it rolls back) before the exception leaves this generator.
    """
    carriers: dict[str, Carrier] = {}
    # A reference not known yet sends one look-up per chunk at most: a carrier added while the
    # batch runs is welcome, and a million distinct unknown names cost neither memory nor a
    # million round trips.
    looked_up = False

    def learn_carriers() -> list[Carrier]:
        nonlocal looked_up
        looked_up = True
        found = list_carriers(conn)
        for c in found:
            carriers[c.name] = carriers[str(c.id)] = c
        return found

    learn_carriers()
    pending: list[BatchLine] = []
    held: list[BatchOutcome | BatchLine] = []  # rejections and lines, in input order
    running: _Chunk | None = None  # the chunk whose database work is in flight (overlap only)

    def settle() -> Iterator[BatchOutcome]:
        nonlocal running
        if running is not None:
            running.wait()  # interrupted here, `running` is still set for the cleanup below
            done, running = running, None
            yield from done.outcomes()

    def flush() -> Iterator[BatchOutcome]:
        nonlocal pending, held, running, looked_up
        chunk, pending, held = _Chunk(pending, held), [], []
        looked_up = False
        previous = running
        if previous is not None:
            previous.wait()  # one transaction at a time on the connection
        running = None
        if overlap:
            chunk.start(conn)
            running = chunk
        else:
            chunk.run(conn)
        if previous is not None:
            yield from previous.outcomes()  # consumed while the new chunk is in the database
        if not overlap:
            yield from chunk.outcomes()

    try:
        for line, fields in records:
            if "error" in fields:
                held.append(BatchOutcome(line, error=fields["error"]))
            else:
                ref = fields["carrier"]
                number = carrier_ref_id(ref)
                if number is not None:
                    ref = str(number)  # '03' names carrier 3, as it does for a single assign
                carrier = carriers.get(ref)
                if carrier is None and not looked_up and (number is not None or CARRIER_NAME.fullmatch(ref)):
                    yield from settle()  # the connection must be idle to ask it
                    learn_carriers()
                    carrier = carriers.get(ref)
                if carrier is None:
                    known = sorted({c.name: c for c in carriers.values()}.values(), key=lambda c: c.id)
                    held.append(BatchOutcome(line, error=str(unknown_carrier(ref, known))))
                else:
                    item = BatchLine(line, fields["order_id"], carrier, fields.get("parcel", 1))
                    pending.append(item)
                    held.append(item)
            if len(held) >= chunk_size:
                yield from flush()
        if held:
            yield from flush()
        yield from settle()
    finally:
        if running is not None:  # an exception or a consumer that stopped reading: nothing half-done
            running.abandon(conn)
