"""Run records: every cron-able command records when it ran, where, what it did and how it ended.

A run is inserted with outcome `running` when the job starts and updated once when it ends. How
it ended follows one rule (`RunRecorder.conclusion`), so a run's outcome, its counts, the summary
line on stderr and the exit code always agree:

- `ok`: the job did all it set out to do (nothing to do included);
- `partial`: it did some of its work and some failed, or a signal stopped it midway;
- `failed`: it did none of its work because of an error (or a signal before any was done);
- `skipped`: another host held the job's lock, so this one had nothing to do.

"Work" is what the job counts as done (`RunRecorder.did`): codes generated, requests answered,
deliveries made, shipments flagged. A failure the job reports without raising
(`RunRecorder.fail`: some carrier requests failed, an S10 range ran out) and an exception both
end the run `partial` or `failed` by that count.

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
import logging
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

from . import logs, queries, telemetry
from .errors import Interrupted, InvalidValue, TrackctlError, param, signal_reason
from .interrupts import deferred
from .names import check_limit

OUTCOMES = ("running", "ok", "partial", "failed", "skipped", "died")
JOB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")  # as the run_job_format constraint
MAX_ERROR = 500

SQL = queries.load("runs")


@dataclass(frozen=True)
class Run:
    id: str  # a UUID
    job: str  # refill, poll, notify, ... (the schedule's names, cron.JOBS)
    host: str  # the host name of the process that ran it
    pid: int  # its process id there (how a died run is recognised)
    started_at: datetime
    finished_at: datetime | None  # None while running
    outcome: str  # running | ok | partial | failed | skipped | died
    counts: dict
    error: str | None
    seconds: float  # so far, while running

    @classmethod
    def from_row(cls, row: tuple) -> "Run":
        return cls(str(row[0]), *row[1:7], dict(row[7] or {}), row[8], round(float(row[9]), 3))


@dataclass(frozen=True)
class JobState:
    """The newest run of one job, its newest `ok` run, and its newest run that did any work."""
    job: str
    last: Run
    last_ok_at: datetime | None
    last_ok_seconds: float | None
    last_worked_at: datetime | None = None  # newest `ok` or `partial` run


@dataclass
class RunRecorder:
    """The handle a job gets while its run is recorded: counts, work done, failures, a skip."""
    id: str
    job: str
    host: str
    pid: int
    started_at: datetime
    counts: dict[str, Any] = field(default_factory=dict)
    skipped_reason: str | None = None
    started_clock: float = field(default_factory=time.monotonic)
    worked: int = 0  # units of work done (codes, answers, deliveries): partial rather than failed
    problem: BaseException | None = None  # the failure to report after the run (see `fail`)
    stop: Any = None  # a stop flag (is_set(), signum): set at the end means the run was interrupted
    outcome: str = "running"  # how it ended, once it has
    error: str | None = None
    seconds: float | None = None  # how long it took, once it has ended

    def count(self, **counts: Any) -> None:
        """Set (replace) named counts of this run, e.g. run.count(generated=200)."""
        self.counts.update(counts)

    def add(self, **counts: int) -> None:
        """Add to named counts of this run."""
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value

    def did(self, units: int = 1) -> None:
        """Note that `units` of the job's work succeeded (a failure then makes the run partial)."""
        self.worked += max(0, units)

    def fail(self, problem: BaseException) -> None:
        """End this run partial (some work done) or failed (none), with `problem` as its error.

        The job goes on to return normally; its caller reports `problem` (error line, exit code).
        """
        if self.problem is None:
            self.problem = problem

    def skip(self, reason: str) -> None:
        """End this run as `skipped` (another host holds the job's lock): exit 0, nothing done."""
        self.skipped_reason = reason

    @property
    def interrupted(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def conclusion(self, exc: BaseException | None = None) -> tuple[str, str | None]:
        """Return (outcome, error) for the run as it stands, or as `exc` ended it."""
        cut_short = "partial" if self.worked else "failed"
        if exc is not None:
            return cut_short, describe_error(exc)
        if self.interrupted:
            return cut_short, stop_reason(self.stop)
        if self.problem is not None:
            return cut_short, describe_error(self.problem)
        if self.skipped_reason is not None:
            return "skipped", self.skipped_reason
        return "ok", None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_clock


def stop_reason(stop: Any) -> str:
    """Return how a stop flag's stop reads: 'interrupted by SIGINT', or 'stopped' without a signal."""
    signum = getattr(stop, "signum", None)
    return signal_reason(signum) if signum is not None else "stopped"


def check_job_name(job: str) -> str:
    if not JOB_NAME.fullmatch(job):
        raise InvalidValue(f"invalid job name {job[:40]!r}", hint="job names are like refill, poll, outbox-prune")
    return job


def host_name() -> str:
    """Return this host's name as runs record it ($TRACKCTL_HOST_NAME wins, for containers)."""
    return os.environ.get("TRACKCTL_HOST_NAME") or socket.gethostname()


def describe_error(exc: BaseException) -> str:
    """Return one line describing why a run failed, short enough for the runs table."""
    if isinstance(exc, (TrackctlError, Interrupted)):
        text = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted by SIGINT"
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return logs.redact(text)[:MAX_ERROR]


def start_run(conn: psycopg.Connection, job: str) -> RunRecorder:
    """Insert a `running` row for `job` (after storing the end of runs that died); return its handle."""
    check_job_name(job)
    conn.execute(SQL.mark_died)
    recorder = RunRecorder(id=str(uuid.uuid4()), job=job, host=host_name(), pid=os.getpid(),
                           started_at=datetime.now().astimezone())
    row = conn.execute(SQL.start_run, (recorder.id, job, recorder.host, recorder.pid)).fetchone()
    recorder.started_at = row[0]
    return recorder


def finish_run(conn: psycopg.Connection, recorder: RunRecorder, outcome: str, error: str | None = None) -> None:
    """Store how a run ended, with its counts."""
    if outcome not in ("ok", "partial", "failed", "skipped"):
        raise ValueError(f"a run ends ok, partial, failed or skipped, not {outcome!r}")
    recorder.outcome, recorder.error = outcome, error
    conn.execute(SQL.finish_run, (outcome, Jsonb(recorder.counts), error, recorder.id))


@contextlib.contextmanager
def recorded_run(conn: psycopg.Connection, job: str, *, stop: Any = None) -> Iterator[RunRecorder]:
    """Record the run of `job` around the block: `running` now, then how it ended (see the module).

    The block's exception is recorded (as the run's error) and raised again. Log lines written
    during the block carry the run id and job; the last one is the run's summary. `stop` is the
    flag the job's loops check: set by the end of the block, the run was interrupted.
    """
    recorder = start_run(conn, job)
    recorder.stop = stop
    telemetry.record_run(recorder.id, job)
    log = logs.get_logger("runs")
    with logs.bound(run_id=recorder.id, job=job):
        log.debug("run started on %s pid %s", recorder.host, recorder.pid)
        try:
            yield recorder
        except BaseException as exc:
            outcome, error = recorder.conclusion(exc)
            recorder.outcome, recorder.error = outcome, error
            telemetry.record_outcome(outcome)
            with deferred():  # a second Ctrl-C must not lose the record of the first
                _finish_quietly(conn, recorder, outcome, error)
            # The error itself is a field (JSON logs). In text the CLI's error line that follows is
            # the one line a failure gets (issue 7); the run record keeps the time and the error.
            if logs.configured_format() == "json":
                log.error("%s after %.2f s", outcome, recorder.elapsed,
                          extra={"counts": recorder.counts, "outcome": outcome,
                                 "seconds": round(recorder.elapsed, 3), "error": error})
            raise
        outcome, error = recorder.conclusion()
        recorder.seconds = round(recorder.elapsed, 3)
        telemetry.record_outcome(outcome)
        with deferred():
            try:
                finish_run(conn, recorder, outcome, error)
            except psycopg.Error:
                _finish_quietly(conn, recorder, outcome, error)  # the job's connection is unusable
                raise
        extra = {"counts": recorder.counts, "outcome": outcome, "seconds": recorder.seconds}
        if error is not None:
            extra["error"] = error
        log.log(logging.INFO if outcome in ("ok", "skipped") else logging.WARNING,
                "%s", summary_text(outcome, recorder.seconds, error if outcome == "skipped" or recorder.interrupted
                                   else None), extra=extra)


def summary_text(outcome: str, seconds: float, detail: str | None = None) -> str:
    """Return the summary of a run's end as its last log line reads: 'partial in 3.10 s: interrupted by SIGINT'."""
    return f"{outcome} in {seconds:.2f} s" + (f": {detail}" if detail else "")


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
    rows = conn.execute(SQL.list_runs, {"job": job, "limit": limit}).fetchall()
    return [Run.from_row(r) for r in rows]


def last_runs(conn: psycopg.Connection) -> dict[str, JobState]:
    """Return, per job that ever ran, its newest run and when it last succeeded."""
    states = {}
    for row in conn.execute(SQL.last_runs).fetchall():
        states[row[0]] = JobState(row[0], Run.from_row(row[1:11]), row[11],
                                  None if row[12] is None else round(float(row[12]), 3), row[13])
    return states


def prune_runs(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete finished runs that started before `older_than` ago; return how many."""
    if older_than <= timedelta(0):
        raise InvalidValue("the age must be positive", hint=f"e.g. {param('older_than')} 90d", field="older_than",
                           value=older_than)
    return conn.execute(SQL.prune_runs, (older_than,)).rowcount


def counts_text(counts: Mapping[str, Any]) -> str:
    """Return counts as `key=value` pairs for plain output and text logs."""
    return logs.counts_text(dict(counts))
