"""What was asked of each carrier (`trackctl carrier stats`, metrics, health) and the shipment search.

Every HTTP request a poll run makes to a carrier is one row of `sequencing.carrier_call`
(trackctl/poll_worker.py records it): the counts here are exactly the requests the carrier's
server received from trackctl, by outcome, with the numbers asked about and, for 17TRACK, the
numbers registered (each one a unit of the account's quota).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from . import queries
from .carriers.base import STATUSES
from .errors import InvalidValue
from .names import check_limit, check_order_id

SQL = queries.load("carrier_stats")
FAILURE_WINDOW = timedelta(hours=1)
FAILURE_RATIO = 0.5  # health warns when at least half of a carrier's requests of the last hour failed
FAILURE_MINIMUM = 10  # ... over at least this many requests


@dataclass(frozen=True)
class CarrierStats:
    carrier: str
    adapter: str
    requests: int
    failed: int
    rate_limited: int
    numbers: int  # shipments asked about in tracking requests
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    registered: int | None  # 17track: numbers registered (quota); None for other adapters


def carrier_stats(conn: psycopg.Connection, since: timedelta = timedelta(hours=24)) -> list[CarrierStats]:
    """Return per polled carrier what was asked of it in the last `since`."""
    out = []
    for name, adapter, requests, failed, limited, numbers, p50, p95, registered in conn.execute(
            SQL.stats, {"since": since}).fetchall():
        out.append(CarrierStats(name, adapter, requests, failed, limited, numbers,
                                None if p50 is None else round(p50, 1), None if p95 is None else round(p95, 1),
                                registered if adapter == "17track" else None))
    return out


def call_totals(conn: psycopg.Connection) -> list[tuple[str, str, int, int, int]]:
    """(carrier, outcome, requests, numbers, registered) since the accounting began: metric counters."""
    return [tuple(r) for r in conn.execute(SQL.totals).fetchall()]


def failing_carriers(conn: psycopg.Connection, ratio: float = FAILURE_RATIO, window: timedelta = FAILURE_WINDOW,
                     minimum: int = FAILURE_MINIMUM) -> list[tuple[str, int, int]]:
    """(carrier, requests, failed) of carriers whose failure ratio over `window` reached `ratio`."""
    return [tuple(r) for r in conn.execute(SQL.failure_ratios, {"window": window, "ratio": ratio,
                                                                "minimum": minimum}).fetchall()]


def prune_calls(conn: psycopg.Connection, older_than: timedelta) -> int:
    return conn.execute(SQL.prune, {"older_than": older_than}).rowcount


@dataclass(frozen=True)
class ShipmentRow:
    code: str
    order_id: str | None
    carrier: str
    status: str
    updated_at: datetime  # when trackctl last recorded news, or the assignment
    stale: bool


def find_shipments(conn: psycopg.Connection, *, statuses: list[str] | None = None, carrier: str | None = None,
                   stale: bool = False, no_news_for: timedelta | None = None, since: timedelta | None = None,
                   order_id: str | None = None, limit: int | None = None) -> list[ShipmentRow]:
    """Return shipments matching every filter given, most recently updated first."""
    from .carriers import get_carrier

    for s in statuses or []:
        if s not in STATUSES:
            raise InvalidValue(f"unknown status {s[:40]!r} (known: {', '.join(STATUSES)})")
    if order_id is not None:
        check_order_id(order_id)
    check_limit(limit)
    carrier_id = get_carrier(conn, carrier).id if carrier is not None else None
    rows = conn.execute(SQL.find_shipments, {
        "statuses": list(statuses) if statuses else None, "carrier": carrier_id, "stale": stale,
        "quiet": no_news_for, "since": since, "order_id": order_id, "limit": limit}).fetchall()
    return [ShipmentRow(*r) for r in rows]
