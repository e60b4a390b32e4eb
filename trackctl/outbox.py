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

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from .errors import InvalidValue

TRACKING_ASSIGNED = "tracking.assigned"
STATUS_CHANGED = "shipment.status_changed"
SHIPMENT_STALE = "shipment.stale"
EVENT_TYPES = (TRACKING_ASSIGNED, STATUS_CHANGED, SHIPMENT_STALE)

# The channel the outbox trigger notifies (once per writing transaction, at commit).
CHANNEL = "trackctl_outbox"
# Followers (`events --follow`, `notify`) also look again this often without a NOTIFY: through a
# transaction-mode pooler such as PgBouncer a LISTEN hears nothing, and this bounds the delay.
RECHECK_SECONDS = 5.0

INSERT_EVENT = """
INSERT INTO sequencing.outbox (type, shipment_id, payload) VALUES (%s, %s, %s)
RETURNING event_id
"""

# The payload of `shipment.status_changed`, read from the shipment as it is after the change
# (so call it after updating the row, in the same transaction). `label` is the Portuguese label.
INSERT_STATUS_CHANGED = """
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'shipment.status_changed', t.id, jsonb_build_object(
    'code', t.tracking_id, 'order_id', t.order_id, 'carrier', c.name, 'status', t.status,
    'previous_status', %(previous_status)s::text, 'label', s.label,
    'occurred_at', sequencing.rfc3339(%(occurred_at)s::timestamptz),
    'description', %(description)s::text, 'location', %(location)s::text)
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
WHERE t.id = %(shipment_id)s
RETURNING event_id
"""

# `last_event_at` is given by the caller (the time of the newest carrier event, or null).
INSERT_STALE = """
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'shipment.stale', t.id, jsonb_build_object(
    'code', t.tracking_id, 'order_id', t.order_id, 'carrier', c.name, 'status', t.status,
    'last_event_at', sequencing.rfc3339(%(last_event_at)s::timestamptz))
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.id = %(shipment_id)s
RETURNING event_id
"""


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
    row = conn.execute(INSERT_EVENT, (type, shipment_id, Jsonb(data))).fetchone()
    return row[0]


def record_status_changed(conn: psycopg.Connection, shipment_id: int, previous_status: str | None,
                          occurred_at: datetime | None, description: str | None = None,
                          location: str | None = None) -> str | None:
    """Write the `shipment.status_changed` event of a shipment whose row already has its new status.

    Returns the event id (None when no shipment has that id). Call it in the change's transaction.
    """
    row = conn.execute(INSERT_STATUS_CHANGED, {
        "shipment_id": shipment_id, "previous_status": previous_status, "occurred_at": occurred_at,
        "description": description, "location": location}).fetchone()
    return row[0] if row else None


def record_stale(conn: psycopg.Connection, shipment_id: int, last_event_at: datetime | None) -> str | None:
    """Write the `shipment.stale` event of a shipment just flagged stale; return the event id."""
    row = conn.execute(INSERT_STALE, {"shipment_id": shipment_id, "last_event_at": last_event_at}).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------
# Retention

PRUNE_CHUNK = 10_000

# One id range at a time (the primary key; ids grow with time, so the scan stops at the first
# range with nothing old enough). An event stays while any delivery of it is pending (or dead,
# unless asked: a dead delivery can still be replayed), while a consumer group has not been
# handed it (or holds it in an unacknowledged lease).
PRUNE_RANGE = """
WITH doomed AS (
    SELECT o.id FROM sequencing.outbox o
    WHERE o.id > %(after)s AND o.id <= %(upto)s AND o.created_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery d
                      WHERE d.outbox_id = o.id
                        AND (d.status = 'pending' OR (d.status = 'dead' AND NOT %(include_dead)s)))
      AND NOT EXISTS (SELECT 1 FROM sequencing.event_group g
                      WHERE g.position < o.id AND (g.types IS NULL OR o.type = ANY (g.types)))
      AND NOT EXISTS (SELECT 1 FROM sequencing.event_group_lease l
                      WHERE l.after_id < o.id AND o.id <= l.last_id)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM sequencing.outbox o USING doomed WHERE o.id = doomed.id
"""
PRUNE_BOUNDS = "SELECT min(id), max(id) FROM sequencing.outbox WHERE created_at < %s"


def prune(conn: psycopg.Connection, older_than: timedelta, *, include_dead: bool = False) -> int:
    """Delete events older than `older_than` that every subscriber and group is done with; return how many.

    Each id range is its own short transaction, so writers and readers never wait long.
    """
    if older_than <= timedelta(0):
        raise InvalidValue("the age must be positive", hint="e.g. --older-than 30d")
    cutoff = conn.execute("SELECT now() - %s", (older_than,)).fetchone()[0]
    low, high = conn.execute(PRUNE_BOUNDS, (cutoff,)).fetchone()
    if low is None:
        return 0
    removed = 0
    after = low - 1
    while after < high:
        upto = min(after + PRUNE_CHUNK, high)
        removed += conn.execute(PRUNE_RANGE, {"after": after, "upto": upto, "cutoff": cutoff,
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


BACKLOG = """
SELECT (SELECT count(*) FROM sequencing.outbox),
       count(*) FILTER (WHERE d.status = 'pending'),
       count(*) FILTER (WHERE d.status = 'dead'),
       min(o.created_at) FILTER (WHERE d.status = 'pending')
FROM sequencing.webhook_delivery d JOIN sequencing.outbox o ON o.id = d.outbox_id
WHERE d.status IN ('pending', 'dead')
"""


def backlog(conn: psycopg.Connection) -> Backlog:
    """Return the number of events, pending and dead deliveries, and the oldest pending event's time."""
    return Backlog(*conn.execute(BACKLOG).fetchone())
