"""The demo: a carrier, a refilled pool and a few hundred assigned orders, on whatever database is configured."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import psycopg

from .assign import assign_lines
from .batch_input import parse_records
from .carriers import add_carrier, list_carriers
from .pools import PoolLevel, pool_levels, refill

DEMO_CARRIER = "demo-express"


@dataclass(frozen=True)
class DemoSummary:
    orders: int
    new_codes: int
    refilled: int
    pools: list[PoolLevel]
    seconds: float


def run_demo(conn: psycopg.Connection, orders: int = 300) -> DemoSummary:
    """Create the demo carrier if needed, refill, assign `orders` demo orders in one batch; return a summary."""
    started = time.monotonic()
    if DEMO_CARRIER not in {c.name for c in list_carriers(conn)}:
        add_carrier(conn, DEMO_CARRIER)
    refilled = sum(r.generated for r in refill(conn))
    lines = "".join(f"demo-{n:06d},{DEMO_CARRIER}\n" for n in range(1, orders + 1))
    outcomes = list(assign_lines(conn, parse_records(io.BytesIO(lines.encode()), "csv")))
    new = sum(1 for o in outcomes if o.assignment and o.assignment.new)
    refilled += sum(r.generated for r in refill(conn))
    return DemoSummary(orders, new, refilled, pool_levels(conn), time.monotonic() - started)
