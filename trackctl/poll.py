"""Polling carriers: due selection, per-carrier caps across processes, backoff, 429 and breaker.

A run starts worker threads per carrier (twice its max_concurrency, at most 32), of which at
most max_concurrency make a request at a time. Each request is preceded by one call of
`sequencing.poll_acquire_batch`, which checks the carrier's 429 block and breaker, takes one of
the carrier's concurrency slots (shared by every process on every host) and claims up to the
adapter's `max_batch` due shipments with a lease, in one round trip; a carrier with a rate
limit then books the request's start in a database bucket shared by every process and host. As soon as the answer is in, one statement gives the slot back
and counts the answer for the breaker (or records the 429 block). The answer is then recorded in
one transaction: events and status through `shipments.apply_status_change`, and the shipment's
next due time. Nothing is held in the database between statements, so a killed poller leaves
only leases that run out by themselves.

Policy (defaults documented in docs/POLLING.md):
- due = never polled, or the interval of its current status has passed (with ±10% jitter);
  a shipment whose poll brought news is due again within the `moved` interval;
- a failed request (timeout, connection error, 5xx, invalid or oversized body) backs the
  shipment off exponentially with jitter: 60 s · 2^(n-1), capped at 1 h, times 0.5–1.0;
- HTTP 429 blocks the carrier for Retry-After (default 60 s) for every process;
- `breaker_threshold` consecutive failed requests open the carrier's breaker for
  `breaker_cooldown`; then one probe request at a time goes through (half-open): success
  closes the breaker, failure opens it again for another cool-down.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import psycopg

from . import __version__, queries, telemetry
from .carriers import CarrierSettings, carrier_settings, list_carrier_settings
from .carriers.base import AdapterConfig, Calls
from .errors import InvalidValue, NotPollable, TrackctlError, param
from .poll_policy import (BACKOFF_BASE, BACKOFF_CAP, DEFAULT_BUDGET, DEFAULT_INTERVALS, INTERVAL_JITTER,  # noqa: F401
                          LEASE_MARGIN, MAX_CONNECTIONS, MAX_WORKERS_PER_CARRIER, WORKERS_PER_SLOT, CarrierSummary,
                          PollFailure, PollReport, normalise_events, redact)

SQL = queries.load("poll")
CALLS_KEPT = timedelta(days=30)  # request records (carrier stats) older than this are pruned by poll


def overdue_shipments(conn: psycopg.Connection, slack: timedelta = timedelta(minutes=10)) -> int:
    """Return how many open shipments are past their poll time by more than `slack`."""
    return conn.execute(SQL.overdue, {"slack": slack}).fetchone()[0]


def _valid_token(token: str) -> bool:
    return all("!" <= ch <= "~" for ch in token)


def _secret(settings: CarrierSettings, environ: Mapping[str, str], var: str, what: str) -> str:
    from . import logs

    value = environ.get(var)
    if not value:
        raise TrackctlError(f"carrier {settings.name}: the {what} variable {var} is not set",
                            hint="set it in the environment or in ./.env")
    if not _valid_token(value):
        raise TrackctlError(f"carrier {settings.name}: the {what} in {var} contains spaces, "
                            "control or non-ASCII characters", hint="check the variable's value")
    logs.register_secret(value)
    return value


def build_carrier_adapter(settings: CarrierSettings, environ: Mapping[str, str], calls: Calls | None = None):
    """Return the adapter of a carrier with its token and credentials read from `environ` now."""
    from .carriers.registry import build_adapter

    token = _secret(settings, environ, settings.token_env, "token") if settings.token_env else None
    credentials = {k: _secret(settings, environ, v, "credential") for k, v in settings.credentials.items()}
    config = AdapterConfig(carrier=settings.name, url=settings.url, token=token, timeout=settings.timeout,
                           options=dict(settings.options), user_agent=f"trackctl/{__version__}",
                           credentials=credentials, calls=calls or Calls())
    return build_adapter(settings.adapter or "", config)


def poll(conn: psycopg.Connection, *, carrier: str | None = None, budget: float = DEFAULT_BUDGET,
         all_due: bool = False, environ: Mapping[str, str] | None = None,
         conninfo: str | None = None,
         progress: Callable[..., None] | None = None, stop=None) -> PollReport:
    """Fetch every due, open shipment (of one carrier, or of all with an adapter); return what happened.

    `budget` seconds after the start no new request is started (requests under way finish within
    their carrier's timeout). `all_due` ignores due times (terminal and stale shipments are still
    never polled). Tokens are read from `environ` (default os.environ). Worker threads get their
    own connections, opened with `conninfo` (default: the parameters of `conn`), from a pool
    (trackctl/poll_connections.py).

    `stop` (anything with `is_set()`, e.g. `interrupts.STOP`) ends the run early: no new request
    starts, the requests under way are abandoned and their claims given back (due again at once,
    so the next run takes them), and the report says what was done until then (`interrupted`).
    """
    from .db import conninfo_of
    from .poll_connections import Connections
    from .poll_worker import CarrierRun, Run

    if budget < 0:
        raise InvalidValue(f"{param('budget')} must be zero or more", value=budget)
    started = time.monotonic()
    environ = os.environ if environ is None else environ
    if carrier is not None:
        settings = [carrier_settings(conn, carrier)]
        if not settings[0].adapter:
            raise NotPollable(f"carrier {settings[0].name} has no adapter, so it cannot be polled",
                               hint="give it one with 'trackctl carrier set NAME --adapter ...', "
                                    "or record its news with 'trackctl mark CODE STATUS'")
    else:
        settings = [s for s in list_carrier_settings(conn) if s.adapter]
    round_start = conn.execute(SQL.round_start).fetchone()[0]
    conn.execute(SQL.prune_calls, {"keep": CALLS_KEPT})
    summaries: list[CarrierSummary] = []
    setup_failures: list[PollFailure] = []
    runnable: list[tuple[CarrierSettings, object, CarrierSummary, Calls]] = []
    for s in settings:
        summary = CarrierSummary(s.name, s.adapter or "")
        summaries.append(summary)
        calls = Calls()
        try:
            adapter = build_carrier_adapter(s, environ, calls)
        except TrackctlError as exc:
            summary.note = redact(exc.render().removeprefix(f"carrier {s.name}: "))
            summary.problem = exc
            setup_failures.append(PollFailure(s.name, None, summary.note, exc))
            continue
        runnable.append((s, adapter, summary, calls))
    workers = {s.id: min(WORKERS_PER_SLOT * s.max_concurrency, MAX_WORKERS_PER_CARRIER) for s, *_ in runnable}
    connections = Connections(conninfo or conninfo_of(conn), min(sum(workers.values()), MAX_CONNECTIONS),
                              fallback=conn)
    run = Run(connections, round_start, started + budget, all_due, progress)
    run.failures.extend(setup_failures)
    threads = []
    carrier_runs = []
    for s, adapter, summary, calls in runnable:
        carrier_run = CarrierRun(run, s, adapter, summary, calls)
        carrier_runs.append(carrier_run)
        for n in range(workers[s.id]):
            threads.append(threading.Thread(target=telemetry.bind(carrier_run.work), name=f"poll-{s.name}-{n}",
                                            daemon=True))
    released = 0
    stopped = False
    try:
        for t in threads:
            t.start()
        stopped = _join(threads, stop)
        if stopped:
            released = _abandon(run, threads)
        for carrier_run in carrier_runs:
            if run.fatal is None and not stopped:
                carrier_run.finish_stops()
    except BaseException:
        run.stop.set()  # workers finish the request under way; leases cover the rest
        raise
    finally:
        if not any(t.is_alive() for t in threads):
            connections.close()
    if run.fatal is not None:
        raise run.fatal
    for a in runnable:
        close = getattr(a[1], "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    return PollReport(summaries, list(run.failures), time.monotonic() - started, interrupted=stopped,
                      released=released)


ABANDON_WAIT = 1.0  # seconds a stopped run waits for answers already in to be recorded


def _join(threads: list[threading.Thread], stop) -> bool:
    """Wait for the workers; return True as soon as `stop` is set (the workers may still run)."""
    for t in threads:
        while t.is_alive():
            t.join(0.1)
            if stop is not None and stop.is_set():
                return True
    return stop is not None and stop.is_set()


def _abandon(run, threads: list[threading.Thread]) -> int:
    """Stop the workers, abandon the requests under way and give back every claim and slot; return how many claims.

    Workers that are recording an answer finish it first (milliseconds); a worker waiting on a
    carrier is not waited for: when its answer comes it sees the run abandoned and drops it.
    """
    run.stop.set()
    until = time.monotonic() + ABANDON_WAIT
    while True:
        with run.lock:
            busy = sum(1 for t in threads if t.is_alive()) - len(run.fetching)
            if busy <= 0 or time.monotonic() >= until:
                run.abandoned = True
                claims = dict(run.in_flight)
                break
        time.sleep(0.01)
    with run.connections.connection() as conn:
        conn.execute(SQL.release_abandoned, {
            "holder": run.holder, "ids": list(claims),
            "probing": sorted({carrier for carrier, probe in claims.values() if probe})})
    return len(claims)
