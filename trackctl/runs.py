"""Run records: every cron-able command records when it ran, where, what it did and how it ended.

A run is inserted with outcome `running` when the job starts and updated once when it ends
(`ok`, `failed` with its error, or `skipped` when another host held the job's lock).

Died runs. A process killed with SIGKILL, an out-of-memory kill or a host that vanished never
writes its end. The rule that tells such a run from a live one: the run row carries the
PostgreSQL session it was recorded from (`pg_backend_pid()` and that session's `backend_start`).
PostgreSQL ends a session when its client goes away (at once on a Unix socket or a closed TCP
connection; after the TCP keepalive timeout when a host drops off the network), so a `running`
row whose session is no longer in `pg_stat_activity` belongs to a process that died. Readers
(`trackctl runs`, the dashboard, metrics) show it as `died` straight away, and every new run
stores that conclusion (outcome `died`, finished_at left empty because nobody saw the end).
This needs the process's own server session: behind PgBouncer in transaction mode a killed run
stays `running`, and only health's "running long past its limit" check notices it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg.types.json import Jsonb

from . import logs, telemetry
from .errors import InvalidValue, TrackctlError
from .names import check_limit

OUTCOMES = ("running", "ok", "failed", "skipped", "died")
JOB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")  # as the run_job_format constraint
MAX_ERROR = 500

# A running row is alive while the session that wrote it is; if pg_stat_activity hides another
# role's backend_start (no pg_read_all_stats), the backend pid alone decides.
SESSION_ALIVE = """
EXISTS (SELECT 1 FROM pg_stat_activity a
        WHERE a.pid = r.backend_pid AND (a.backend_start IS NULL OR r.backend_start IS NULL
                                         OR a.backend_start = r.backend_start))
"""
SHOWN_OUTCOME = f"CASE WHEN r.outcome = 'running' AND NOT {SESSION_ALIVE} THEN 'died' ELSE r.outcome END"
RUN_COLUMNS = f"""
r.id, r.job, r.host, r.pid, r.started_at, r.finished_at, {SHOWN_OUTCOME}, r.counts, r.error,
extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8
"""
START_RUN = """
INSERT INTO sequencing.run (id, job, host, pid, backend_pid, backend_start)
SELECT %s, %s, %s, %s, pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
RETURNING started_at
"""
FINISH_RUN = """
UPDATE sequencing.run SET outcome = %s, finished_at = now(), counts = %s, error = %s
WHERE id = %s AND outcome = 'running'
RETURNING finished_at
"""
MARK_DIED = f"""
UPDATE sequencing.run r SET outcome = 'died', error = 'the process ended without recording the end of its run'
WHERE r.outcome = 'running' AND NOT {SESSION_ALIVE}
"""
LIST_RUNS = f"""
SELECT {RUN_COLUMNS} FROM sequencing.run r
WHERE (%(job)s::text IS NULL OR r.job = %(job)s)
ORDER BY r.started_at DESC, r.id
LIMIT %(limit)s
"""
# The newest run of every job and its newest successful one. The job names come from a skip scan
# of the run_job_started index (one probe per job), so the cost does not grow with the history.
LAST_RUNS = f"""
WITH RECURSIVE jobs(job) AS (
    (SELECT job FROM sequencing.run ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT r.job FROM sequencing.run r WHERE r.job > jobs.job ORDER BY r.job LIMIT 1)
    FROM jobs WHERE jobs.job IS NOT NULL
)
SELECT j.job, last.*, ok.finished_at, ok.seconds
FROM jobs j
CROSS JOIN LATERAL (
    SELECT {RUN_COLUMNS} FROM sequencing.run r WHERE r.job = j.job ORDER BY r.started_at DESC LIMIT 1
) last
LEFT JOIN LATERAL (
    SELECT r.finished_at, extract(epoch FROM r.finished_at - r.started_at)::float8 AS seconds
    FROM sequencing.run r WHERE r.job = j.job AND r.outcome = 'ok' ORDER BY r.finished_at DESC LIMIT 1
) ok ON true
WHERE j.job IS NOT NULL
ORDER BY j.job
"""
PRUNE_RUNS = "DELETE FROM sequencing.run WHERE started_at < now() - %s AND outcome <> 'running'"


@dataclass(frozen=True)
class Run:
    id: str
    job: str
    host: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str  # running | ok | failed | skipped | died
    counts: dict
    error: str | None
    seconds: float  # so far, while running

    @classmethod
    def from_row(cls, row: tuple) -> "Run":
        return cls(str(row[0]), *row[1:7], dict(row[7] or {}), row[8], round(float(row[9]), 3))


@dataclass(frozen=True)
class JobState:
    """The newest run of one job and its newest successful run."""
    job: str
    last: Run
    last_ok_at: datetime | None
    last_ok_seconds: float | None


@dataclass
class RunRecorder:
    """The handle a job gets while its run is recorded: add counts, or mark the run skipped."""
    id: str
    job: str
    host: str
    pid: int
    started_at: datetime
    counts: dict[str, Any] = field(default_factory=dict)
    skipped_reason: str | None = None
    started_clock: float = field(default_factory=time.monotonic)

    def count(self, **counts: Any) -> None:
        """Set (replace) named counts of this run, e.g. run.count(generated=200)."""
        self.counts.update(counts)

    def add(self, **counts: int) -> None:
        """Add to named counts of this run."""
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value

    def skip(self, reason: str) -> None:
        """End this run as `skipped` (another host holds the job's lock): exit 0, nothing done."""
        self.skipped_reason = reason

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_clock


def check_job_name(job: str) -> str:
    if not JOB_NAME.fullmatch(job):
        raise InvalidValue(f"invalid job name {job[:40]!r}", hint="job names are like refill, poll, outbox-prune")
    return job


def host_name() -> str:
    """Return this host's name as runs record it ($TRACKCTL_HOST_NAME wins, for containers)."""
    return os.environ.get("TRACKCTL_HOST_NAME") or socket.gethostname()


def describe_error(exc: BaseException) -> str:
    """Return one line describing why a run failed, short enough for the runs table."""
    if isinstance(exc, TrackctlError):
        text = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return logs.redact(text)[:MAX_ERROR]


def start_run(conn: psycopg.Connection, job: str) -> RunRecorder:
    """Insert a `running` row for `job` (after storing the end of runs that died); return its handle."""
    check_job_name(job)
    conn.execute(MARK_DIED)
    recorder = RunRecorder(id=str(uuid.uuid4()), job=job, host=host_name(), pid=os.getpid(),
                           started_at=datetime.now().astimezone())
    row = conn.execute(START_RUN, (recorder.id, job, recorder.host, recorder.pid)).fetchone()
    recorder.started_at = row[0]
    return recorder


def finish_run(conn: psycopg.Connection, recorder: RunRecorder, outcome: str, error: str | None = None) -> None:
    """Store how a run ended, with its counts."""
    if outcome not in ("ok", "failed", "skipped"):
        raise ValueError(f"a run ends ok, failed or skipped, not {outcome!r}")
    conn.execute(FINISH_RUN, (outcome, Jsonb(recorder.counts), error, recorder.id))


@contextlib.contextmanager
def recorded_run(conn: psycopg.Connection, job: str) -> Iterator[RunRecorder]:
    """Record the run of `job` around the block: `running` now, then ok, skipped or failed.

    The block's exception is recorded (as the run's error) and raised again. Log lines written
    during the block carry the run id and job.
    """
    recorder = start_run(conn, job)
    telemetry.record_run(recorder.id, job)
    log = logs.get_logger("runs")
    with logs.bound(run_id=recorder.id, job=job):
        log.debug("run started on %s pid %s", recorder.host, recorder.pid)
        try:
            yield recorder
        except BaseException as exc:
            error = describe_error(exc)
            telemetry.record_outcome("failed")
            _finish_quietly(conn, recorder, "failed", error)
            # The error itself is a field (JSON logs). In text the CLI's error line that follows is
            # the one line a failure gets (issue 7); the run record keeps the time and the error.
            if logs.configured_format() == "json":
                log.error("failed after %.2f s", recorder.elapsed,
                          extra={"counts": recorder.counts, "outcome": "failed",
                                 "seconds": round(recorder.elapsed, 3), "error": error})
            raise
        outcome = "skipped" if recorder.skipped_reason is not None else "ok"
        telemetry.record_outcome(outcome)
        finish_run(conn, recorder, outcome, recorder.skipped_reason)
        detail = f": {recorder.skipped_reason}" if recorder.skipped_reason else ""
        log.info("%s in %.2f s%s", outcome, recorder.elapsed, detail,
                 extra={"counts": recorder.counts, "outcome": outcome, "seconds": round(recorder.elapsed, 3)})


def _finish_quietly(conn: psycopg.Connection, recorder: RunRecorder, outcome: str, error: str) -> None:
    # The job's connection may be unusable (a statement interrupted by a signal, a lost server):
    # then record the end over a new connection to the same database. If that fails too, the
    # run's session is gone and readers show it as died, which is what the database can tell.
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        finish_run(conn, recorder, outcome, error)
        return
    from .db import open_connection

    with contextlib.suppress(psycopg.Error, TrackctlError):
        conninfo = psycopg.conninfo.make_conninfo(conn.info.dsn, password=conn.info.password)
        with open_connection(conninfo, wait_when_full=0) as other:
            finish_run(other, recorder, outcome, error)


def list_runs(conn: psycopg.Connection, job: str | None = None, limit: int | None = 20) -> list[Run]:
    """Return runs newest first (of one job, or of all), with died runs shown as `died`."""
    if job is not None:
        check_job_name(job)
    check_limit(limit)
    rows = conn.execute(LIST_RUNS, {"job": job, "limit": limit}).fetchall()
    return [Run.from_row(r) for r in rows]


def last_runs(conn: psycopg.Connection) -> dict[str, JobState]:
    """Return, per job that ever ran, its newest run and when it last succeeded."""
    states = {}
    for row in conn.execute(LAST_RUNS).fetchall():
        states[row[0]] = JobState(row[0], Run.from_row(row[1:11]), row[11],
                                  None if row[12] is None else round(float(row[12]), 3))
    return states


def prune_runs(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete finished runs that started before `older_than` ago; return how many."""
    if older_than <= timedelta(0):
        raise InvalidValue("the age must be positive", hint="e.g. --older-than 90d")
    return conn.execute(PRUNE_RUNS, (older_than,)).rowcount


def counts_text(counts: Mapping[str, Any]) -> str:
    """Return counts as `key=value` pairs for plain output and text logs."""
    return logs.counts_text(dict(counts))
