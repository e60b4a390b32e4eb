"""The state of the whole system in one read: what `trackctl status`, `metrics` and `health` show.

Each section is one set-based query. Every table they read exists: `db.connect` refuses a
database that lacks a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from . import cron, queries
from .pools import PoolLevel, pool_levels
from .runs import JobState, last_runs


@dataclass(frozen=True)
class ShipmentCount:
    carrier: str
    status: str
    count: int


@dataclass(frozen=True)
class OutboxBacklog:
    pending: int  # webhook deliveries not yet done (due now, leased, or waiting for a retry)
    oldest_seconds: float | None  # age of the oldest event among them
    lag_seconds: float | None  # how long the longest-waiting due delivery has been due: notify's lag


@dataclass(frozen=True)
class JobLine:
    """The last run of one job, as the dashboard shows it."""
    job: str
    outcome: str  # running | ok | partial | failed | skipped | died | never
    started_at: datetime | None
    seconds: float | None
    last_ok_at: datetime | None
    counts: dict
    error: str | None
    interval: int | None  # from the schedule; None for a job the schedule does not know
    last_worked_at: datetime | None = None  # newest run that did (some of) its work: ok or partial


@dataclass(frozen=True)
class Dashboard:
    at: datetime
    pools: list[PoolLevel]
    shipments: list[ShipmentCount]
    overdue_polls: int
    outbox: OutboxBacklog
    dead_deliveries: int
    jobs: list[JobLine]


SQL = queries.load("dashboard")


def shipment_counts(conn: psycopg.Connection) -> list[ShipmentCount]:
    """Return assigned shipments counted by carrier and status (ordered by carrier, status position)."""
    order = {k: p for k, p in conn.execute(SQL.status_positions).fetchall()}
    rows = [ShipmentCount(*r) for r in conn.execute(SQL.shipments).fetchall()]
    return sorted(rows, key=lambda r: (r.carrier, order.get(r.status, 99)))


def job_lines(conn: psycopg.Connection) -> list[JobLine]:
    """Return the last run of every scheduled job (outcome `never` when it has not run) and of any other."""
    states = last_runs(conn)
    lines = []
    for j in cron.JOBS:
        lines.append(_job_line(j.name, states.pop(j.name, None), j.interval))
    for name, state in sorted(states.items()):
        lines.append(_job_line(name, state, None))
    return lines


def _job_line(name: str, state: JobState | None, interval: int | None) -> JobLine:
    if state is None:
        return JobLine(name, "never", None, None, None, {}, None, interval)
    last = state.last
    return JobLine(name, last.outcome, last.started_at, last.seconds, state.last_ok_at, last.counts,
                   last.error, interval, state.last_worked_at)


def overdue_polls(conn: psycopg.Connection) -> int:
    """Return how many unfinished shipments are overdue for polling."""
    from .poll import overdue_shipments  # one definition of "overdue" for poll, dashboard, health, metrics

    return overdue_shipments(conn)


def outbox_backlog(conn: psycopg.Connection) -> OutboxBacklog:
    """Return the pending webhook deliveries, their oldest event's age and notify's lag."""
    pending, oldest, lag = conn.execute(SQL.outbox_backlog).fetchone()
    return OutboxBacklog(pending, None if oldest is None else round(oldest, 3), None if lag is None else round(lag, 3))


def dead_deliveries(conn: psycopg.Connection) -> int:
    """Return how many webhook deliveries are parked as dead."""
    return conn.execute(SQL.dead_deliveries).fetchone()[0]


def snapshot(conn: psycopg.Connection) -> Dashboard:
    """Return the dashboard: pools, shipments, overdue polls, outbox, dead deliveries, jobs."""
    at = conn.execute(SQL.now).fetchone()[0]
    return Dashboard(at, pool_levels(conn), shipment_counts(conn), overdue_polls(conn), outbox_backlog(conn),
                     dead_deliveries(conn), job_lines(conn))
