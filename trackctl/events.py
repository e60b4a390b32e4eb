"""The events stream: outbox rows as JSON lines from a cursor, and consumer groups sharing one stream.

Reading by id without losing events. Outbox ids come from a sequence when a row is inserted,
but transactions commit in any order: a reader could see id 11 while id 10 is still
uncommitted, move its cursor past 10 and never see it. So a reader only goes up to a *settled
horizon*: it reads the sequence's last value H, then the transactions that hold a write lock on
the outbox at that moment. Every id up to H was taken by one of them or by a transaction that
has already ended; once those few have ended too (usually within milliseconds; writers are not
blocked meanwhile), every id up to H is committed or will never exist. Ids above H wait for the
next round.

Consumer groups. A collector joins a group by taking one of its six slots: a session advisory
lock that PostgreSQL holds exactly as long as the collector's connection lives, so a seventh
collector is refused at once and a killed one frees its slot at once. A collector takes a batch
by moving the group's position forward and writing a lease (the id range it took), in one
transaction under the group row's lock; it acknowledges by deleting the lease after the batch was
written and flushed. A lease whose collector is gone (its slot lock released, or taken over by a
new collector) or whose time ran out is handed whole to the next collector that asks.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from .errors import GroupFull, InvalidValue, NotFound, UsageError, param
from . import queries
from .outbox import RECHECK_SECONDS, check_types, listen, wait_for_events

SQL = queries.load("events")

PAGE = 5_000
GROUP_BATCH = 100
MAX_COLLECTORS = 6  # per group; also the CHECK on event_group_member.slot
GROUP_LOCK_CLASS = 7_262_005  # advisory lock (class, group id * 8 + slot) held by a live collector;
# sql/queries/events.sql names the same class where it tells live collectors from gone ones.
DEFAULT_LEASE = 30.0
GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")



def parse_cursor(text: str | None) -> int:
    """Return the position a cursor printed by `trackctl events` stands for (None: the beginning)."""
    if text is None or text == "":
        return 0
    # Any outbox id (a bigint) is a cursor: up to 19 digits, at most 2**63 - 1.
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise InvalidValue(f"invalid cursor {text[:30]!r}", hint="pass the `cursor` value of an event line")
    return int(text)


def settled_horizon(conn: psycopg.Connection, *, max_wait: float | None = None) -> int:
    """Return the highest outbox id below which every event is committed or will never exist.

    Waits (without blocking writers) for the transactions that were writing to the outbox when
    it was called; `max_wait` seconds at most (then the previous safe answer is unknown: raise).
    """
    last, writers = conn.execute(SQL.horizon).fetchone()
    if writers:
        delay, started = 0.001, time.monotonic()
        while conn.execute(SQL.still_writing, (writers,)).fetchone()[0]:
            if max_wait is not None and time.monotonic() - started > max_wait:
                raise TimeoutError("transactions writing to the outbox did not end in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    return int(last or 0)


def read_page(conn: psycopg.Connection, after: int, upto: int, types: list[str] | None,
              limit: int) -> list[tuple[int, str]]:
    """Return up to `limit` (id, JSON line) of events with after < id <= upto, oldest first."""
    return conn.execute(SQL.page, {"after": after, "upto": upto, "types": types, "limit": limit}).fetchall()


def stream(conn: psycopg.Connection, *, after: int = 0, types: list[str] | None = None,
           limit: int | None = None, follow: bool = False,
           keep_going: Callable[[], bool] | None = None) -> Iterator[list[tuple[int, str]]]:
    """Yield pages of (id, JSON line), oldest first, of events after the cursor position `after`.

    Without `follow` it ends at the events settled when it started. With `follow` it waits for
    new ones (LISTEN/NOTIFY) and calls `keep_going()` at least once a second while idle; it ends
    when that returns False.
    """
    types = check_types(types)
    if limit is not None and limit < 1:
        raise InvalidValue(f"{param('limit')} must be 1 or more", value=limit)
    if follow:
        listen(conn)
    sent = 0
    while True:
        upto = settled_horizon(conn)
        while after < upto:
            want = PAGE if limit is None else min(PAGE, limit - sent)
            page = read_page(conn, after, upto, types, want)
            if page:
                yield page
                sent += len(page)
                if limit is not None and sent >= limit:
                    return
            after = page[-1][0] if len(page) == want else upto
        if not follow:
            return
        if not wait_for_events(conn, keep_going, RECHECK_SECONDS):
            return


# ---------------------------------------------------------------------------------------------
# Consumer groups



def check_group_name(name: str) -> str:
    if not GROUP_NAME.fullmatch(name or ""):
        raise InvalidValue(f"invalid group name {name[:40]!r}",
                           hint="use 1-64 lowercase letters, digits, '.', '-' or '_'")
    return name


@dataclass(frozen=True)
class Batch:
    """Events handed to one collector under one lease; acknowledge it once they are written."""
    lease_id: int
    events: list[tuple[int, str]]
    redelivered: bool  # a collector before this one took it and never acknowledged it


@dataclass(frozen=True)
class GroupState:
    name: str
    types: str
    position: str  # cursor of the last event handed out
    collectors: int  # live
    waiting: int  # events not yet handed out
    unacknowledged: int  # events handed out, not yet acknowledged
    created_at: datetime


class Collector:
    """One collector of a consumer group, on its own connection (which holds its slot)."""

    def __init__(self, conn: psycopg.Connection, group: str, *, types: list[str] | None = None,
                 after: int | None = None, lease: float = DEFAULT_LEASE) -> None:
        self.conn = conn
        self.name = check_group_name(group)
        self.types = check_types(types)
        self.after = after
        if not 1 <= lease <= 86400:
            raise InvalidValue(f"{param('lease')} must be between 1 second and 1 day", value=lease)
        self.lease = timedelta(seconds=lease)
        self.token = uuid.uuid4()
        self.group_id: int | None = None
        self.slot: int | None = None
        self.group_types: list[str] | None = None

    def join(self) -> int:
        """Take a free slot of the group (creating the group if new); return it, or raise GroupFull."""
        self.conn.execute(SQL.ensure_group, (self.name, self.types, self.after or 0))
        group_id, group_types, _ = self.conn.execute(SQL.select_group, (self.name,)).fetchone()
        if self.types is not None and self.types != group_types:
            have = ",".join(group_types) if group_types else "all types"
            raise UsageError(f"consumer group {self.name!r} was created for {have}",
                             hint=f"drop {param('types')}, or use another group name")
        self.group_id, self.group_types = group_id, group_types
        for slot in range(1, MAX_COLLECTORS + 1):
            if self.conn.execute(SQL.try_slot, (GROUP_LOCK_CLASS, group_id * 8 + slot)).fetchone()[0]:
                self.conn.execute(SQL.take_slot, {"group": group_id, "slot": slot, "token": self.token,
                                              "host": socket.gethostname()[:255], "pid": os.getpid()})
                self.slot = slot
                listen(self.conn)
                return slot
        raise GroupFull(f"consumer group {self.name!r} already has {MAX_COLLECTORS} live collectors",
                        hint="stop one of them, or start this collector in another group")

    def take(self, limit: int = GROUP_BATCH) -> Batch | None:
        """Return the next batch for this collector (a dead collector's first), or None when none is waiting."""
        if self.slot is None:
            raise RuntimeError("join the group first")
        upto = settled_horizon(self.conn)
        conn = self.conn
        with conn.transaction():
            position, _ = conn.execute(SQL.lock_group, (self.group_id,)).fetchone()
            row = conn.execute(SQL.reclaim, {"slot": self.slot, "token": self.token, "lease": self.lease,
                                         "group": self.group_id}).fetchone()
            if row is not None:
                lease_id, after_id, last_id, handed_out = row
                events = read_page(conn, after_id, last_id, self.group_types, limit + 1)
                if len(events) > limit:
                    cut = events[limit - 1][0]
                    conn.execute(SQL.shrink_lease, (cut, lease_id))
                    conn.execute(SQL.split_lease, (self.group_id, cut, last_id, handed_out))
                    events = events[:limit]
                return Batch(lease_id, events, redelivered=True)
            if upto <= position:
                return None
            events = read_page(conn, position, upto, self.group_types, limit)
            last = events[-1][0] if len(events) == limit else upto
            if events:
                lease_id = conn.execute(SQL.new_lease, (self.group_id, position, last, self.slot, self.token,
                                                    self.lease)).fetchone()[0]
            conn.execute(SQL.advance, (last, self.group_id))
            return Batch(lease_id, events, redelivered=False) if events else None

    def ack(self, batch: Batch) -> bool:
        """Acknowledge a batch (after writing and flushing it); False if its lease had moved on."""
        return self.conn.execute(SQL.ack, (batch.lease_id, self.token)).rowcount == 1

    def wait(self, keep_going: Callable[[], bool] | None = None, seconds: float = 1.0) -> bool:
        """Wait up to `seconds` for new events; return False if `keep_going` says to stop."""
        return wait_for_events(self.conn, keep_going, seconds)

    def leave(self) -> None:
        """Give the slot back (closing the connection does the same)."""
        if self.slot is not None and not self.conn.closed:
            self.conn.execute(SQL.release_slot, (GROUP_LOCK_CLASS, self.group_id * 8 + self.slot))
            self.slot = None


def list_groups(conn: psycopg.Connection) -> list[GroupState]:
    """Return every consumer group with its live collectors and how far behind it is."""
    return [GroupState(name, ",".join(types) if types else "*", str(position), live, waiting, unacked, created)
            for name, types, position, live, waiting, unacked, created in conn.execute(SQL.list_groups).fetchall()]


def drop_group(conn: psycopg.Connection, name: str) -> None:
    """Delete a consumer group with no live collector (its position and leases go with it)."""
    check_group_name(name)
    with conn.transaction():
        row = conn.execute(SQL.select_group_for_update, (name,)).fetchone()
        if row is None:
            raise NotFound(f"no consumer group {name!r}", hint="see 'trackctl events groups'")
        if conn.execute(SQL.live_members, (row[0],)).fetchone()[0]:
            raise UsageError(f"consumer group {name!r} has live collectors", hint="stop them first")
        conn.execute(SQL.drop_group, (row[0],))
