"""Prometheus metrics: one read of the database exposed through a prometheus_client collector.

The values are read once per scrape (or per textfile write) into `MetricsData`; a custom
collector turns them into metric families in its own registry, and prometheus_client writes
the text exposition format. Nothing here keeps state between runs: counters such as poll
requests are totals the database already holds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from . import queries
from .dashboard import DELIVERY_TABLE, POLLING_TABLE, Dashboard, snapshot, table_exists
from .runs import OUTCOMES as RUN_OUTCOMES

TEXTFILE_NAME = "trackctl.prom"


@dataclass(frozen=True)
class CarrierPolls:
    carrier: str
    requests: int  # every request ever made for the carrier's shipments (a counter)
    recent_requests: int  # requests and failures of the poll runs of the last hour
    recent_failures: int  # rate-limited requests included
    recent_rate_limited: int
    breaker_open: bool
    blocked: bool  # HTTP 429: paused until the carrier's Retry-After


@dataclass(frozen=True)
class MetricsData:
    dashboard: Dashboard
    polls: list[CarrierPolls] | None = None  # None before the polling schema exists
    deliveries: dict[str, int] | None = None  # outcome -> count; None before the outbox exists
    extra: dict = field(default_factory=dict)


SQL = queries.load("metrics")


def poll_counts(conn: psycopg.Connection) -> list[CarrierPolls] | None:
    """Return poll requests and failures per polled carrier (None before polling exists)."""
    if not table_exists(conn, POLLING_TABLE):
        return None
    return [CarrierPolls(*row) for row in conn.execute(SQL.poll_counts).fetchall()]


def delivery_counts(conn: psycopg.Connection) -> dict[str, int] | None:
    """Return webhook deliveries by outcome: pending, done, dead (None before the outbox exists)."""
    if not table_exists(conn, DELIVERY_TABLE):
        return None
    counts = {"pending": 0, "done": 0, "dead": 0}
    counts.update({status: n for status, n in conn.execute(SQL.delivery_counts).fetchall()})
    return counts


def read_metrics(conn: psycopg.Connection) -> MetricsData:
    """Return everything `trackctl metrics` exposes, read from the database."""
    return MetricsData(snapshot(conn), poll_counts(conn), delivery_counts(conn))


class TrackctlCollector:
    """A prometheus_client collector over one MetricsData (or over none: trackctl_up 0)."""

    def __init__(self, data: MetricsData | None) -> None:
        self.data = data

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("trackctl_up", "1 when trackctl could read its database, else 0")
        up.add_metric([], 1 if self.data else 0)
        yield up
        if self.data is None:
            return
        d = self.data.dashboard

        target = GaugeMetricFamily("trackctl_pool_target_codes", "Free codes refill keeps ready", labels=["pool"])
        codes = GaugeMetricFamily("trackctl_pool_codes", "Codes in a pool by state", labels=["pool", "kind", "state"])
        # Assigned codes stay assigned (cancelling a shipment keeps its code), so their count only
        # grows: a counter, whose rate is the assignment rate.
        assignments = CounterMetricFamily("trackctl_assignments", "Codes assigned from a pool", labels=["pool"])
        for p in d.pools:
            target.add_metric([p.name], p.target)
            assignments.add_metric([p.name], p.assigned)
            codes.add_metric([p.name, p.kind, "free"], p.free)
            codes.add_metric([p.name, p.kind, "assigned"], p.assigned)
        yield target
        yield codes
        yield assignments

        shipments = GaugeMetricFamily("trackctl_shipments", "Shipments by carrier and status",
                                      labels=["carrier", "status"])
        for s in d.shipments:
            shipments.add_metric([s.carrier, s.status], s.count)
        yield shipments

        if self.data.polls is not None:
            requests = CounterMetricFamily("trackctl_poll_requests", "Carrier tracking requests made",
                                           labels=["carrier"])
            recent = GaugeMetricFamily("trackctl_poll_requests_last_hour", "Carrier requests of the last hour's poll runs",
                                       labels=["carrier"])
            failures = GaugeMetricFamily("trackctl_poll_failures_last_hour",
                                         "Failed or rate-limited requests of the last hour's poll runs", labels=["carrier"])
            limited = GaugeMetricFamily("trackctl_poll_rate_limited_last_hour",
                                        "Requests answered 429 in the last hour's poll runs", labels=["carrier"])
            breaker = GaugeMetricFamily("trackctl_carrier_breaker_open", "1 while the carrier's circuit breaker is open",
                                        labels=["carrier"])
            blocked = GaugeMetricFamily("trackctl_carrier_rate_limited", "1 while the carrier asked us to wait (429)",
                                        labels=["carrier"])
            for c in self.data.polls:
                requests.add_metric([c.carrier], c.requests)
                recent.add_metric([c.carrier], c.recent_requests)
                failures.add_metric([c.carrier], c.recent_failures)
                limited.add_metric([c.carrier], c.recent_rate_limited)
                breaker.add_metric([c.carrier], int(c.breaker_open))
                blocked.add_metric([c.carrier], int(c.blocked))
            yield from (requests, recent, failures, limited, breaker, blocked)
        if d.overdue_polls is not None:
            yield GaugeMetricFamily("trackctl_polls_overdue", "Unfinished shipments past their poll time",
                                    value=d.overdue_polls)
        if d.outbox is not None:
            yield GaugeMetricFamily("trackctl_outbox_backlog", "Outbox events not yet delivered",
                                    value=d.outbox.pending)
            yield GaugeMetricFamily("trackctl_outbox_oldest_age_seconds", "Age of the oldest undelivered event",
                                    value=d.outbox.oldest_seconds or 0)
            yield GaugeMetricFamily("trackctl_outbox_lag_seconds",
                                    "How long the longest-waiting due delivery has been due", value=d.outbox.lag_seconds or 0)
        if self.data.deliveries is not None:
            deliveries = GaugeMetricFamily("trackctl_deliveries", "Webhook deliveries by outcome", labels=["outcome"])
            for outcome, n in sorted(self.data.deliveries.items()):
                deliveries.add_metric([outcome], n)
            yield deliveries
        if d.dead_deliveries is not None:
            yield GaugeMetricFamily("trackctl_deliveries_dead", "Webhook deliveries parked as dead",
                                    value=d.dead_deliveries)

        started = GaugeMetricFamily("trackctl_job_last_run_timestamp_seconds", "Start of the job's newest run",
                                    labels=["job"])
        duration = GaugeMetricFamily("trackctl_job_last_run_duration_seconds",
                                     "Duration of the job's newest run (so far, while running)", labels=["job"])
        success = GaugeMetricFamily("trackctl_job_last_success_timestamp_seconds",
                                    "End of the job's newest successful run", labels=["job"])
        outcome = GaugeMetricFamily("trackctl_job_last_run_outcome",
                                    "1 for the outcome of the job's newest run, 0 for the other outcomes",
                                    labels=["job", "outcome"])
        worked = GaugeMetricFamily("trackctl_job_last_worked_timestamp_seconds",
                                   "End of the job's newest run that did its work (ok) or some of it (partial)",
                                   labels=["job"])
        for j in d.jobs:
            if j.started_at is None:
                continue
            started.add_metric([j.job], j.started_at.timestamp())
            duration.add_metric([j.job], j.seconds or 0.0)
            # Every outcome, so that `...{outcome="failed"} == 1` and `{outcome="partial"}` alerts
            # see a 0 rather than no series while the job is fine.
            for name in RUN_OUTCOMES:
                outcome.add_metric([j.job, name], int(j.outcome == name))
            if j.last_ok_at is not None:
                success.add_metric([j.job], j.last_ok_at.timestamp())
            if j.last_worked_at is not None:
                worked.add_metric([j.job], j.last_worked_at.timestamp())
        yield from (started, duration, success, outcome, worked)


def exposition(data: MetricsData | None) -> str:
    """Return the Prometheus text exposition of `data` (only trackctl_up 0 when it is None)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrackctlCollector(data))
    return generate_latest(registry).decode("utf-8")


def check_textfile_dir(directory: Path) -> Path:
    """Return `directory` if it is an existing directory, else raise InvalidValue (never create it)."""
    from .errors import InvalidValue

    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise InvalidValue(f"the textfile directory {str(directory)[:200]!r} {what}",
                           hint="give the directory node_exporter reads (its --collector.textfile.directory); "
                                "trackctl does not create it")
    return directory


def write_textfile(directory: Path, text: str, name: str = TEXTFILE_NAME) -> Path:
    """Replace DIRECTORY/NAME with `text` atomically (node_exporter never reads half a file); return it.

    The text goes to a temporary file in the same directory, is flushed to disk, made 0644 and
    renamed over the old file, and the directory entry is synced. The directory must exist: a
    mistyped path would otherwise be created and never read by node_exporter.
    """
    check_textfile_dir(directory)
    target = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
