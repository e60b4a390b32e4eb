"""Health checks: each returns the problems it found, each problem one line for a person."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from . import db, queries
from .errors import TrackctlError
from .pools import pool_levels

LOW_POOL_FRACTION = 0.25


@dataclass(frozen=True)
class Problem:
    check: str
    message: str


def check_schema(conn: psycopg.Connection) -> list[Problem]:
    try:
        db.ensure_schema(conn)
    except TrackctlError as exc:
        return [Problem("schema", str(exc))]
    return []


def check_pools(conn: psycopg.Connection) -> list[Problem]:
    from .pools import s10_usage

    # An S10 pool whose serials are all generated cannot be refilled: only a new range helps.
    spent = {u.pool: u for u in s10_usage(conn) if u.next > u.last}
    problems = []
    for level in pool_levels(conn):
        if level.target > 0 and level.free < level.target * LOW_POOL_FRACTION:
            low = f"pool {level.name!r} has {level.free} free codes, below a quarter of its target {level.target}"
            if level.name in spent:
                problems.append(Problem("pool", f"{low}, and its S10 range is used up, so refill cannot help: "
                                                + new_range_advice(spent[level.name])))
            else:
                problems.append(Problem("pool", f"{low}: run 'trackctl refill' (is the refill cron job running?)"))
    return problems


def new_range_advice(u) -> str:
    """What to do about an S10 range running out: a new pool with a new range, and the carriers moved to it."""
    carriers = [c for c in u.carriers.split(", ") if c]
    move = (f"'trackctl carrier set {carriers[0]} --pool NEW'" if len(carriers) == 1 else
            f"'trackctl carrier set CARRIER --pool NEW' for each of {u.carriers}" if carriers else
            "'trackctl carrier set CARRIER --pool NEW'")
    return (f"ask the carrier for a new range, create a pool with it ('trackctl pool create NEW --kind s10 "
            f"--prefix {u.prefix} --country {u.country} --range FIRST-LAST') and point the carrier at it ({move})")


# A job is late when its last successful run is older than this many intervals (plus its time
# limit); a job that never ran counts from when run records were installed (migration 4).
LATE_INTERVALS = 3
OVERDUE_POLLS_MAX = 0  # shipments past their poll time by more than the slack of dashboard.overdue_polls
OUTBOX_LAG_MAX = 15 * 60  # seconds a due delivery may wait for `trackctl notify`
OUTBOX_AGE_MAX = 60 * 60  # seconds an event may stay undelivered (retries included)
SQL = queries.load("health")


def check_jobs(conn: psycopg.Connection) -> list[Problem]:
    """Every scheduled job did its work within LATE_INTERVALS of its interval; none is stuck.

    A `partial` run counts as work done: its failures (carrier requests, an S10 range) are the
    subject of their own checks (breakers, overdue polls, s10). A job whose runs keep failing, or
    keep being interrupted, is late, and the problem quotes its last run's outcome and error.
    """
    from . import cron
    from .dashboard import job_lines

    row = conn.execute(SQL.now_and_runs_installed).fetchone()
    now, installed = row[0], row[1] or row[0]
    problems = []
    for line in job_lines(conn):
        j = cron.job(line.job)
        if j is None:
            continue
        allowed = LATE_INTERVALS * j.interval + j.limit
        since = line.last_worked_at or installed
        age = (now - since).total_seconds()
        if age > allowed:
            what = (f"last succeeded {_ago(age)} ago" if line.last_worked_at else f"has not succeeded since {_ago(age)} ago")
            last = "" if line.outcome in ("never", "ok") else f"; its last run {line.outcome}" + (
                f": {line.error}" if line.error else "")
            problems.append(Problem("job", f"job {j.name} {what} (runs every {_ago(j.interval)}){last}: "
                                           f"is its cron line installed ('trackctl cron install')? see 'trackctl runs --job {j.name}'"))
        if line.outcome == "running" and line.seconds is not None and line.seconds > j.limit + 60:
            problems.append(Problem("job", f"job {j.name} has been running for {_ago(line.seconds)}, past its "
                                           f"limit of {j.limit} s"))
    return problems


def check_overdue_polls(conn: psycopg.Connection) -> list[Problem]:
    from .dashboard import overdue_polls

    n = overdue_polls(conn)
    if n > OVERDUE_POLLS_MAX:
        return [Problem("polls", f"{n} shipments are overdue for polling: is 'trackctl poll' running, "
                                 "or are their carriers' circuit breakers open?")]
    return []


def check_outbox(conn: psycopg.Connection) -> list[Problem]:
    from .dashboard import outbox_backlog

    backlog = outbox_backlog(conn)
    if backlog.lag_seconds is not None and backlog.lag_seconds > OUTBOX_LAG_MAX:
        return [Problem("outbox", f"{backlog.pending} webhook deliveries pending, one due for "
                                  f"{_ago(backlog.lag_seconds)}: is 'trackctl notify' running?")]
    if backlog.oldest_seconds is not None and backlog.oldest_seconds > OUTBOX_AGE_MAX:
        return [Problem("outbox", f"{backlog.pending} webhook deliveries pending, the oldest event for "
                                  f"{_ago(backlog.oldest_seconds)}: a subscriber keeps failing "
                                  "(see 'trackctl webhook list')")]
    return []


def check_dead_deliveries(conn: psycopg.Connection) -> list[Problem]:
    from .dashboard import dead_deliveries

    n = dead_deliveries(conn)
    if n:
        return [Problem("deliveries", f"{n} webhook deliveries are dead (retries exhausted): "
                                      "fix the subscriber, then replay them")]
    return []


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def check_stale(conn: psycopg.Connection) -> list[Problem]:
    """Open shipments flagged stale (no news for too long) need a person: mark, cancel or chase them."""
    rows = conn.execute(SQL.stale_shipments).fetchall()
    if not rows:
        return []
    total = sum(n for _, n in rows)
    per = ", ".join(f"{name}: {n}" for name, n in rows)
    return [Problem("stale", f"{total} open shipments are stale, with no news for too long and no longer polled "
                             f"({per}): check them with the carrier, then 'trackctl mark CODE STATUS' or "
                             "'trackctl cancel CODE'")]


def check_s10(conn: psycopg.Connection) -> list[Problem]:
    """S10 pools with at most 10% of their serial range left (codes free or not generated yet)."""
    from .pools import S10_WARN_FRACTION, s10_usage

    problems = []
    for u in s10_usage(conn):
        if u.left <= u.size * S10_WARN_FRACTION:
            state = "has used up" if u.left == 0 else f"has {u.left} of {u.size} codes left in"
            problems.append(Problem(
                "s10", f"S10 pool {u.pool!r} {state} its range {u.prefix}{u.first:08d}-{u.last:08d}{u.country}: "
                       + new_range_advice(u)))
    return problems


def check_breakers(conn: psycopg.Connection) -> list[Problem]:
    """Carriers whose circuit breaker is open or half-open: their shipments are not being polled."""
    from .carriers import carrier_states

    problems = []
    for s in carrier_states(conn):
        if s.breaker != "closed":
            when = f" until {s.open_until:%Y-%m-%d %H:%M:%S %Z}" if s.breaker == "open" else ""
            problems.append(Problem(
                "breaker", f"carrier {s.carrier}: circuit breaker {s.breaker}{when} after "
                           f"{s.consecutive_failures} failed requests: see 'trackctl carrier show {s.carrier}' "
                           "('trackctl carrier reset' closes it)"))
    return problems


def check_carrier_failures(conn: psycopg.Connection) -> list[Problem]:
    """Carriers whose requests of the last hour failed too often (trackctl/carrier_stats.py)."""
    from .carrier_stats import FAILURE_RATIO, failing_carriers

    return [Problem("carrier_failures",
                    f"carrier {name}: {failed} of {requests} requests in the last hour failed or were rate limited "
                    f"(warning from {FAILURE_RATIO:.0%}): see 'trackctl carrier stats --since 1h' and "
                    f"'trackctl carrier show {name}'")
            for name, requests, failed in failing_carriers(conn)]


# Checks after the schema check, in order; each returns its problems. They run only on a current
# schema (health_report checks it first), so every table they read is there.
CHECKS = [
    ("pools", check_pools),
    ("jobs", check_jobs),
    ("overdue_polls", check_overdue_polls),
    ("outbox", check_outbox),
    ("dead_deliveries", check_dead_deliveries),
    ("stale", check_stale),
    ("s10", check_s10),
    ("breakers", check_breakers),
    ("carrier_failures", check_carrier_failures),
]


@dataclass(frozen=True)
class HealthReport:
    problems: list[Problem]
    skipped: list[Problem]  # checks that could not run (all of them when the schema is not current), with the reason

    @property
    def healthy(self) -> bool:
        return not self.problems


def health_report(conn: psycopg.Connection) -> HealthReport:
    """Return every problem found in a reachable database, and the checks that could not run."""
    problems = check_schema(conn)
    if problems:
        return HealthReport(problems, [Problem(name, "schema not current") for name, _ in CHECKS])
    for _, check in CHECKS:
        problems += check(conn)
    return HealthReport(problems, [])


def run_checks(conn: psycopg.Connection) -> list[Problem]:
    """Return every problem found in a reachable database; an empty list means healthy."""
    return health_report(conn).problems
