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
    order_id: str
    carrier: str
    parcel: int
    status: str
    label: str
    pool: str
    assigned_at: datetime
    shipping_date: datetime | None


SHIPMENT = """
SELECT t.tracking_id, t.order_id, c.name, t.parcel, t.status, s.label, p.name, t.assigned_at, t.shipping_date
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
JOIN sequencing.pool p ON p.id = t.pool_id
"""


def shipment_by_code(conn: psycopg.Connection, code: str) -> Shipment:
    """Return the shipment that holds `code`, or raise NotFound."""
    row = conn.execute(SHIPMENT + " WHERE t.tracking_id = %s", (code,)).fetchone()
    if row is None:
        free = conn.execute("SELECT 1 FROM sequencing.tracking WHERE tracking_id = %s", (code,)).fetchone()
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
