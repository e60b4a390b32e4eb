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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from . import queries
from .dashboard import Dashboard, snapshot
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
    polls: list[CarrierPolls]
    deliveries: dict[str, int]  # outcome -> count
    carrier_calls: list[tuple[str, str, int, int, int]]  # carrier_stats.call_totals


SQL = queries.load("metrics")


def poll_counts(conn: psycopg.Connection) -> list[CarrierPolls]:
    """Return poll requests and failures per polled carrier."""
    return [CarrierPolls(*row) for row in conn.execute(SQL.poll_counts).fetchall()]


def delivery_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Return webhook deliveries by outcome: pending, done, dead."""
    counts = {"pending": 0, "done": 0, "dead": 0}
    counts.update({status: n for status, n in conn.execute(SQL.delivery_counts).fetchall()})
    return counts


def read_metrics(conn: psycopg.Connection) -> MetricsData:
    """Return everything `trackctl metrics` exposes, read from the database."""
    from .carrier_stats import call_totals

    return MetricsData(snapshot(conn), poll_counts(conn), delivery_counts(conn), call_totals(conn))


# Per-carrier poll series: (kind, name, help, the value of one CarrierPolls).
POLL_FAMILIES = (
    ("counter", "trackctl_poll_requests", "Carrier tracking requests made", lambda c: c.requests),
    ("gauge", "trackctl_poll_requests_last_hour", "Carrier requests of the last hour's poll runs",
     lambda c: c.recent_requests),
    ("gauge", "trackctl_poll_failures_last_hour", "Failed or rate-limited requests of the last hour's poll runs",
     lambda c: c.recent_failures),
    ("gauge", "trackctl_poll_rate_limited_last_hour", "Requests answered 429 in the last hour's poll runs",
     lambda c: c.recent_rate_limited),
    ("gauge", "trackctl_carrier_breaker_open", "1 while the carrier's circuit breaker is open",
     lambda c: int(c.breaker_open)),
    ("gauge", "trackctl_carrier_rate_limited", "1 while the carrier asked us to wait (429)", lambda c: int(c.blocked)),
)


def _timestamp(at) -> float | None:
    return None if at is None else at.timestamp()


# Per-job series of the jobs that ran: (name, help, the value of one dashboard JobLine, None for no sample).
JOB_FAMILIES = (
    ("trackctl_job_last_run_timestamp_seconds", "Start of the job's newest run", lambda j: j.started_at.timestamp()),
    ("trackctl_job_last_run_duration_seconds", "Duration of the job's newest run (so far, while running)",
     lambda j: j.seconds or 0.0),
    ("trackctl_job_last_success_timestamp_seconds", "End of the job's newest successful run",
     lambda j: _timestamp(j.last_ok_at)),
    ("trackctl_job_last_worked_timestamp_seconds",
     "End of the job's newest run that did its work (ok) or some of it (partial)", lambda j: _timestamp(j.last_worked_at)),
)


def _family(kind: str, name: str, doc: str, labels: list[str], samples: Iterable[tuple[Sequence, object]]):
    """Return a gauge or counter family with one sample per (label values, value); None values are left out."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=labels)
    for label_values, value in samples:
        if value is not None:
            family.add_metric(list(label_values), value)
    return family


class TrackctlCollector:
    """A prometheus_client collector over one MetricsData (or over none: trackctl_up 0)."""

    def __init__(self, data: MetricsData | None) -> None:
        self.data = data

    def collect(self) -> Iterator:
        yield _family("gauge", "trackctl_up", "1 when trackctl could read its database, else 0", [],
                      [((), 1 if self.data else 0)])
        if self.data is None:
            return
        d, polls = self.data.dashboard, self.data.polls
        yield _family("gauge", "trackctl_pool_target_codes", "Free codes refill keeps ready", ["pool"],
                      (((p.name,), p.target) for p in d.pools))
        yield _family("gauge", "trackctl_pool_codes", "Codes in a pool by state", ["pool", "kind", "state"],
                      (((p.name, p.kind, state), n) for p in d.pools for state, n in (("free", p.free),
                                                                                      ("assigned", p.assigned))))
        # Assigned codes stay assigned (cancelling a shipment keeps its code), so their count only
        # grows: a counter, whose rate is the assignment rate.
        yield _family("counter", "trackctl_assignments", "Codes assigned from a pool", ["pool"],
                      (((p.name,), p.assigned) for p in d.pools))
        yield _family("gauge", "trackctl_shipments", "Shipments by carrier and status", ["carrier", "status"],
                      (((s.carrier, s.status), s.count) for s in d.shipments))
        for kind, name, doc, value in POLL_FAMILIES:
            yield _family(kind, name, doc, ["carrier"], (((c.carrier,), value(c)) for c in polls))
        yield from self._carrier_calls()
        yield _family("gauge", "trackctl_polls_overdue", "Unfinished shipments past their poll time", [],
                      [((), d.overdue_polls)])
        yield _family("gauge", "trackctl_outbox_backlog", "Outbox events not yet delivered", [],
                      [((), d.outbox.pending)])
        yield _family("gauge", "trackctl_outbox_oldest_age_seconds", "Age of the oldest undelivered event", [],
                      [((), d.outbox.oldest_seconds or 0)])
        yield _family("gauge", "trackctl_outbox_lag_seconds", "How long the longest-waiting due delivery has been due",
                      [], [((), d.outbox.lag_seconds or 0)])
        yield _family("gauge", "trackctl_deliveries", "Webhook deliveries by outcome", ["outcome"],
                      (((outcome,), n) for outcome, n in sorted(self.data.deliveries.items())))
        yield _family("gauge", "trackctl_deliveries_dead", "Webhook deliveries parked as dead", [],
                      [((), d.dead_deliveries)])
        ran = [j for j in d.jobs if j.started_at is not None]
        families = [_family("gauge", name, doc, ["job"], (((j.job,), value(j)) for j in ran))
                    for name, doc, value in JOB_FAMILIES]
        # Every outcome, so that `...{outcome="failed"} == 1` and `{outcome="partial"}` alerts
        # see a 0 rather than no series while the job is fine.
        outcome = _family("gauge", "trackctl_job_last_run_outcome",
                          "1 for the outcome of the job's newest run, 0 for the other outcomes", ["job", "outcome"],
                          (((j.job, name), int(j.outcome == name)) for j in ran for name in RUN_OUTCOMES))
        yield from families[:3] + [outcome] + families[3:]

    def _carrier_calls(self) -> Iterator:
        """Every HTTP request made to a carrier (trackctl carrier stats), and the numbers asked about."""
        calls = self.data.carrier_calls
        per_carrier: dict[str, list[int]] = {}
        for carrier, _, _, asked, registered in calls:
            sums = per_carrier.setdefault(carrier, [0, 0])
            sums[0] += asked
            sums[1] += registered
        yield _family("counter", "trackctl_carrier_http_requests", "HTTP requests made to a carrier, by outcome",
                      ["carrier", "outcome"], (((carrier, outcome), n) for carrier, outcome, n, _, _ in calls))
        yield _family("counter", "trackctl_carrier_numbers", "Shipments asked about in tracking requests", ["carrier"],
                      (((carrier,), sums[0]) for carrier, sums in per_carrier.items()))
        yield _family("counter", "trackctl_carrier_registered",
                      "Numbers registered with the carrier's tracking service (17TRACK quota)", ["carrier"],
                      (((carrier,), sums[1]) for carrier, sums in per_carrier.items()))


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
