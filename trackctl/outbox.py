"""The outbox: every change to a shipment becomes one event row, written in the change's transaction.

Writers insert into `sequencing.outbox` and nothing else: the table's statement trigger fans the
new rows out to webhook subscribers (`webhook_delivery`) and sends the NOTIFY that wakes
`trackctl events --follow` and `trackctl notify`. The event body is ../shared/WEBHOOKS.md:

- `tracking.assigned`: written by `trackctl.assign` inside its claim statements;
- `shipment.status_changed` and `shipment.stale`: `record_status_changed` / `record_stale`
  below, called by the one function every status change goes through, in its transaction.

Event types are the version: a type never changes meaning; a change of meaning is a new type.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from . import queries
from .errors import InvalidValue, param

SQL = queries.load("outbox")

TRACKING_ASSIGNED = "tracking.assigned"
STATUS_CHANGED = "shipment.status_changed"
SHIPMENT_STALE = "shipment.stale"
EVENT_TYPES = (TRACKING_ASSIGNED, STATUS_CHANGED, SHIPMENT_STALE)

# The channel the outbox trigger notifies (once per writing transaction, at commit), as named in
# sql/queries/outbox.sql's listen and unlisten.
CHANNEL = "trackctl_outbox"
# Followers (`events --follow`, `notify`) also look again this often without a NOTIFY: through a
# transaction-mode pooler such as PgBouncer a LISTEN hears nothing, and this bounds the delay.
RECHECK_SECONDS = 5.0



def check_types(types: list[str] | None) -> list[str] | None:
    """Return the event types if every one is known (None or empty: all types), else raise."""
    if not types:
        return None
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidValue(f"unknown event type {unknown[0][:60]!r} (known: {', '.join(EVENT_TYPES)})")
    return sorted(set(types), key=EVENT_TYPES.index)


def parse_types(text: str | None) -> list[str] | None:
    """Return the types of a comma-separated `--types` value (None: all types)."""
    if text is None:
        return None
    return check_types([t.strip() for t in text.split(",") if t.strip()])


def record(conn: psycopg.Connection, type: str, data: dict, shipment_id: int | None = None) -> str:
    """Write one event and return its id; run it inside the transaction of the change it records.

    `data` is the event's `data` object exactly as WEBHOOKS.md lists it for `type`.
    """
    check_types([type])
    row = conn.execute(SQL.insert_event, (type, shipment_id, Jsonb(data))).fetchone()
    return row[0]


def record_status_changed(conn: psycopg.Connection, shipment_id: int, previous_status: str | None,
                          occurred_at: datetime | None, description: str | None = None,
                          location: str | None = None) -> str | None:
    """Write the `shipment.status_changed` event of a shipment whose row already has its new status.

    Returns the event id (None when no shipment has that id). Call it in the change's transaction.
    """
    row = conn.execute(SQL.insert_status_changed, {
        "shipment_id": shipment_id, "previous_status": previous_status, "occurred_at": occurred_at,
        "description": description, "location": location}).fetchone()
    return row[0] if row else None


def record_stale(conn: psycopg.Connection, shipment_id: int, last_event_at: datetime | None) -> str | None:
    """Write the `shipment.stale` event of a shipment just flagged stale; return the event id."""
    row = conn.execute(SQL.insert_stale, {"shipment_id": shipment_id, "last_event_at": last_event_at}).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------
# Retention

PRUNE_CHUNK = 10_000

def prune(conn: psycopg.Connection, older_than: timedelta, *, include_dead: bool = False) -> int:
    """Delete events older than `older_than` that every subscriber and group is done with; return how many.

    Each id range is its own short transaction, so writers and readers never wait long.
    """
    if older_than <= timedelta(0):
        raise InvalidValue("the age must be positive", hint=f"e.g. {param('older_than')} 30d", field="older_than",
                           value=older_than)
    cutoff = conn.execute(SQL.cutoff, (older_than,)).fetchone()[0]
    low, high = conn.execute(SQL.prune_bounds, (cutoff,)).fetchone()
    if low is None:
        return 0
    removed = 0
    after = low - 1
    while after < high:
        upto = min(after + PRUNE_CHUNK, high)
        removed += conn.execute(SQL.prune_range, {"after": after, "upto": upto, "cutoff": cutoff,
                                              "include_dead": include_dead}).rowcount
        after = upto
    return removed


@dataclass(frozen=True)
class Backlog:
    """What is waiting in the outbox: for the dashboard, metrics and health."""
    events: int
    pending_deliveries: int
    dead_deliveries: int
    oldest_pending_at: datetime | None


def backlog(conn: psycopg.Connection) -> Backlog:
    """Return the number of events, pending and dead deliveries, and the oldest pending event's time."""
    return Backlog(*conn.execute(SQL.backlog).fetchone())


# ---------------------------------------------------------------------------------------------
# Waiting for new events: the one LISTEN helper of `events --follow`, consumer groups and notify

def listen(conn: psycopg.Connection) -> None:
    """Subscribe `conn` (autocommit) to the outbox channel: every commit that writes events wakes it."""
    conn.execute(SQL.listen)


def unlisten(conn: psycopg.Connection) -> None:
    conn.execute(SQL.unlisten)


def wait_for_events(conn: psycopg.Connection, keep_going: Callable[[], bool] | None = None,
                    seconds: float | None = None) -> bool:
    """Wait on a listening `conn` for an outbox notification, or for `seconds` (None: no limit).

    Checks `keep_going()` at least once a second; returns False as soon as it says to stop, True
    when a notification came or the time is up (so the caller looks at the outbox again).
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        if keep_going is not None and not keep_going():
            return False
        left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if left <= 0:
            return True
        for _ in conn.notifies(timeout=left, stop_after=1):
            return True
