"""Assigning a stream of input lines, a chunk at a time: set-based SQL, one transaction per chunk.

Lines are validated by trackctl.batch_input; each chunk goes to the database as COPY into a
temporary table followed by a few set-based statements (sql/queries/assign.sql). A chunk ends at
CHUNK lines or when the input pauses (an IDLE record), so a co-process gets its answers at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import psycopg

from .assign import SQL, Assignment
from .batch_claims import Codes, GiveWay, claim_few, claim_set, claim_with_retries, copy_escaped
from .batch_input import IDLE
from .carriers import Carrier, list_carriers, unknown_carrier
from .names import CARRIER_NAME, carrier_ref_id

CANCEL_TIMEOUT = 10.0  # seconds to wait for a cancelled chunk of an abandoned batch
# A chunk ended by a pause in the input with at most this many distinct keys (a co-process's line
# or few) runs the single claim statement per key in its transaction instead of the set-based path,
# whose temporary table, COPY and extra statements cost several times one claim.
FEW = 16

CHUNK = 5_000
# Chunks whose database work `trackctl assign --batch` keeps in flight at once, each on a connection
# of its own: the server's work per assignment is the bound, and a second backend puts it on the
# machine's second core (docs/ARCHITECTURE.md, "assign --batch"). Costs one more connection per batch.
CLI_CONNECTIONS = 2
# The extra connection is opened when a chunk goes out while the one before it is in flight and
# more than WARM chunks have gone out without a pause in the input: a batch that fits in one chunk,
# or a co-process's trickle, never pays for it. With 1, a long batch has both backends working from
# its second chunk on (with 2 the first backend worked alone for the first two chunks: about a
# tenth of a 100 000-line batch's time).
WARM = 1
TURN_POLL = 0.05  # seconds between looks while a chunk's work is done and the chunk before it has not committed


class _Stopped(Exception):
    """The batch was abandoned, or an earlier chunk failed: this chunk rolls back, committing nothing."""


class BatchLine(NamedTuple):  # named tuples: one of each per input line, made at a tuple's cost
    line: int
    order_id: str
    carrier: Carrier
    parcel: int = 1


class BatchOutcome(NamedTuple):
    """One input line's fate: an assignment, or a rejection with its reason."""

    line: int  # the input line number, from 1 (blank lines counted)
    assignment: Assignment | None = None  # the line's code; None when the line was rejected
    error: str | None = None  # why, in one line (shown as `line N: ...` on stderr)


class _Chunk:
    """One chunk of a batch: its lines, the held outcomes in input order, and its database work.

    The COPY text is made and the assignments are built by the caller's thread; only `run`, the
    database work, may go to a background thread. With several chunks in flight (each on its own
    connection) a chunk commits only after the chunk started before it (`before`) has committed,
    so the database always holds a prefix of the input's chunks, as with one connection.
    """

    def __init__(self, lines: list[BatchLine], held: list[BatchOutcome | BatchLine], paused: bool = False) -> None:
        self.lines, self.held = lines, held
        # The same (order, carrier, parcel) may appear twice in a chunk: only its first line claims.
        # This and outcomes() run once per input line in the batch's one Python thread, which a
        # 2-CPU machine shares with two server processes: they are kept to a few operations a line.
        first: dict[tuple[str, int, int], int] = {}
        self.firsts = firsts = []  # per line (by seq), the seq of its key's first line
        self.keys = keys = []  # the first line of each key, with its seq
        setdefault, add_first, add_key = first.setdefault, firsts.append, keys.append
        for seq, item in enumerate(lines):
            at = setdefault((item.order_id, item.carrier.id, item.parcel), seq)
            add_first(at)
            if at == seq:
                add_key((seq, item))
        self.few = paused and len(keys) <= FEW  # ended by a pause in the input, and small
        self.copy_text = "" if self.few else "".join([
            f"{seq}\t{copy_escaped(i.order_id)}\t{i.carrier.id}\t{i.carrier.pool_id}\t{i.parcel}\n"
            for seq, i in keys])
        self.codes: Codes = {}
        self.inline: set[int] = set()
        self.refused: dict[int, str] = {}
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.conn: psycopg.Connection | None = None  # the connection of its work in flight
        self.pid = 0  # that connection's server process
        self.before: _Chunk | None = None  # the chunk in flight when this one started: it commits first
        self.finished = threading.Event()  # its work is over: committed, or failed and rolled back
        self.stop = False  # the batch is abandoned: roll back rather than commit

    def run(self, conn: psycopg.Connection) -> None:
        try:
            if self.lines:
                if self.few:
                    claim = lambda: claim_few(conn, self.keys, self._turn)  # noqa: E731
                else:
                    claim = lambda: claim_set(conn, self.copy_text, len(self.keys), self._turn)  # noqa: E731
                self.codes, self.inline, self.refused = claim_with_retries(
                    conn, claim, len(self.keys), f"{self.lines[0].line}-{self.lines[-1].line}", self._after_yield)
                self._refuse_cancelled(conn)
        except BaseException as exc:  # handed to the reader of the outcomes, in whichever thread
            self.error = exc
        finally:
            self.before = None  # no chain of finished chunks kept alive
            self.finished.set()

    def _turn(self, conn: psycopg.Connection) -> None:
        """Last thing in the chunk's transaction: wait until the chunk before it has committed.

        The earlier chunk may be waiting for a lock this transaction holds (an order in both
        chunks, whose unique key this one wrote first): then this one rolls back (GiveWay) and the
        earlier one goes on. If the earlier chunk failed, or the batch is abandoned, this one
        rolls back too (_Stopped): the database never holds a chunk without every chunk before it.
        """
        before = self.before
        while not self.stop and before is not None and not before.finished.wait(TURN_POLL):
            if conn.execute(SQL.batch_waits_for_me, (before.pid,)).fetchone()[0]:
                raise GiveWay
        if self.stop or (before is not None and before.error is not None):
            raise _Stopped

    def _after_yield(self) -> None:
        before = self.before
        if before is not None:
            before.finished.wait()

    def _refuse_cancelled(self, conn: psycopg.Connection) -> None:
        """Refuse the lines whose order already had a code that was cancelled, as a single assign does."""
        existing = {seq: code for seq, (code, new) in self.codes.items() if not new}
        if not existing:
            return
        cancelled = {code for (code,) in conn.execute(SQL.batch_cancelled, (list(existing.values()),)).fetchall()}
        items = dict(self.keys)
        for seq, code in existing.items():
            if code in cancelled:
                item = items[seq]
                self.refused[seq] = (f"order {item.order_id} with {item.carrier.name} was cancelled: its code {code} "
                                     "is not handed out again (a new parcel number gets a new code)")

    def start(self, conn: psycopg.Connection, before: _Chunk | None = None) -> None:
        self.conn, self.pid, self.before = conn, conn.info.backend_pid, before
        self.thread = threading.Thread(target=self.run, args=(conn,), name="trackctl-assign-chunk", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop the chunk's statement (its transaction rolls back, as if never sent) and wait for it."""
        self.stop = True
        if self.thread is not None and self.thread.is_alive() and self.conn is not None:
            try:
                self.conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            except Exception:  # a lost server: the transaction is gone with the connection anyway
                pass
            self.thread.join(CANCEL_TIMEOUT)

    def outcomes(self) -> Iterator[BatchOutcome]:
        """The held outcomes in input order: rejections as they were, each line's assignment or
        the reason its pool refused it (one pass: this runs once per input line)."""
        self.wait()
        firsts, refused, codes, inline = self.firsts, self.refused, self.codes, self.inline
        seq = -1  # the held lines are self.lines, in the same order
        for item in self.held:
            if type(item) is BatchOutcome:
                yield item
                continue
            seq += 1
            first = firsts[seq]
            if first in refused:
                yield BatchOutcome(item.line, None, refused[first])
                continue
            code, new = codes[first]
            is_first = seq == first
            yield BatchOutcome(item.line, Assignment(item.order_id, item.carrier.name, code, new and is_first,
                                                     item.parcel, is_first and first in inline))


def _open_like(conn: psycopg.Connection) -> psycopg.Connection | None:
    """Another connection with `conn`'s parameters and settings, or None if the server refuses it."""
    from .db import conninfo_of, open_connection
    from .errors import TrackctlError

    try:  # at once or not at all: max_connections, a role's limit, a pooler's leave the batch one
        other = open_connection(conninfo_of(conn), wait_when_full=0)
    except TrackctlError:
        return None
    other.prepare_threshold = conn.prepare_threshold  # a library caller's own setting, if it has one
    return other


def assign_lines(conn: psycopg.Connection, records: Iterable[tuple[int, dict]],
                 chunk_size: int = CHUNK, *, overlap: bool = False, connections: int = 1) -> Iterator[BatchOutcome]:
    """Yield one outcome per parsed input record, in input order, assigning a chunk at a time.

    `records` are (line number, fields) pairs from `trackctl.batch_input`; fields hold
    `order_id`, `carrier` and optionally `parcel`, or `error` for a line that did not parse.
    Memory stays bounded by the chunk size whatever the length of the input. A chunk ends at
    `chunk_size` lines or at an IDLE record (the input paused), whichever comes first: every line
    before an IDLE is committed and its outcome yielded before the next record is asked for.

    With `overlap` each chunk's database work runs in a background thread while the next chunk
    is read and the previous one's outcomes are consumed, so parsing and printing cost no
    wall-clock time on a second core. `records` must then not use `conn` itself. With
    `connections` above 1 (and `conn` in autocommit, outside a transaction) up to that many
    chunks are in flight at once, each on its own connection opened like `conn` when first
    needed (and closed at the end); if the server refuses one, the batch goes on with those it
    has. Each chunk is still one transaction, chunks commit in input order, and an interrupted
    or failing run rolls back every chunk in flight before the exception leaves this generator.
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
    running: deque[_Chunk] = deque()  # chunks whose database work is in flight, oldest first (overlap only)
    free = [conn]  # connections with no chunk in flight
    opened: list[psycopg.Connection] = []  # the connections this batch opened, closed at the end
    # A second connection sees only what is committed: none for a caller's open transaction.
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    most = max(1, connections) if conn.autocommit and idle else 1
    streak = 0  # chunks sent since the input last paused

    def oldest_done() -> _Chunk:
        running[0].wait()  # interrupted here, the chunk is still in `running` for the cleanup below
        done = running.popleft()
        free.append(done.conn)
        return done

    def settle() -> Iterator[BatchOutcome]:
        while running:
            yield from oldest_done().outcomes()

    def flush(paused: bool = False) -> Iterator[BatchOutcome]:
        nonlocal pending, held, looked_up, most, streak
        chunk, pending, held = _Chunk(pending, held, paused), [], []
        looked_up = False
        if not overlap:
            chunk.run(conn)
            yield from chunk.outcomes()
            return
        streak = 0 if paused else streak + 1
        if not free and 1 + len(opened) < most and streak > WARM:
            other = _open_like(conn)
            if other is None:
                most = 1 + len(opened)
            else:
                opened.append(other)
                free.append(other)
        previous = None if free else oldest_done()  # one transaction at a time on a connection
        chunk.start(free.pop(), running[-1] if running else None)
        running.append(chunk)
        if previous is not None:
            yield from previous.outcomes()  # consumed while the new chunk is in the database

    try:
        for record in records:
            if record is IDLE:  # the input paused: answer every line that arrived, then wait for more
                if len(running) > 1:
                    # Answer the chunks in flight first: started now, the pause's (usually small)
                    # chunk would only hold its locks while it waits for their commits.
                    yield from settle()
                if held:
                    yield from flush(paused=True)
                yield from settle()
                continue
            line, fields = record
            if "error" in fields:
                held.append(BatchOutcome(line, error=fields["error"]))
            else:
                ref = fields["carrier"]
                carrier = carriers.get(ref)  # a known name or id: the usual line, at one dict look-up
                if carrier is None and (number := carrier_ref_id(ref)) is not None:
                    ref = str(number)  # '03' names carrier 3, as it does for a single assign
                    carrier = carriers.get(ref)
                if carrier is None and not looked_up and (carrier_ref_id(ref) is not None or CARRIER_NAME.fullmatch(ref)):
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
        # An exception or a consumer that stopped reading: nothing half-done. Every chunk in flight
        # is told first (a chunk waiting for its turn rolls back at once), then each is cancelled.
        for chunk in running:
            chunk.stop = True
        for chunk in running:
            chunk.abandon()
        for other in opened:
            if not any(c.conn is other and c.thread is not None and c.thread.is_alive() for c in running):
                other.close()  # (one whose chunk would not stop goes with the process)
