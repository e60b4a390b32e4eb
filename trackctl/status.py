"""Shipment look-ups by code or by order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from .errors import NotFound
from .names import check_order_id


@dataclass(frozen=True)
class Shipment:
    code: str
    order_id: str | None  # None: a carrier's number tracked without an order
    carrier: str
    parcel: int | None  # None: a carrier's number (`trackctl track`)
    status: str
    label: str
    pool: str | None  # None: a carrier's number (`trackctl track`)
    assigned_at: datetime
    shipping_date: datetime | None


SHIPMENT = """
SELECT t.tracking_id, t.order_id, c.name, t.parcel, t.status, s.label, p.name, t.assigned_at, t.shipping_date
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
LEFT JOIN sequencing.pool p ON p.id = t.pool_id
"""


def shipment_by_code(conn: psycopg.Connection, code: str) -> Shipment:
    """Return the shipment that holds `code`, or raise NotFound."""
    # Codes are printable ASCII (UUID, S10): anything else (undecodable argv, NUL) cannot even be sent.
    sendable = code.isascii() and code.isprintable()
    row = conn.execute(SHIPMENT + " WHERE t.tracking_id = %s", (code,)).fetchone() if sendable else None
    if row is None:
        free = sendable and conn.execute("SELECT 1 FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()
        if free:
            raise NotFound(f"code {code!r} is free: no order has it yet")
        raise NotFound(f"no shipment with code {code[:80]!r}", hint="check the code, or use --order ORDER")
    return Shipment(*row)


def shipments_by_order(conn: psycopg.Connection, order_id: str) -> list[Shipment]:
    """Return every shipment of an order (one per carrier and parcel), or raise NotFound."""
    check_order_id(order_id)
    rows = conn.execute(SHIPMENT + " WHERE t.order_id = %s ORDER BY c.name, t.parcel", (order_id,)).fetchall()
    if not rows:
        raise NotFound(f"order {order_id!r} has no tracking code", hint="assign one with 'trackctl assign'")
    return [Shipment(*row) for row in rows]


@dataclass(frozen=True)
class TimelineEvent:
    occurred_at: datetime
    status: str | None  # None: a carrier status trackctl does not know (see raw_status)
    label: str | None
    description: str | None
    location: str | None
    raw_status: str
    source: str  # carrier | manual


@dataclass(frozen=True)
class Timeline:
    """A shipment with its polling state and its events, oldest first."""

    shipment: Shipment
    stale_at: datetime | None
    last_polled_at: datetime | None
    next_poll_at: datetime | None  # None: never polled yet, due now
    poll_failures: int
    last_poll_error: str | None
    events: list[TimelineEvent]

    @property
    def stale(self) -> bool:
        return self.stale_at is not None


POLL_STATE = """
SELECT t.id, t.stale_at, t.last_polled_at, CASE WHEN t.next_poll_at = '-infinity' THEN NULL ELSE t.next_poll_at END,
       t.poll_failures, t.last_poll_error
FROM sequencing.tracking t WHERE t.tracking_id = %s
"""
EVENTS = """
SELECT e.occurred_at, e.status, s.label, e.description, e.location, e.raw_status, e.source
FROM sequencing.tracking_event e LEFT JOIN sequencing.status s ON s.key = e.status
WHERE e.shipment_id = %s
ORDER BY e.occurred_at, e.id
"""


def shipment_timeline(conn: psycopg.Connection, code: str) -> Timeline:
    """Return the shipment holding `code` with its event history, or raise NotFound."""
    shipment = shipment_by_code(conn, code)
    shipment_id, *state = conn.execute(POLL_STATE, (code,)).fetchone()
    events = [TimelineEvent(*row) for row in conn.execute(EVENTS, (shipment_id,)).fetchall()]
    return Timeline(shipment, *state, events)
