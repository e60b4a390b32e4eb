"""Code pools: creation, levels, and refill to target with COPY."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg

from . import queries
from .errors import AlreadyExists, InUse, InvalidValue, PoolExhausted, UnknownPool, param
from .names import check_limit, check_pool_name

# Two-key advisory lock (class, pool id) held by the refill of one pool.
REFILL_LOCK_CLASS = 7_262_002
COPY_CHUNK = 20_000
MAX_TARGET = 10_000_000
DEFAULT_TARGET = 200
SQL = queries.load("pools")


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    kind: str  # uuid (random codes) or s10 (the UPU S10 serials of a carrier's range)
    target: int  # free codes refill keeps ready


@dataclass(frozen=True)
class PoolLevel:
    """A pool's codes as `pool list` shows them."""
    name: str
    kind: str  # uuid or s10
    target: int  # free codes refill keeps ready
    free: int  # codes ready to be claimed
    assigned: int  # codes given to orders (they stay assigned)


@dataclass(frozen=True)
class RefillResult:
    pool: str
    target: int
    free_before: int
    generated: int
    skipped: bool = False  # another refill of this pool held the lock
    exhausted: bool = False  # an S10 pool whose serial range ran out before the target was reached




def check_target(target: int) -> int:
    if not 0 <= target <= MAX_TARGET:
        raise InvalidValue(f"target must be between 0 and {MAX_TARGET}")
    return target


def get_pool(conn: psycopg.Connection, name: str) -> Pool:
    row = conn.execute(SQL.pool_by_name, (name,)).fetchone()
    if row is None:
        known = ", ".join(r[1] for r in conn.execute(SQL.all_pools))
        raise UnknownPool(f"unknown pool {name[:40]!r} (known: {known})",
                          hint="create it with 'trackctl pool create NAME'")
    return Pool(*row)


def create_pool(conn: psycopg.Connection, name: str, target: int | None = None, kind: str = "uuid", *,
                s10: S10Range | None = None) -> Pool:
    """Create an empty pool; `trackctl refill` fills it. An S10 pool needs its serial range.

    Without a target a pool keeps DEFAULT_TARGET codes ready, an S10 pool at most its whole range;
    an explicit target larger than an S10 range is refused (no refill could ever reach it).
    """
    check_pool_name(name)
    if target is None:
        target = DEFAULT_TARGET if s10 is None else min(DEFAULT_TARGET, s10.last - s10.first + 1)
    check_target(target)
    if kind not in ("uuid", "s10"):
        raise InvalidValue(f"unsupported pool kind {kind!r}", hint=f"use {param('kind')} uuid or {param('kind')} s10")
    if kind == "s10" and s10 is None:
        raise InvalidValue("an S10 pool needs its prefix, country and serial range",
                           hint=f"e.g. {param('kind')} s10 {param('prefix')} AA {param('country')} BR "
                                f"{param('range')} 10000000-10999999")
    if kind == "uuid" and s10 is not None:
        raise InvalidValue(f"{param('prefix')}, {param('country')} and {param('range')} are for S10 pools",
                           hint=f"add {param('kind')} s10")
    if s10 is not None:
        check_s10_target(target, s10.last - s10.first + 1)
    try:
        with conn.transaction():
            if s10 is None:
                conn.execute(SQL.insert_pool, (name, kind, target))
            else:
                conn.execute(SQL.insert_s10_pool, {"name": name, "target": target, "prefix": s10.prefix,
                                                   "country": s10.country, "first": s10.first, "last": s10.last})
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(f"pool {name!r} already exists", hint="change it with 'trackctl pool set'") from exc
    except psycopg.errors.ExclusionViolation as exc:
        raise AlreadyExists(exc.diag.message_primary or "the S10 range overlaps another pool",
                            hint="serials are never shared: use the range the carrier allotted for this pool") from exc
    return get_pool(conn, name)


def check_s10_target(target: int, size: int) -> None:
    """Refuse a target an S10 range can never supply (every refill would fail on it)."""
    if target > size:
        raise InvalidValue(f"target {target} is more than the {size} serials of the S10 range",
                           hint=f"give {param('target')} {size} or less (refill keeps that many codes ready), "
                                f"or a wider {param('range')}")


def set_target(conn: psycopg.Connection, name: str, target: int) -> Pool:
    check_target(target)
    pool = get_pool(conn, name)  # raises UnknownPool with the known names
    if pool.kind == "s10":  # the schema refuses it too (pool_s10_target_fits); this says why
        check_s10_target(target, conn.execute(SQL.s10_size, (pool.id,)).fetchone()[0])
    conn.execute(SQL.set_target, {"target": target, "id": pool.id})
    return get_pool(conn, name)


@dataclass(frozen=True)
class RemovedPool:
    name: str
    free_codes: int  # free codes deleted with the pool


def remove_pool(conn: psycopg.Connection, name: str) -> RemovedPool:
    """Delete an unused pool and its free codes; return what went.

    A pool is in use while a carrier draws from it or any of its codes is assigned (assigned codes
    are never deleted): then nothing is changed and InUse says what holds it. The pool row is
    locked first, so a concurrent `carrier set --pool` or claim waits or is refused by the schema.
    """
    check_pool_name(name)
    with conn.transaction():
        row = conn.execute(SQL.pool_use, (name,)).fetchone()
        if row is None:
            get_pool(conn, name)  # raises UnknownPool with the known names
        pool_id, carriers, assigned = row
        if carriers or assigned:
            held = ([f"carrier{'s' if len(carriers) > 1 else ''} {', '.join(carriers)} draw{'' if len(carriers) > 1 else 's'} from it"]
                    if carriers else []) + ([f"{assigned} of its codes are assigned"] if assigned else [])
            hint = (f"point {'them' if len(carriers) > 1 else 'it'} at another pool first "
                    f"('trackctl carrier set {carriers[0]} --pool OTHER')" if carriers and not assigned else
                    "a pool with assigned codes keeps them for their shipments' history; "
                    "lower its target to 0 to stop refilling it ('trackctl pool set NAME --target 0')")
            raise InUse(f"pool {name!r} is in use: {' and '.join(held)}", hint=hint)
        try:
            free = conn.execute(SQL.delete_free_codes, (pool_id,)).rowcount
            conn.execute(SQL.delete_pool, (pool_id,))
        except psycopg.errors.ForeignKeyViolation as exc:  # a carrier pointed at it meanwhile
            raise InUse(f"pool {name!r} came into use while it was being removed; nothing was removed",
                            hint="see 'trackctl carrier list'") from exc
    return RemovedPool(name, free)


def pool_levels(conn: psycopg.Connection, name: str | None = None) -> list[PoolLevel]:
    """Return free and assigned counts of every pool (or one), by name."""
    if name is not None:
        get_pool(conn, name)
    rows = conn.execute(SQL.pool_levels, {"name": name}).fetchall()
    return [PoolLevel(*row) for row in rows]


def available_codes(conn: psycopg.Connection, pool: str | None = None, limit: int | None = None) -> Iterator[str]:
    """Yield free codes, oldest first (of one pool, or of all pools in turn)."""
    if pool is not None:
        get_pool(conn, pool)
    check_limit(limit, minimum=0)
    with conn.cursor(name=None) as cur:
        cur.execute(SQL.available, {"pool": pool, "limit": limit})
        for (code,) in cur:
            yield code


# The variant nibble of a version 4 UUID is 10xx: a random hex digit keeps its two low bits.
_VARIANT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


def uuid_codes(count: int) -> Iterator[str]:
    """Yield `count` random (version 4) UUIDs as text, made here rather than by the database.

    Formatted straight from the hex of os.urandom (122 random bits each, the version and variant
    bits set as RFC 9562 says): building a uuid.UUID per code and printing it took a third of
    what a refill spends in Python.
    """
    left = count
    while left > 0:
        n = min(left, COPY_CHUNK)
        h = os.urandom(16 * n).hex()
        variant = _VARIANT
        for i in range(0, 32 * n, 32):
            yield (f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
                   f"{variant[h[i + 16]]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}")
        left -= n


def copy_codes(conn: psycopg.Connection, pool_id: int, codes: Iterator[str],
               progress: Callable[[int], None] | None = None, first_ticket: int = 1) -> int:
    """COPY codes into a pool as free rows with tickets from `first_ticket` on; return how many were
    written (reported to `progress`). The caller sets the pool's ticket_end (refill_pool does)."""
    written = 0
    ticket = first_ticket
    tail = f"\t{pool_id}\t"
    with conn.cursor() as cur, cur.copy(SQL.copy_codes) as copy:
        batch: list[str] = []
        for code in codes:
            batch.append(code)
            if len(batch) == COPY_CHUNK:
                copy.write("".join([f"{c}{tail}{t}\n" for c, t in zip(batch, range(ticket, ticket + len(batch)))]))
                written += len(batch)
                ticket += len(batch)
                if progress:
                    progress(len(batch))
                batch.clear()
        if batch:
            copy.write("".join([f"{c}{tail}{t}\n" for c, t in zip(batch, range(ticket, ticket + len(batch)))]))
            written += len(batch)
            if progress:
                progress(len(batch))
    return written


def refill_pool(conn: psycopg.Connection, pool: Pool, progress: Callable[..., None] | None = None) -> RefillResult:
    """Top one pool up to its target: nothing when at least the target is free, else the shortfall.

    The pool's advisory lock makes refills on several hosts safe: whoever holds it fills the
    exact shortfall, the others skip the pool instead of adding a second shortfall. First, free
    codes whose ticket a rolled-back claim drew get new tickets, so that claims reach them again
    (sql/0009_claim_tickets.sql); they count as free, as they are.
    """
    with conn.transaction():
        locked = conn.execute(SQL.try_refill_lock, (REFILL_LOCK_CLASS, pool.id)).fetchone()[0]
        if not locked:
            return RefillResult(pool.name, pool.target, -1, 0, skipped=True)
        conn.execute(SQL.renumber_skipped, (pool.id,))
        free = conn.execute(SQL.count_free, (pool.id,)).fetchone()[0]
        short = pool.target - free
        generated = 0
        if short > 0:
            if progress:
                progress(0, expected=short)
            try:
                codes = generate_codes(conn, pool, short)
            except PoolExhausted:
                return RefillResult(pool.name, pool.target, free, 0, exhausted=True)
            first = conn.execute(SQL.next_ticket, (pool.id,)).fetchone()[0]
            generated = copy_codes(conn, pool.id, codes, progress, first_ticket=first)
            conn.execute(SQL.set_ticket_end, {"end": first + generated - 1, "id": pool.id})
    return RefillResult(pool.name, pool.target, free, generated, exhausted=pool.kind == "s10" and generated < short)


def generate_codes(conn: psycopg.Connection, pool: Pool, count: int) -> Iterator[str]:
    """Return new codes for a pool of any kind."""
    if pool.kind == "uuid":
        return uuid_codes(count)
    if pool.kind == "s10":
        return iter(s10_codes(conn, pool, count))
    raise InvalidValue(f"pool {pool.name!r} has kind {pool.kind!r}, which this trackctl cannot generate")


def refill(conn: psycopg.Connection, name: str | None = None,
           progress: Callable[..., None] | None = None) -> list[RefillResult]:
    """Top every pool (or the named one) up to its target; return what each got.

    `progress(n)` is called as codes are written, `progress(0, expected=n)` as each shortfall is known.
    """
    return [refill_pool(conn, p, progress) for p in refill_targets(conn, name)]


def refill_targets(conn: psycopg.Connection, name: str | None = None) -> list[Pool]:
    """Return the pools a refill goes through: the named one, or every pool by name."""
    return [get_pool(conn, name)] if name else [Pool(*r) for r in conn.execute(SQL.all_pools)]


# ---------------------------------------------------------------------------------------------
# UPU S10 codes: two letters, an eight-digit serial, a check digit, a two-letter country code
# (AA123456785BR). The serials come from a range the carrier allotted; each is used once.

S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
S10_CODE = re.compile(r"^([A-Z]{2})(\d{8})(\d)([A-Z]{2})$")
S10_RANGE = re.compile(r"^\s*(\d{1,8})\s*-\s*(\d{1,8})\s*$")
S10_WARN_FRACTION = 0.10  # health warns when at most this fraction of a range is left



@dataclass(frozen=True)
class S10Range:
    prefix: str
    country: str
    first: int
    last: int


@dataclass(frozen=True)
class S10Usage:
    pool: str
    prefix: str
    country: str
    first: int
    last: int
    next: int  # next serial to generate
    free: int  # generated codes not assigned yet
    carriers: str = ""  # the carriers drawing from the pool, comma-separated

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def left(self) -> int:
        """Codes that can still be handed out: free ones plus serials not generated yet."""
        return self.last + 1 - self.next + self.free


def s10_check_digit(serial: int) -> int:
    """Return the UPU S10 check digit of an eight-digit serial (weights 8 6 4 2 3 5 9 7, mod 11)."""
    if not 0 <= serial <= 99_999_999:
        raise ValueError("an S10 serial has eight digits")
    total = sum(w * int(d) for w, d in zip(S10_WEIGHTS, f"{serial:08d}"))
    check = 11 - total % 11
    return 0 if check == 10 else 5 if check == 11 else check


def s10_code(prefix: str, serial: int, country: str) -> str:
    """Return the S10 code of a serial, e.g. s10_code("RA", 12345678, "BR") == "RA123456785BR"."""
    return f"{prefix}{serial:08d}{s10_check_digit(serial)}{country}"


def is_valid_s10(code: str) -> bool:
    """True when `code` is a well-formed S10 code with the right check digit."""
    match = S10_CODE.match(code)
    return bool(match) and s10_check_digit(int(match.group(2))) == int(match.group(3))


def parse_s10_range(prefix: str, country: str, text: str) -> S10Range:
    """Return the S10 range of `--prefix AA --country BR --range FIRST-LAST`, or raise InvalidValue."""
    prefix, country = (prefix or "").strip().upper(), (country or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", prefix):
        raise InvalidValue(f"invalid S10 prefix {prefix[:10]!r}", hint=f"two letters, e.g. {param('prefix')} AA")
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise InvalidValue(f"invalid S10 country {country[:10]!r}",
                           hint=f"an ISO 3166 alpha-2 code, e.g. {param('country')} BR")
    match = S10_RANGE.match(text or "")
    if not match:
        raise InvalidValue(f"invalid S10 range {(text or '')[:30]!r}",
                           hint="FIRST-LAST with serials of up to eight digits, "
                                f"e.g. {param('range')} 10000000-10999999")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise InvalidValue(f"the S10 range {first}-{last} ends before it starts")
    return S10Range(prefix, country, first, last)


def s10_codes(conn: psycopg.Connection, pool: Pool, count: int) -> list[str]:
    """Reserve the next `count` serials of an S10 pool (fewer when the range ends); return their codes.

    Raises PoolExhausted when no serial is left. Reserved serials are never handed out again,
    even when the transaction that uses them inserts nothing.
    """
    row = conn.execute(SQL.reserve_serials, {"n": count, "id": pool.id}).fetchone()
    if row is None:
        raise InvalidValue(f"pool {pool.name!r} is not an S10 pool")
    name, prefix, country, first, n, lo, hi = row
    if count > 0 and n == 0:
        raise PoolExhausted(
            f"S10 pool {name!r} has used its whole range {prefix}{lo:08d}-{hi:08d}{country}",
            hint="ask the carrier for a new range, create a pool with it ('trackctl pool create NAME --kind s10 ...') "
                 "and point the carrier at it ('trackctl carrier set CARRIER --pool NAME')")
    return [s10_code(prefix, serial, country) for serial in range(first, first + n)]


def s10_usage(conn: psycopg.Connection) -> list[S10Usage]:
    """Return the range, next serial and free codes of every S10 pool."""
    return [S10Usage(*row) for row in conn.execute(SQL.s10_usage).fetchall()]
