"""The worker threads of a poll run: one request at a time per worker, each about a batch of shipments.

A worker asks `sequencing.poll_acquire_batch` for the right to make one request (429 block and
breaker checked, one of the carrier's concurrency slots taken, up to the adapter's `max_batch`
due shipments claimed with a lease), waits for the carrier's rate limit when it has one (a
bucket in the database shared by every process and host), makes the request, gives the slot
back in the statement that counts the answer for the breaker, then records each shipment's
answer in its own transaction. See trackctl/poll.py and docs/POLLING.md.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg

from . import queries, telemetry
from .carriers import CarrierSettings
from .carriers.base import (DEFAULT_RETRY_AFTER, TERMINAL, Calls, FetchFailed, RateLimited, ShipmentRef,
                            ShipmentResult)
from .poll_connections import Connections
from .poll_policy import (BACKOFF_BASE, BACKOFF_CAP, BUSY_PAUSE, LEASE_MARGIN, MAX_ERROR_TEXT, MAX_WORKERS_PER_CARRIER,
                          PACE_LATE, PACE_LEAD, PACE_MARGIN, PollFailure, CarrierSummary, intervals_of, next_interval,
                          normalise_events, redact)
from .shipments import apply_status_change

SQL = queries.load("poll")


class Run:
    """One poll run: shared by the worker threads of every carrier."""

    def __init__(self, connections: Connections, round_start: datetime, deadline: float, all_due: bool,
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
        # main thread gives their claims back (trackctl/poll.py `_abandon`).
        self.in_flight: dict[int, tuple[int, bool]] = {}
        self.fetching: set[int] = set()
        self.abandoned = False


def adapter_traits(adapter) -> tuple[int, float | None]:
    """Return (largest batch, declared requests per second) of an adapter object."""
    batch = getattr(adapter, "max_batch", 1)
    batch = batch if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1 else 1
    if batch > 1 and not callable(getattr(adapter, "fetch_batch", None)):
        batch = 1
    rate = getattr(adapter, "rate_limit", None)
    rate = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 else None
    return min(batch, 1000), rate


def rate_bucket(settings: CarrierSettings, adapter) -> str:
    """The name of the rate bucket a carrier's requests are paced in (shared per API key when declared)."""
    if getattr(adapter, "shared_rate_limit", False):
        return f"{settings.adapter}|{settings.token_env or ''}|{(settings.url or '').rstrip('/')}"[:300]
    return f"carrier:{settings.id}"


class CarrierRun:
    """The workers of one carrier in one run."""

    def __init__(self, run: Run, settings: CarrierSettings, adapter, summary: CarrierSummary,
                 calls: Calls) -> None:
        self.run = run
        self.settings = settings
        self.adapter = adapter
        self.summary = summary
        self.intervals = intervals_of(settings)
        self.lease = timedelta(seconds=settings.timeout + LEASE_MARGIN)
        self.batch, declared = adapter_traits(adapter)
        rates = [r for r in (declared, settings.rate_limit) if r]
        self.rate = min(rates) if rates else None
        self.bucket = rate_bucket(settings, adapter)
        self.self_accounting = bool(getattr(adapter, "accounts_requests", False))
        # Adapters with stop_batch: numbers to stop are handled first, and once more after the
        # workers are done (shipments this run made terminal or stale): `finish_stops`.
        self.can_stop = callable(getattr(adapter, "stop_batch", None))
        self.stopping_done = not self.can_stop
        self.calls = calls  # the adapter's config.calls: paced and recorded by this run
        self.unrecorded: list[dict] = []  # requests made, not yet written (record_call, flush_calls)
        calls.bind(self.pace if self.rate else None, self.record_call)
        # In-process share of the cap: hands a free slot from one worker to the next without a
        # database round trip; the database slots make the cap hold across processes.
        self.gate = threading.BoundedSemaphore(min(settings.max_concurrency, MAX_WORKERS_PER_CARRIER))

    # -- pacing and accounting ------------------------------------------------------------------

    def pace(self) -> None:
        """Wait until this request may start under the carrier's rate limit (over all hosts).

        A sliding window: at most `count` starts within `window` (count = the whole requests per
        second, window = count / rate x PACE_MARGIN). A worker that wakes up late reports its real
        start, so the next bookings count from when its request really went out.
        """
        count = max(1, int(self.rate))
        params = {"bucket": self.bucket, "count": count, "window": timedelta(seconds=count / self.rate * PACE_MARGIN),
                  "lead": timedelta(seconds=PACE_LEAD)}
        while True:
            with self.run.connections.connection() as conn:
                wait, booked = conn.execute(SQL.rate_reserve, params).fetchone()[:2]
            if wait >= 0:
                target = time.monotonic() + wait
                if wait > 0:
                    time.sleep(wait)
                if time.monotonic() - target > PACE_LATE:
                    with self.run.connections.connection() as conn:
                        conn.execute(SQL.rate_late, {"bucket": self.bucket, "booked": booked})
                return
            time.sleep(min(-wait, 1.0))

    def record_call(self, kind: str, outcome: str, numbers: int, registered: int, latency_ms: float) -> None:
        """Note one request made; `flush_calls` writes it once the request's slot is back."""
        with self.run.lock:
            self.unrecorded.append({"carrier": self.settings.id, "kind": kind, "outcome": outcome,
                                    "numbers": numbers, "registered": registered, "latency_ms": max(latency_ms, 0.0)})

    def flush_calls(self) -> None:
        """Write the requests noted so far (outside the concurrency slot: the cap is about requests)."""
        with self.run.lock:
            rows, self.unrecorded = self.unrecorded, []
        for row in rows:
            with self.run.connections.connection() as conn:
                conn.execute(SQL.record_call, row)

    # -- the worker loop ------------------------------------------------------------------------

    def finish_stops(self) -> None:
        """Stop the numbers this run made terminal or stale (called once the workers are done)."""
        if self.can_stop and not self.run.stop.is_set():
            self.stopping_done = False
            self.work(only_stops=True)

    def work(self, only_stops: bool = False) -> None:
        try:
            try:
                self._loop(only_stops)
            finally:
                self.flush_calls()
        except BaseException as exc:  # the database went away, or a bug: stop the whole run
            with self.run.lock:
                if self.run.fatal is None:
                    self.run.fatal = exc
            self.run.stop.set()
            self.run.connections.abort(exc)

    def _loop(self, only_stops: bool = False) -> None:
        pause = BUSY_PAUSE[0]
        waits: dict[str, float] = {}  # seconds this worker waited before its next request, by reason (traces)
        params = {"carrier": self.settings.id, "holder": self.run.holder, "lease": self.lease,
                  "round": self.run.round_start, "all": self.run.all_due, "limit": self.batch, "stop": False}
        while not self.run.stop.is_set():
            remaining = self.run.deadline - time.monotonic()
            if remaining <= 0:
                self._note("budget used up")
                return
            if not self.gate.acquire(timeout=min(remaining, 1.0)):
                continue
            stopping = not self.stopping_done
            try:
                with self.run.connections.connection() as conn:
                    rows = conn.execute(SQL.acquire, {**params, "stop": stopping}).fetchall()
            except BaseException:
                self.gate.release()
                raise
            outcome, wait_s = rows[0][0], rows[0][1]
            if outcome == "ok":
                pause = BUSY_PAUSE[0]
                self._request(rows, stopping, waits)  # gives the gate back once the request is over
                waits = {}
                continue
            self.gate.release()
            if outcome == "done":
                if stopping and not only_stops:
                    self.stopping_done = True  # nothing (more) to stop: on to the due shipments
                    continue
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

    def _fetch(self, refs: list[ShipmentRef]) -> dict[str, ShipmentResult]:
        """One request about `refs`: the adapter's answer per code (missing codes are failures)."""
        if self.batch > 1:
            answer = self.adapter.fetch_batch(list(refs))
        else:
            answer = {refs[0].code: self.adapter.fetch(refs[0])}
        out: dict[str, ShipmentResult] = {}
        for ref in refs:
            item = answer.get(ref.code) if hasattr(answer, "get") else None
            if item is None:
                out[ref.code] = ShipmentResult(error="the adapter gave no answer for this code")
            elif isinstance(item, ShipmentResult):
                try:
                    out[ref.code] = ShipmentResult(normalise_events(item.events), item.error, bool(item.registered),
                                                   bool(item.stale)) if item.error is None else item
                except FetchFailed as exc:
                    out[ref.code] = ShipmentResult(error=str(exc), registered=bool(item.registered))
            else:
                try:
                    out[ref.code] = ShipmentResult(normalise_events(item))
                except FetchFailed as exc:
                    out[ref.code] = ShipmentResult(error=str(exc))
        return out

    def _traced(self, refs: list[ShipmentRef], probe: bool, stopping: bool, waits: dict[str, float]):
        """One request to the carrier: with tracing on, inside a span of this carrier request."""
        attributes = {"trackctl.carrier": self.settings.name, "trackctl.adapter": self.settings.adapter,
                      "trackctl.batch_size": len(refs), "trackctl.poll.probe": bool(probe),
                      "trackctl.poll.stop": stopping, "trackctl.poll.previous_polls": refs[0].poll_count,
                      **{f"trackctl.wait.{reason}_s": round(s, 3) for reason, s in waits.items()}}
        with telemetry.span(f"carrier request {self.settings.name}", attributes, kind="client") as traced:
            try:
                if stopping:
                    self._stop(refs)
                    results: dict[str, ShipmentResult] = {}
                elif self.self_accounting:
                    results = self._fetch(refs)
                else:
                    with self.calls.request("track", len(refs)):
                        results = self._fetch(refs)
            except RateLimited as exc:
                traced.set_attributes({"trackctl.poll.outcome": "rate_limited", "http.response.status_code": 429,
                                       "trackctl.rate_limit.retry_after_s": exc.retry_after})
                raise
            except Exception:
                traced.set("trackctl.poll.outcome", "failed")
                raise
            traced.set_attributes({"trackctl.poll.outcome": "ok",
                                   "trackctl.poll.events": sum(len(r.events) for r in results.values())})
            return results

    def _request(self, rows: list[tuple], stopping: bool, waits: dict[str, float] | None = None) -> None:
        slot, probe = rows[0][2], rows[0][3]
        ids = {r[5]: r[4] for r in rows}  # code -> shipment id
        refs = [ShipmentRef(code=r[5], order_id=r[6], status=r[7], assigned_at=r[8], poll_count=r[9],
                            registered=bool(r[10])) for r in rows]
        base = {"carrier": self.settings.id, "slot": slot, "holder": self.run.holder, "probe": bool(probe)}
        results: dict[str, ShipmentResult] = {}
        failure: str | None = None
        limited = False
        retry_after: float | None = None
        with self.run.lock:
            for shipment_id in ids.values():
                self.run.in_flight[shipment_id] = (self.settings.id, bool(probe))
            if self.run.stop.is_set():  # stopped while claiming: the main thread gives the claims back
                self.gate.release()
                return
            self.run.fetching.update(ids.values())
        try:
            try:
                try:
                    results = self._traced(refs, bool(probe), stopping, waits or {})
                except RateLimited as exc:
                    limited, retry_after = True, exc.retry_after
                except FetchFailed as exc:
                    failure = str(exc)
                except Exception as exc:  # an adapter bug is a failed request, not the end of the run
                    failure = f"adapter error: {type(exc).__name__}: {exc}"
            finally:
                with self.run.lock:
                    self.run.fetching.difference_update(ids.values())
                    abandoned = self.run.abandoned
            if abandoned:  # the run was stopped meanwhile and has given the claims back: drop the answer
                return
            if limited:
                self._record_limited(base, list(ids.values()), refs, retry_after, stopping)  # gives the slot back too
            else:
                with self.run.connections.connection() as conn:
                    conn.execute(SQL.release_failed if failure is not None else SQL.release_ok, base)
        finally:
            self.gate.release()
        try:
            self.flush_calls()
            self._settle(refs, ids, results, failure, limited, stopping)
        finally:
            with self.run.lock:
                for shipment_id in ids.values():
                    self.run.in_flight.pop(shipment_id, None)

    def _settle(self, refs: list[ShipmentRef], ids: dict[str, int], results: dict[str, ShipmentResult],
                failure: str | None, limited: bool, stopping: bool) -> None:
        """Record what one request brought, shipment by shipment."""
        if stopping:
            if not limited and failure is None:
                with self.run.connections.connection() as conn:
                    conn.execute(SQL.finish_stopped, {"ids": list(ids.values())})
            elif failure is not None:
                with self.run.lock:
                    self.summary.failed += 1
                    self.run.failures.append(PollFailure(self.settings.name, refs[0].code,
                                                         redact(f"stop tracking: {failure}")[:MAX_ERROR_TEXT]))
            return
        for ref in refs:
            if limited:
                continue
            if failure is not None:
                self._record_failed(ids[ref.code], ref.code, failure)
            elif results[ref.code].error is not None:
                self._record_failed(ids[ref.code], ref.code, results[ref.code].error, results[ref.code].registered)
            else:
                self._record_ok(ids[ref.code], ref.code, results[ref.code])
        if self.run.progress:
            self.run.progress(len(refs))

    def _stop(self, refs: list[ShipmentRef]) -> None:
        if self.self_accounting:
            self.adapter.stop_batch(list(refs))
        else:
            with self.calls.request("stop", len(refs)):
                self.adapter.stop_batch(list(refs))

    # -- recording outcomes ---------------------------------------------------------------------

    def _record_ok(self, shipment_id: int, code: str, result: ShipmentResult) -> None:
        try:
            with self.run.connections.connection() as conn, conn.transaction():
                change = apply_status_change(conn, shipment_id, list(result.events),
                                             stale_after=self.settings.stale_after)
                if result.stale and not change.stale and change.status not in TERMINAL:
                    # The carrier gave up on the number (17TRACK Expired): stale now, whatever the
                    # events just stored (a negative quiet time makes any shipment quiet enough).
                    flagged = apply_status_change(conn, shipment_id, (), stale_after=timedelta(seconds=-1))
                    change = replace(change, stale=True, flagged_stale=flagged.flagged_stale)
                if not (change.new_events or change.flagged_stale):
                    conn.execute(SQL.not_durable)
                conn.execute(SQL.finish_ok, {"id": shipment_id, "registered": result.registered,
                                             "next": next_interval(self.intervals, change.status,
                                                                   moved=bool(change.new_events))})
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._record_failed(shipment_id, code, f"could not store the carrier's events: {first}", result.registered)
            return
        with self.run.lock:
            s = self.summary
            s.polled += 1
            s.ok += 1
            s.new_events += change.new_events
            s.changed += change.changed
            s.stale += change.flagged_stale

    def _record_failed(self, shipment_id: int, code: str, reason: str, registered: bool = False) -> None:
        reason = redact(reason)[:MAX_ERROR_TEXT]
        with self.run.connections.connection() as conn, conn.transaction():
            change = apply_status_change(conn, shipment_id, (), stale_after=self.settings.stale_after)
            if not change.flagged_stale:
                conn.execute(SQL.not_durable)
            conn.execute(SQL.finish_failed, {"id": shipment_id, "error": reason, "base": BACKOFF_BASE,
                                             "cap": BACKOFF_CAP, "registered": registered})
        with self.run.lock:
            self.summary.polled += 1
            self.summary.failed += 1
            self.summary.stale += change.flagged_stale
            self.run.failures.append(PollFailure(self.settings.name, code, reason))

    def _record_limited(self, base: dict, ids: list[int], refs: list[ShipmentRef], retry_after: float | None,
                        stopping: bool) -> None:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        with self.run.connections.connection() as conn:
            conn.execute(SQL.finish_limited, {**base, "ids": ids, "stop": stopping,
                                              "retry": timedelta(seconds=seconds)})
        with self.run.lock:
            self.summary.polled += 0 if stopping else len(refs)
            self.summary.rate_limited += 1 if stopping else len(refs)
            self.run.failures.append(PollFailure(self.settings.name, refs[0].code,
                                                 f"rate limited (HTTP 429): carrier paused for {seconds:g} s"))

