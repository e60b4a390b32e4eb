"""Polling carriers: due selection, per-carrier caps across processes, backoff, 429 and breaker.

A run starts worker threads per carrier (twice its max_concurrency, at most 32), of which at
most max_concurrency make a request at a time. Each request is preceded by one call of
`sequencing.poll_acquire`, which checks the carrier's 429 block and breaker, takes one of the
carrier's concurrency slots (shared by every process on every host) and claims one due shipment
with a lease, in one round trip. As soon as the answer is in, one statement gives the slot back
and counts the answer for the breaker (or records the 429 block). The answer is then recorded in
one transaction: events and status through `shipments.apply_status_change`, and the shipment's
next due time. Nothing is held in the database between statements, so a killed poller leaves
only leases that run out by themselves.

Policy (defaults documented in docs/POLLING.md):
- due = never polled, or the interval of its current status has passed (with ±10% jitter);
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
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg

from . import __version__, queries, telemetry
from .carriers import CarrierSettings, carrier_settings, list_carrier_settings
from .carriers.base import (DEFAULT_RETRY_AFTER, MAX_DESCRIPTION, MAX_LOCATION, MAX_RAW_STATUS, STATUSES,
                            AdapterConfig, CarrierEvent, FetchFailed, RateLimited, ShipmentRef, clip, event_key)
from .errors import DatabaseUnavailable, InvalidValue, NotPollable, TrackctlError
from .shipments import apply_status_change

DEFAULT_BUDGET = 50  # seconds; below the one-minute cron interval
# Seconds between polls of a shipment by its status (terminal statuses are never polled).
DEFAULT_INTERVALS = {
    "pending": 3600,
    "in_transit": 1800,
    "out_for_delivery": 600,
    "failed_attempt": 1800,
    "available_for_pickup": 7200,
    "exception": 3600,
}
INTERVAL_JITTER = 0.10  # ± this fraction, so shipments assigned together spread out
BACKOFF_BASE = 60.0  # first retry after a failed request, before jitter
BACKOFF_CAP = 3600.0
LEASE_MARGIN = 15.0  # a claim and a slot are leased for the carrier's timeout plus this
MAX_WORKERS_PER_CARRIER = 32
WORKERS_PER_SLOT = 2  # one worker records an answer while another has the slot for the next request
MAX_CONNECTIONS = 16
BUSY_PAUSE = (0.01, 0.2)  # waiting for a free slot held by another process: from, up to (s)
MAX_ERROR_TEXT = 500
SQL = queries.load("poll")

# Leases (slots, claims) and the bookkeeping of polls that brought no news are committed with
# synchronous_commit off, set for that transaction only (so it holds through PgBouncer in
# transaction mode): a database crash can lose the last moments of them, which only means those
# shipments are polled again. Transactions that store news (events, status, stale flag, and so
# outbox rows) stay durable.
ACQUIRE = """
SELECT a.*, set_config('synchronous_commit', 'off', true)
FROM sequencing.poll_acquire(%(carrier)s, %(holder)s, %(lease)s, %(round)s, %(all)s) AS a
"""
NOT_DURABLE = "SELECT set_config('synchronous_commit', 'off', true)"
_RELEASE_SLOT = """
released AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE carrier_id = %(carrier)s AND slot = %(slot)s AND holder = %(holder)s
)"""
# The slot goes back as soon as the answer is in (the cap is about requests, not bookkeeping),
# in the statement that counts the answer for the carrier's breaker, so that a request that
# trips the breaker stops the next one. A success closes the breaker; a failed request adds to
# the carrier's consecutive failures and opens it at the threshold, or again after a failed probe.
RELEASE_OK = f"""
WITH {_RELEASE_SLOT}, closed AS (
    UPDATE sequencing.carrier_state SET consecutive_failures = 0, open_until = NULL, probe_until = NULL
    WHERE carrier_id = %(carrier)s
      AND (consecutive_failures <> 0 OR open_until IS NOT NULL OR probe_until IS NOT NULL)
)
SELECT set_config('synchronous_commit', 'off', true)
"""
_TRIPS = "(%(probe)s OR (s.open_until IS NULL AND s.consecutive_failures + 1 >= c.breaker_threshold))"
RELEASE_FAILED = f"""
WITH {_RELEASE_SLOT}, tripped AS (
    UPDATE sequencing.carrier_state s SET
        consecutive_failures = s.consecutive_failures + 1,
        open_until = CASE WHEN {_TRIPS} THEN now() + c.breaker_cooldown ELSE s.open_until END,
        opened_at = CASE WHEN {_TRIPS} THEN now() ELSE s.opened_at END,
        probe_until = CASE WHEN %(probe)s THEN NULL ELSE s.probe_until END
    FROM sequencing.carrier c
    WHERE s.carrier_id = %(carrier)s AND c.id = s.carrier_id
)
SELECT set_config('synchronous_commit', 'off', true)
"""
FINISH_OK = """
UPDATE sequencing.tracking SET
    last_polled_at = now(), next_poll_at = now() + %(next)s, claimed_until = NULL,
    poll_count = poll_count + 1, poll_failures = 0, last_poll_error = NULL
WHERE id = %(id)s
"""
FINISH_FAILED = """
UPDATE sequencing.tracking SET
    last_polled_at = now(), claimed_until = NULL, poll_count = poll_count + 1,
    poll_failures = poll_failures + 1, last_poll_error = %(error)s,
    next_poll_at = now() + make_interval(secs => least(%(cap)s, %(base)s * power(2, least(poll_failures, 30)))
                                                  * (0.5 + 0.5 * random()))
WHERE id = %(id)s
"""
# A 429 blocks the carrier in the statement that gives the slot back: no request of this
# process or any other can start in between.
FINISH_LIMITED = f"""
WITH {_RELEASE_SLOT}, blocked AS (
    UPDATE sequencing.carrier_state SET
        blocked_until = greatest(coalesce(blocked_until, now()), now() + %(retry)s),
        probe_until = CASE WHEN %(probe)s THEN NULL ELSE probe_until END
    WHERE carrier_id = %(carrier)s
    RETURNING blocked_until
)
UPDATE sequencing.tracking SET claimed_until = NULL, next_poll_at = (SELECT blocked_until FROM blocked)
WHERE id = %(id)s
RETURNING next_poll_at
"""


# Open shipments of carriers with an adapter whose poll is late by more than `slack` (never
# polled ones count from their assignment). Walks the due index, so it costs what is overdue.
OVERDUE = """
SELECT count(*)::int FROM sequencing.carrier c
CROSS JOIN LATERAL (
    SELECT 1 FROM sequencing.tracking t
    WHERE t.freightcarrier_id = c.id
      AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
      AND t.next_poll_at < now() - %(slack)s
      AND (t.next_poll_at > '-infinity' OR t.assigned_at < now() - %(slack)s)
      AND (t.claimed_until IS NULL OR t.claimed_until <= now())  -- a poller holding it is on it
) late
WHERE c.adapter IS NOT NULL
"""


def overdue_shipments(conn: psycopg.Connection, slack: timedelta = timedelta(minutes=10)) -> int:
    """Return how many open shipments are past their poll time by more than `slack`."""
    return conn.execute(OVERDUE, {"slack": slack}).fetchone()[0]


@dataclass(frozen=True)
class PollFailure:
    carrier: str
    code: str | None  # None: the carrier could not be polled at all
    reason: str


@dataclass
class CarrierSummary:
    carrier: str
    adapter: str
    polled: int = 0  # requests made
    ok: int = 0
    failed: int = 0
    rate_limited: int = 0
    new_events: int = 0
    changed: int = 0  # status changes
    stale: int = 0  # shipments flagged stale
    note: str = ""  # why the carrier stopped before running out of due shipments


@dataclass(frozen=True)
class PollReport:
    carriers: list[CarrierSummary]
    failures: list[PollFailure]
    seconds: float
    interrupted: bool = False  # the caller's stop flag ended the run early
    released: int = 0  # claims of abandoned requests given back (due again at once)

    @property
    def failed_requests(self) -> int:
        """Failed requests, 429s included."""
        return sum(c.failed + c.rate_limited for c in self.carriers)

    @property
    def unavailable(self) -> int:
        """Carriers that could not be polled at all (token missing, adapter not loadable)."""
        return sum(1 for f in self.failures if f.code is None)

    @property
    def failed(self) -> bool:
        return bool(self.failed_requests or self.unavailable)

    @property
    def polled(self) -> int:
        return sum(c.polled for c in self.carriers)


class _Connections:
    """A few connections shared by the worker threads, each used by one thread at a time.

    A thread that finds none idle waits until one is given back, dropped (it may then open a new
    one) or the run is aborted; none can wait for ever. When the server refuses a new connection
    (max_connections, a role's limit) the run goes on with those it has, and with none at all it
    borrows the command's own connection, which is idle while the workers run.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int,
                 fallback: psycopg.Connection | None = None) -> None:
        self._connect = connect
        self._size = max(1, size)
        self._fallback = fallback
        self._idle: list[psycopg.Connection] = []
        self._made = 0  # connections in use or idle, the fallback included
        self._cond = threading.Condition()
        self._all: list[psycopg.Connection] = []  # the ones this pool opened, and closes
        self._aborted: BaseException | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._take()
        try:
            yield conn
        except psycopg.OperationalError:
            self._drop(conn)
            raise
        except BaseException:
            self._give_back(conn)
            raise
        else:
            self._give_back(conn)

    def _take(self) -> psycopg.Connection:
        while True:
            with self._cond:
                while True:
                    if self._aborted is not None:
                        raise RuntimeError("the poll run was stopped") from self._aborted
                    if self._idle:
                        return self._idle.pop()
                    if self._made < self._size:
                        self._made += 1
                        break
                    self._cond.wait()
            try:
                conn = self._connect()
            except DatabaseUnavailable:
                with self._cond:
                    self._made -= 1
                    self._cond.notify_all()
                    if self._made == 0 and self._fallback is None:
                        raise
                    # The server refused one more: make do with what is open (or borrow the
                    # command's connection when nothing is), and wait for one of them.
                    if self._made == 0:
                        self._idle.append(self._fallback)
                        self._fallback = None
                        self._made = 1
                    self._size = self._made
                continue
            except BaseException:
                with self._cond:
                    self._made -= 1
                    self._cond.notify_all()
                raise
            with self._cond:
                self._all.append(conn)
            return conn

    def _give_back(self, conn: psycopg.Connection) -> None:
        if conn.closed:
            self._drop(conn)
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                self._drop(conn)
                return
        with self._cond:
            self._idle.append(conn)
            self._cond.notify()

    def _drop(self, conn: psycopg.Connection) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        with self._cond:
            self._made -= 1
            self._cond.notify_all()  # a waiter may open a new one in its place

    def abort(self, cause: BaseException) -> None:
        """Wake every thread waiting for a connection with an error: the run is over."""
        with self._cond:
            if self._aborted is None:
                self._aborted = cause
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def _valid_token(token: str) -> bool:
    return all("!" <= ch <= "~" for ch in token)


def build_carrier_adapter(settings: CarrierSettings, environ: Mapping[str, str]):
    """Return the adapter of a carrier with its token read from `environ` now; raise TrackctlError."""
    from . import logs
    from .carriers.registry import build_adapter

    token = None
    if settings.token_env:
        token = environ.get(settings.token_env)
        if not token:
            raise TrackctlError(f"carrier {settings.name}: the token variable {settings.token_env} is not set",
                                hint="set it in the environment or in ./.env")
        if not _valid_token(token):
            raise TrackctlError(f"carrier {settings.name}: the token in {settings.token_env} contains spaces, "
                                "control or non-ASCII characters", hint="check the variable's value")
        logs.register_secret(token)
    config = AdapterConfig(carrier=settings.name, url=settings.url, token=token, timeout=settings.timeout,
                           options=dict(settings.options), user_agent=f"trackctl/{__version__}")
    return build_adapter(settings.adapter or "", config)


def normalise_events(events: Sequence[CarrierEvent]) -> list[CarrierEvent]:
    """Return an adapter's events checked and fitted to the columns; raise FetchFailed on nonsense."""
    out: dict[str, CarrierEvent] = {}
    if events is None or isinstance(events, (str, bytes)):
        raise FetchFailed("the adapter returned no list of events")
    for e in events:
        key, occurred, raw = getattr(e, "key", None), getattr(e, "occurred_at", None), getattr(e, "raw_status", None)
        if not isinstance(key, str) or not key:
            raise FetchFailed("the adapter returned an event without a key")
        if not isinstance(occurred, datetime) or occurred.tzinfo is None or occurred.utcoffset() is None:
            raise FetchFailed("the adapter returned an event without a timezone-aware occurred_at")
        status = getattr(e, "status", None)
        raw_text = clip(raw if isinstance(raw, str) else None, MAX_RAW_STATUS) or (status if isinstance(status, str) else None)
        if not raw_text:
            raise FetchFailed("the adapter returned an event without a raw status")
        description, location = getattr(e, "description", None), getattr(e, "location", None)
        key = event_key(key)
        out.setdefault(key, CarrierEvent(
            key=key, occurred_at=occurred, status=status if status in STATUSES else None, raw_status=raw_text,
            description=clip(description if isinstance(description, str) else None, MAX_DESCRIPTION),
            location=clip(location if isinstance(location, str) else None, MAX_LOCATION)))
    return list(out.values())


class _Run:
    """One poll run: shared by the worker threads of every carrier."""

    def __init__(self, connections: _Connections, round_start: datetime, deadline: float, all_due: bool,
                 progress: Callable[..., None] | None) -> None:
        self.connections = connections
        self.round_start = round_start
        self.deadline = deadline
        self.all_due = all_due
        self.progress = progress
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[PollFailure] = []
        self.fatal: BaseException | None = None
        # Claims not yet recorded, by shipment id: (carrier id, probe); and those whose request is
        # under way. When the caller stops the run, the requests under way are abandoned and the
        # main thread gives their claims back (see `_abandon`).
        self.in_flight: dict[int, tuple[int, bool]] = {}
        self.fetching: set[int] = set()
        self.abandoned = False


class _CarrierRun:
    """The workers of one carrier in one run."""

    def __init__(self, run: _Run, settings: CarrierSettings, adapter, summary: CarrierSummary) -> None:
        self.run = run
        self.settings = settings
        self.adapter = adapter
        self.summary = summary
        self.intervals = {**DEFAULT_INTERVALS, **{k: int(v) for k, v in settings.poll_intervals.items()}}
        self.lease = timedelta(seconds=settings.timeout + LEASE_MARGIN)
        # In-process share of the cap: hands a free slot from one worker to the next without a
        # database round trip; the database slots make the cap hold across processes.
        self.gate = threading.BoundedSemaphore(min(settings.max_concurrency, MAX_WORKERS_PER_CARRIER))

    # -- the worker loop --------------------------------------------------------------------

    def work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the database went away, or a bug: stop the whole run
            with self.run.lock:
                if self.run.fatal is None:
                    self.run.fatal = exc
            self.run.stop.set()
            self.run.connections.abort(exc)

    def _loop(self) -> None:
        pause = BUSY_PAUSE[0]
        waits: dict[str, float] = {}  # seconds this worker waited before its next request, by reason (traces)
        params = {"carrier": self.settings.id, "holder": self.run.holder, "lease": self.lease,
                  "round": self.run.round_start, "all": self.run.all_due}
        while not self.run.stop.is_set():
            remaining = self.run.deadline - time.monotonic()
            if remaining <= 0:
                self._note("budget used up")
                return
            if not self.gate.acquire(timeout=min(remaining, 1.0)):
                continue
            try:
                with self.run.connections.connection() as conn:
                    row = conn.execute(ACQUIRE, params).fetchone()
            except BaseException:
                self.gate.release()
                raise
            outcome, wait_s = row[0], row[1]
            if outcome == "ok":
                pause = BUSY_PAUSE[0]
                self._poll_one(*row[2:10], waits=waits)  # gives the gate back once the request is over
                waits = {}
                continue
            self.gate.release()
            if outcome == "done":
                return
            if outcome in ("busy", "half_open"):
                wait, pause = pause, min(pause * 2, BUSY_PAUSE[1])
            else:
                wait = max(float(wait_s or 0), 0.01)
            if wait >= remaining:
                until = (datetime.now(timezone.utc) + timedelta(seconds=wait)).isoformat(timespec="seconds")
                self._note({"blocked": f"rate limited (HTTP 429) until {until}",
                            "open": f"breaker open until {until}"}.get(outcome, "budget used up"))
                return
            waits[outcome] = waits.get(outcome, 0.0) + wait
            self.run.stop.wait(wait)

    def _note(self, text: str) -> None:
        with self.run.lock:
            if not self.summary.note:
                self.summary.note = text

    def _poll_one(self, slot: int, probe: bool, shipment_id: int, code: str, order_id: str, status: str,
                  assigned_at: datetime, poll_count: int, waits: Mapping[str, float] | None = None) -> None:
        ref = ShipmentRef(code=code, order_id=order_id, status=status, assigned_at=assigned_at, poll_count=poll_count)
        base = {"carrier": self.settings.id, "slot": slot, "holder": self.run.holder, "probe": bool(probe),
                "id": shipment_id}
        events: list[CarrierEvent] = []
        failure: str | None = None
        limited = False
        with self.run.lock:
            self.run.in_flight[shipment_id] = (self.settings.id, bool(probe))
            if self.run.stop.is_set():  # stopped while claiming: the main thread gives the claim back
                self.gate.release()
                return
            self.run.fetching.add(shipment_id)
        try:
            retry_after: float | None = None
            try:
                events = normalise_events(self._fetch(ref, probe, waits or {}))
            except RateLimited as exc:
                limited, retry_after = True, exc.retry_after
            except FetchFailed as exc:
                failure = str(exc)
            except Exception as exc:  # an adapter bug is a failed request, not the end of the run
                failure = f"adapter error: {type(exc).__name__}: {exc}"
            finally:
                with self.run.lock:
                    self.run.fetching.discard(shipment_id)
                    abandoned = self.run.abandoned
            if abandoned:  # the run was stopped meanwhile and has given the claim back: drop the answer
                return
            if limited:
                self._record_limited(base, code, retry_after)  # gives the slot back too
            else:
                with self.run.connections.connection() as conn:
                    conn.execute(RELEASE_FAILED if failure is not None else RELEASE_OK, base)
        finally:
            self.gate.release()
        try:
            if failure is not None:
                self._record_failed(base, code, failure)
            elif not limited:
                self._record_ok(base, code, events)
        finally:
            with self.run.lock:
                self.run.in_flight.pop(shipment_id, None)
        if self.run.progress:
            self.run.progress(1)

    def _fetch(self, ref: ShipmentRef, probe: bool, waits: Mapping[str, float]) -> Sequence[CarrierEvent]:
        """Return the adapter's answer; with tracing on, inside a span of this carrier request."""
        attributes = {"trackctl.carrier": self.settings.name, "trackctl.adapter": self.settings.adapter,
                      "trackctl.batch_size": 1, "trackctl.poll.probe": bool(probe),
                      "trackctl.poll.previous_polls": ref.poll_count,
                      **{f"trackctl.wait.{reason}_s": round(s, 3) for reason, s in waits.items()}}
        with telemetry.span(f"carrier request {self.settings.name}", attributes, kind="client") as traced:
            try:
                events = self.adapter.fetch(ref)
            except RateLimited as exc:
                traced.set_attributes({"trackctl.poll.outcome": "rate_limited", "http.response.status_code": 429,
                                       "trackctl.rate_limit.retry_after_s": exc.retry_after})
                raise
            except FetchFailed:
                traced.set("trackctl.poll.outcome", "failed")
                raise
            traced.set_attributes({"trackctl.poll.outcome": "ok", "trackctl.poll.events": len(events)})
            return events

    # -- recording outcomes -----------------------------------------------------------------

    def _interval(self, status: str) -> timedelta:
        seconds = self.intervals.get(status, DEFAULT_INTERVALS["pending"])
        return timedelta(seconds=seconds * random.uniform(1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER))

    def _record_ok(self, base: dict, code: str, events: list[CarrierEvent]) -> None:
        try:
            with self.run.connections.connection() as conn, conn.transaction():
                change = apply_status_change(conn, base["id"], events, stale_after=self.settings.stale_after)
                if not (change.new_events or change.flagged_stale):
                    conn.execute(NOT_DURABLE)
                conn.execute(FINISH_OK, {**base, "next": self._interval(change.status)})
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._record_failed(base, code, f"could not store the carrier's events: {first}")
            return
        with self.run.lock:
            s = self.summary
            s.polled += 1
            s.ok += 1
            s.new_events += change.new_events
            s.changed += change.changed
            s.stale += change.flagged_stale

    def _record_failed(self, base: dict, code: str, reason: str) -> None:
        reason = _redact(reason)[:MAX_ERROR_TEXT]
        with self.run.connections.connection() as conn, conn.transaction():
            change = apply_status_change(conn, base["id"], (), stale_after=self.settings.stale_after)
            if not change.flagged_stale:
                conn.execute(NOT_DURABLE)
            conn.execute(FINISH_FAILED, {**base, "error": reason, "base": BACKOFF_BASE, "cap": BACKOFF_CAP})
        with self.run.lock:
            self.summary.polled += 1
            self.summary.failed += 1
            self.summary.stale += change.flagged_stale
            self.run.failures.append(PollFailure(self.settings.name, code, reason))

    def _record_limited(self, base: dict, code: str, retry_after: float | None) -> None:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        with self.run.connections.connection() as conn:
            conn.execute(FINISH_LIMITED, {**base, "retry": timedelta(seconds=seconds)})
        with self.run.lock:
            self.summary.polled += 1
            self.summary.rate_limited += 1
            self.run.failures.append(PollFailure(self.settings.name, code,
                                                 f"rate limited (HTTP 429): carrier paused for {seconds:g} s"))


def _redact(text: str) -> str:
    from .logs import redact

    return redact(text)


def _connector(conn: psycopg.Connection) -> Callable[[], psycopg.Connection]:
    from psycopg.conninfo import make_conninfo

    from .db import open_connection

    params = {"password": conn.info.password} if conn.info.password else {}
    conninfo = make_conninfo(conn.info.dsn, **params)
    # A worker's extra connection is not worth waiting for: the pool makes do without it.
    return lambda: open_connection(conninfo, wait_when_full=0)


def poll(conn: psycopg.Connection, *, carrier: str | None = None, budget: float = DEFAULT_BUDGET,
         all_due: bool = False, environ: Mapping[str, str] | None = None,
         connect: Callable[[], psycopg.Connection] | None = None,
         progress: Callable[..., None] | None = None, stop=None) -> PollReport:
    """Fetch every due, open shipment (of one carrier, or of all with an adapter); return what happened.

    `budget` seconds after the start no new request is started (requests under way finish within
    their carrier's timeout). `all_due` ignores due times (terminal and stale shipments are still
    never polled). Tokens are read from `environ` (default os.environ). Worker threads get their
    own connections from `connect` (default: the parameters of `conn`).

    `stop` (anything with `is_set()`, e.g. `interrupts.STOP`) ends the run early: no new request
    starts, the requests under way are abandoned and their claims given back (due again at once,
    so the next run takes them), and the report says what was done until then (`interrupted`).
    """
    if budget < 0:
        raise InvalidValue("--budget must be zero or more")
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
    round_start = conn.execute("SELECT now()").fetchone()[0]
    summaries: list[CarrierSummary] = []
    setup_failures: list[PollFailure] = []
    runnable: list[tuple[CarrierSettings, object, CarrierSummary]] = []
    for s in settings:
        summary = CarrierSummary(s.name, s.adapter or "")
        summaries.append(summary)
        try:
            adapter = build_carrier_adapter(s, environ)
        except TrackctlError as exc:
            summary.note = _redact(exc.message.removeprefix(f"carrier {s.name}: "))
            setup_failures.append(PollFailure(s.name, None, summary.note))
            continue
        runnable.append((s, adapter, summary))
    workers = {s.id: min(WORKERS_PER_SLOT * s.max_concurrency, MAX_WORKERS_PER_CARRIER) for s, _, _ in runnable}
    connections = _Connections(connect or _connector(conn), min(sum(workers.values()), MAX_CONNECTIONS), fallback=conn)
    run = _Run(connections, round_start, started + budget, all_due, progress)
    run.failures.extend(setup_failures)
    threads = []
    for s, adapter, summary in runnable:
        carrier_run = _CarrierRun(run, s, adapter, summary)
        for n in range(workers[s.id]):
            threads.append(threading.Thread(target=telemetry.bind(carrier_run.work), name=f"poll-{s.name}-{n}", daemon=True))
    released = 0
    try:
        for t in threads:
            t.start()
        stopped = _join(threads, stop)
        if stopped:
            released = _abandon(run, threads)
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


def _abandon(run: _Run, threads: list[threading.Thread]) -> int:
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
