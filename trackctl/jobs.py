"""The cron jobs as library functions: each records its run and returns what happened.

    result = jobs.poll(conn, budget=30)
    result.outcome      # ok | partial | failed | skipped
    result.counts       # as stored in the run record
    result.exit_code    # 0, or the problem's code (6 for failed carrier requests, 130 for SIGINT ...)
    result.summary      # the run's last log line: "poll: partial in 2.10 s (polled=4 ok=2 failed=2 ...)"
    result.data         # the domain function's report (PollReport, refill results, ...)
    result.problem      # the error the caller reports after showing `data` (None for ok and skipped)

The CLI (trackctl/cli/*), `demo` and the benchmarks call these functions and nothing else to run
a job, so the run record, the summary, the error line and the exit code come from one place and
cannot disagree. The outcome rule itself is `runs.RunRecorder.conclusion`: a job notes the work it
did (`run.did`) and a failure it reports without raising (`run.fail`); an exception or a stop ends
the run too. Jobs whose failures are someone else's to fix stay `ok` and say so in their counts:
a webhook endpoint that fails an attempt is retried on its schedule (notify's `failed`, `dead`).

`stop` is the flag the job's loops check (default: `interrupts.STOP`, which the CLI's signal
handlers set). A stopped job gives back what it holds and returns what it did; its run is then
`partial` (some work done) or `failed` (none) with the error "interrupted by SIGINT" (or
"terminated by SIGTERM"), and `problem` is the `Interrupted` that exits 130 (or 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

import psycopg

from . import interrupts
from .errors import Interrupted, PartialFailure, PoolExhausted
from .runs import RunRecorder, counts_text, recorded_run, summary_text

T = TypeVar("T")


@dataclass(frozen=True)
class JobResult(Generic[T]):
    """How one recorded run of a job ended, and what it produced."""
    job: str
    run_id: str
    outcome: str  # ok | partial | failed | skipped
    counts: dict
    seconds: float
    error: str | None  # as stored in the run record
    exit_code: int
    summary: str
    data: T
    problem: BaseException | None = field(default=None, compare=False)

    def raise_problem(self) -> None:
        """Raise the run's problem (after its data was shown): the error line and the exit code."""
        if self.problem is not None:
            raise self.problem


def _stop_flag(stop: Any) -> Any:
    return interrupts.STOP if stop is None else stop


@contextlib.contextmanager
def _cooperative(stop: Any) -> Iterator[None]:
    """While the job's loop checks `stop`, a first signal only sets it (see interrupts.py)."""
    if stop is interrupts.STOP and threading.current_thread() is threading.main_thread():
        with interrupts.cooperative():
            yield
    else:
        yield


def _result(run: RunRecorder, data: T) -> JobResult[T]:
    problem: BaseException | None = None
    if run.outcome in ("partial", "failed"):
        if run.interrupted:
            signum = getattr(run.stop, "signum", None) or signal.SIGINT
            problem = Interrupted(signum, f"{run.job} {run.error}",
                                  hint=f"its run is recorded as {run.outcome} with what it did; "
                                       "the next run takes up the rest")
        else:
            problem = run.problem
    exit_code = 0 if problem is None else int(getattr(problem, "exit_code", 1))
    seconds = run.seconds if run.seconds is not None else round(run.elapsed, 3)
    detail = run.error if run.outcome == "skipped" or run.interrupted else None
    summary = f"{run.job}: {summary_text(run.outcome, seconds, detail)}"
    if run.counts:
        summary += f" ({counts_text(run.counts)})"
    return JobResult(run.job, run.id, run.outcome, dict(run.counts), seconds, run.error, exit_code, summary, data,
                     problem)


# --- the jobs ------------------------------------------------------------------------------------

def refill(conn: psycopg.Connection, pool: str | None = None, *, progress: Callable[..., None] | None = None,
           stop: Any = None):
    """Top every pool (or `pool`) up to its target, recorded as job `refill`; data: the RefillResults.

    Each pool is its own transaction and adds to the run's counts as it ends, so a run cut short
    keeps the pools it finished. An S10 pool whose range is used up fails the run (partial when
    other pools were topped up); pools another host is filling are skipped.
    """
    from .pools import refill_pool, refill_targets

    stop = _stop_flag(stop)
    results = []
    with recorded_run(conn, "refill", stop=stop) as run:
        run.count(pools=0, generated=0, skipped=0)
        for target in refill_targets(conn, pool):
            if stop.is_set():
                break
            r = refill_pool(conn, target, progress)
            results.append(r)
            run.add(pools=1, generated=r.generated, skipped=int(r.skipped))
            if r.exhausted:
                run.add(exhausted=1)
            if (not r.skipped and not r.exhausted) or r.generated:
                run.did(1)
        exhausted = [r.pool for r in results if r.exhausted]
        if exhausted:
            run.fail(PoolExhausted(f"S10 serial range used up before reaching the target: {', '.join(exhausted)}",
                                   hint="ask the carrier for a new range, create a pool with it and point the "
                                        "carrier at it ('trackctl carrier set CARRIER --pool NAME')"))
        elif results and all(r.skipped for r in results):
            run.skip("another refill held the lock of every pool")
    return _result(run, results)


def poll(conn: psycopg.Connection, *, carrier: str | None = None, budget: float | None = None,
         all_due: bool = False, environ: Mapping[str, str] | None = None,
         progress: Callable[..., None] | None = None, stop: Any = None):
    """Poll due shipments (see poll.poll), recorded as job `poll`; data: the PollReport.

    Failed or rate-limited requests and carriers that could not be polled make the run partial
    (some requests answered) or failed (none), with exit code 6.
    """
    from .poll import DEFAULT_BUDGET
    from .poll import poll as poll_carriers

    stop = _stop_flag(stop)
    with recorded_run(conn, "poll", stop=stop) as run:
        with _cooperative(stop):
            report = poll_carriers(conn, carrier=carrier, budget=DEFAULT_BUDGET if budget is None else budget,
                                   all_due=all_due, environ=environ, progress=progress, stop=stop)
        answered = sum(c.ok for c in report.carriers)
        run.count(carriers=len(report.carriers), polled=report.polled, ok=answered,
                  failed=sum(c.failed for c in report.carriers),
                  rate_limited=sum(c.rate_limited for c in report.carriers),
                  new_events=sum(c.new_events for c in report.carriers),
                  changed=sum(c.changed for c in report.carriers), stale=sum(c.stale for c in report.carriers))
        if report.released:
            run.count(released=report.released)
        # per carrier, for `trackctl metrics` (trackctl_poll_failures_recent)
        run.count(by_carrier={c.carrier: {"polled": c.polled, "failed": c.failed + c.rate_limited,
                                          "rate_limited": c.rate_limited}
                              for c in report.carriers})
        run.did(answered)
        if report.failed:
            what = ([f"{report.failed_requests} of {report.polled} carrier requests failed"]
                    if report.failed_requests else [])
            if report.unavailable:
                what.append(f"{report.unavailable} carrier{'s' if report.unavailable > 1 else ''} could not be polled")
            run.fail(PartialFailure(" and ".join(what) + " (see above); everything else was recorded",
                                    hint="failed shipments back off and are retried by later runs; "
                                         "see 'trackctl carrier show NAME'"))
    return _result(run, report)


def notify(conn: psycopg.Connection, *, budget: float | None = None, follow: bool = False,
           concurrency: int | None = None, timeout: float | None = None,
           on_outcome: Callable[..., None] | None = None, only_subscribers: Collection[int] | None = None,
           stop: Any = None):
    """Deliver due webhook deliveries (see notify.deliver), recorded as job `notify`; data: the NotifyReport.

    A failed attempt is the endpoint's failure, handled by its retry schedule: the run stays `ok`
    and counts it (`failed`, `dead`). The run fails only when notify itself cannot work.
    """
    from .notify import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, deliver

    stop = _stop_flag(stop)
    with recorded_run(conn, "notify", stop=stop) as run:
        with _cooperative(stop):
            report = deliver(conn, budget=budget, follow=follow,
                             concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency,
                             timeout=DEFAULT_TIMEOUT if timeout is None else timeout, stop=stop,
                             on_outcome=on_outcome, only_subscribers=only_subscribers)
        run.count(delivered=report.delivered, failed=report.failed, dead=report.dead, disabled=report.disabled)
        run.did(report.delivered + report.failed + report.dead)
    return _result(run, report)


def sweep_stale(conn: psycopg.Connection, *, stop: Any = None):
    """Flag shipments with no news for too long (see shipments.sweep_stale), recorded as job `sweep-stale`."""
    from .shipments import sweep_stale as sweep

    stop = _stop_flag(stop)
    with recorded_run(conn, "sweep-stale", stop=stop) as run:
        with _cooperative(stop):
            changes = sweep(conn, stop=stop)
        run.count(flagged=len(changes))
        run.did(len(changes))
    return _result(run, changes)


def outbox_prune(conn: psycopg.Connection, older_than: timedelta, *, include_dead: bool = False,
                 stop: Any = None):
    """Delete old events everyone is done with (see outbox.prune), recorded as job `outbox-prune`; data: how many."""
    from .outbox import prune

    with recorded_run(conn, "outbox-prune", stop=_stop_flag(stop)) as run:
        removed = prune(conn, older_than, include_dead=include_dead)
        run.count(removed=removed)
        run.did(1)
    return _result(run, removed)


def runs_prune(conn: psycopg.Connection, older_than: timedelta, *, stop: Any = None):
    """Delete finished runs older than `older_than`, recorded as job `runs-prune`; data: how many."""
    from .runs import prune_runs

    with recorded_run(conn, "runs-prune", stop=_stop_flag(stop)) as run:
        deleted = prune_runs(conn, older_than)
        run.count(deleted=deleted)
        run.did(1)
    return _result(run, deleted)
