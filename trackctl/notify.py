"""Delivering outbox events to webhook subscribers (Standard Webhooks), at least once, in order per shipment.

How one `notify` process works:

- The main thread owns the database connection. It claims due deliveries with
  `FOR UPDATE SKIP LOCKED` and leases them (the row's `next_attempt_at` moves to the end of the
  lease and `lease_token` names this process), hands each to a worker thread, and records the
  outcomes in one statement per round. Several processes on several hosts share the work this
  way and never hold the same row at the same time.
- A lease lasts longer than a request can (timeout + margin), and only as many rows are claimed
  as there are idle workers, so a request always starts right after its claim. A process killed
  mid-run leaves its rows pending; they fall due again when their lease ends. Nothing is marked
  done without a 2xx answer, so at worst a delivery is sent twice (consumers deduplicate on the
  event id, which is also the `webhook-id` header).
- Per shipment and subscriber, a delivery is claimed only when no earlier event of that shipment
  is still pending for that subscriber: a later event waits while an earlier one is retried.
- Concurrency is bounded per process (`concurrency`) and per endpoint (`max_in_flight` of the
  subscriber).
- Workers speak HTTP with the standard library: one keep-alive connection per worker and origin,
  a total deadline per request enforced by a watchdog that shuts the socket, and at most
  64 KiB of any response body read.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from . import __version__, telemetry
from .deadline import Watchdog, connection
from .errors import InvalidValue
from .outbox import CHANNEL, RECHECK_SECONDS
from .webhooks import Subscriber, list_subscribers, secret_key, signature_header

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 10.0
LEASE_MARGIN = 10.0  # seconds a lease outlives the request deadline: time to record the outcome
MAX_RESPONSE_BODY = 64 * 1024
MAX_ERROR = 300
IDLE_CHECK = 0.5  # with room for more claims, look for new due rows at least this often
PREFETCH = 2  # rows claimed per worker (and per endpoint slot): one in flight, one queued
GATHER = 0.01  # seconds the main thread collects outcomes before recording them in one statement
MIN_ATTEMPT = 1.0  # seconds of budget a request needs (or the whole timeout, if shorter) to be made
SUBSCRIBERS_TTL = 1.0  # seconds the subscriber list (URLs, secrets, caps) is reused

# Claims and outcomes need not wait for the WAL flush: after a server crash a lost claim is a
# row due again, and a lost `done` a second delivery, which at-least-once allows anyway. Each
# statement turns synchronous_commit off for its own transaction only (set_config(..., true)),
# so nothing leaks to other clients of a pooled server connection.
NOT_DURABLE = "(SELECT set_config('synchronous_commit', 'off', true)) AS not_durable"
CLAIM = f"""
WITH picked AS (
    SELECT d.id FROM sequencing.webhook_delivery d
    WHERE d.subscriber_id = %(subscriber)s AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery e
                      WHERE e.subscriber_id = d.subscriber_id AND e.shipment_id = d.shipment_id
                        AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
    ORDER BY d.next_attempt_at, d.outbox_id
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE sequencing.webhook_delivery d
SET next_attempt_at = now() + %(lease)s, lease_token = %(token)s
FROM picked, sequencing.outbox o, {NOT_DURABLE}
WHERE d.id = picked.id AND o.id = d.outbox_id
RETURNING d.id, d.subscriber_id, o.event_id, sequencing.event_body(o), d.attempts + 1, o.type
"""

# Outcomes of one round. A 2xx is done; 410 keeps the row pending (its subscriber is disabled
# below, and the row resumes if the subscriber is enabled again); anything else is a failed
# attempt, retried after the schedule's next step, or dead after its last. Rows whose lease this
# process lost (it ran out and another process took them) are left alone.
RECORD = f"""
UPDATE sequencing.webhook_delivery d SET
    attempts = d.attempts + 1,
    last_attempt_at = r.attempted_at,
    last_status = r.http_status,
    last_error = r.error,
    status = CASE WHEN r.ok THEN 'done' WHEN r.gone THEN 'pending'
                  WHEN d.attempts + 1 >= cardinality(s.retry_schedule) THEN 'dead' ELSE 'pending' END,
    delivered_at = CASE WHEN r.ok THEN now() END,
    next_attempt_at = CASE WHEN r.ok THEN NULL WHEN r.gone THEN now()
                           WHEN d.attempts + 1 >= cardinality(s.retry_schedule) THEN NULL
                           ELSE now() + make_interval(secs => s.retry_schedule[d.attempts + 2]) END,
    lease_token = NULL
FROM unnest(%(ids)s::bigint[], %(ok)s::boolean[], %(gone)s::boolean[], %(status)s::integer[],
            %(error)s::text[], %(at)s::timestamptz[]) AS r(id, ok, gone, http_status, error, attempted_at),
     sequencing.webhook_subscriber s, {NOT_DURABLE}
WHERE d.id = r.id AND d.lease_token = %(token)s AND s.id = d.subscriber_id
RETURNING d.id, d.status
"""
# Rows this run claimed and never attempted: due again at once, their attempts unchanged.
RELEASE = """
UPDATE sequencing.webhook_delivery SET lease_token = NULL, next_attempt_at = now()
WHERE id = ANY (%s) AND lease_token = %s
"""
DISABLE = """
UPDATE sequencing.webhook_subscriber SET enabled = false, disabled_reason = %s
WHERE id = ANY (%s) AND enabled
RETURNING id
"""
# Seconds until the next delivery this process could claim (negative: due already), or null.
NEXT_DUE = """
SELECT extract(epoch FROM min(x.at) - now())::float8
FROM sequencing.webhook_subscriber s CROSS JOIN LATERAL (
    SELECT d.next_attempt_at AS at FROM sequencing.webhook_delivery d
    WHERE d.subscriber_id = s.id AND d.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery e
                      WHERE e.subscriber_id = d.subscriber_id AND e.shipment_id = d.shipment_id
                        AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
    ORDER BY d.next_attempt_at, d.outbox_id
    LIMIT 1
) x
WHERE s.enabled
"""


@dataclass(frozen=True)
class Claim:
    id: int
    subscriber_id: int
    event_id: str
    body: bytes
    attempt: int = 1  # this attempt's number (1 for the first)
    event_type: str = ""


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    attempted_at: datetime
    http_status: int | None
    error: str | None
    attempted: bool = True  # False: the run ended (or the worker failed) before the request was made

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def gone(self) -> bool:
        return self.http_status == 410


@dataclass
class NotifyReport:
    """What one notify run did."""
    delivered: int = 0
    failed: int = 0  # failed attempts that will be retried
    dead: int = 0  # deliveries parked after their last attempt
    disabled: int = 0  # subscribers disabled by 410 Gone
    lost_leases: int = 0  # outcomes not recorded: the lease had run out and moved on
    seconds: float = 0.0
    disabled_ids: list[int] = field(default_factory=list)


# --- HTTP ----------------------------------------------------------------------------------------

class HttpPoster:
    """POSTs from worker threads with a total deadline each; one keep-alive connection per thread and origin."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._watchdog = Watchdog("notify-watchdog")

    def close(self) -> None:
        self._watchdog.close()

    def _connections(self) -> dict:
        if not hasattr(self._local, "conns"):
            self._local.conns = {}
        return self._local.conns

    def _drop(self, origin: tuple) -> None:
        conn = self._connections().pop(origin, None)
        if conn is not None:
            conn.close()

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
        """Return (HTTP status, None) for an answer, or (None, reason) for a timeout or network error."""
        import http.client
        import urllib.parse

        deadline = time.monotonic() + timeout
        try:
            parts = urllib.parse.urlsplit(url)
            origin = (parts.scheme, parts.hostname, parts.port)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        except ValueError as exc:
            return None, f"invalid URL: {exc}"
        for attempt in (1, 2):
            conns = self._connections()
            conn = conns.get(origin)
            reused = conn is not None
            if conn is None:
                conn = conns[origin] = connection(parts.scheme, parts.hostname, parts.port, timeout)
            ticket = self._watchdog.watch(conn, deadline)
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                if self._watchdog.fired(ticket):
                    # The deadline cut the status line or the headers short: the end of the
                    # headers http.client saw was the shut socket, not the endpoint's answer.
                    raise TimeoutError
                status = response.status
                whole = _drain(response)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                fired = self._watchdog.release(ticket)
                self._drop(origin)
                if (reused and attempt == 1 and not fired and time.monotonic() < deadline
                        and isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected))):
                    continue  # the server had closed the idle keep-alive connection: once more, fresh
                if fired or isinstance(exc, TimeoutError):
                    return None, f"timed out after {timeout:g} s"
                return None, _describe(exc)
            if self._watchdog.release(ticket) or response.will_close or not whole:
                self._drop(origin)
            return status, None
        return None, "connection closed"  # not reached: the second pass always returns


def _drain(response) -> bool:
    """Read (and drop) the response body up to the cap; return True if it was read whole."""
    left = MAX_RESPONSE_BODY
    while left > 0:
        chunk = response.read(min(16384, left))
        if not chunk:
            return True
        left -= len(chunk)
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR] if type(exc).__name__ not in text else text[:MAX_ERROR]


# --- the run -------------------------------------------------------------------------------------

def _headers(sub: Subscriber, event_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    keys = [secret_key(sub.secret)]
    if sub.previous_secret:
        keys.append(secret_key(sub.previous_secret))
    return {
        "Content-Type": "application/json",
        "User-Agent": f"trackctl/{__version__}",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, event_id, timestamp, body),
    }


class _Gates:
    """Per-subscriber semaphores: at most `max_in_flight` requests to one endpoint at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[int, threading.BoundedSemaphore] = {}

    def gate(self, sub: Subscriber) -> threading.BoundedSemaphore:
        with self._lock:
            gate = self._gates.get(sub.id)
            if gate is None:
                gate = self._gates[sub.id] = threading.BoundedSemaphore(sub.max_in_flight)
            return gate


def _send(poster: HttpPoster, gates: _Gates, sub: Subscriber, claim: Claim, timeout: float,
          end: float | None, results: queue.SimpleQueue) -> None:
    """Make one attempt (worker thread) and put its outcome on `results`, whatever happens."""
    outcome = Outcome(claim, datetime.now(timezone.utc), None, None, attempted=False)
    try:
        made = _attempt(poster, gates, sub, claim, timeout, end)
        if made is not None:
            outcome = Outcome(claim, made[2], made[0], made[1])
    finally:
        results.put(outcome)


def _attempt(poster: HttpPoster, gates: _Gates, sub: Subscriber, claim: Claim, timeout: float,
             end: float | None) -> tuple[int | None, str | None, datetime] | None:
    with gates.gate(sub):
        # Counted from when the request really starts (it may have waited in the queue), and
        # never past the end of the run's budget; a row the budget leaves no time for is given
        # back unattempted rather than failed by a cut-short timeout.
        if end is not None:
            left = end - time.monotonic()
            if left < min(timeout, MIN_ATTEMPT):
                return None
            timeout = min(timeout, left)
        attempted_at = datetime.now(timezone.utc)
        attributes = {"trackctl.subscriber.id": sub.id, "trackctl.event.type": claim.event_type,
                      "trackctl.event.id": claim.event_id, "trackctl.delivery.attempt": claim.attempt,
                      **telemetry.http_attributes("POST", sub.url)}
        with telemetry.span("webhook delivery", attributes, kind="client") as traced:
            try:
                # The trace context rides in headers the signature does not cover (issue 15).
                headers = telemetry.inject_headers(_headers(sub, claim.event_id, claim.body))
                status, error = poster.post(sub.url, claim.body, headers, timeout)
            except Exception as exc:  # a worker never dies silently: the attempt is recorded as failed
                status, error = None, _describe(exc)
            traced.set("http.response.status_code", status)
            if status is None or status >= 400:
                traced.fail(str(status) if status is not None else "no answer")
    if status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    return status, error, attempted_at


def deliver(conn: psycopg.Connection, *, budget: float | None = None, follow: bool = False,
            concurrency: int = DEFAULT_CONCURRENCY, timeout: float = DEFAULT_TIMEOUT,
            stop: threading.Event | None = None,
            on_outcome: Callable[[Outcome, str], None] | None = None) -> NotifyReport:
    """Deliver due deliveries until none is due (or the budget ends); return what was done.

    Without `budget` the run ends as soon as nothing is due and nothing is in flight. With it,
    the run also waits for retries and new events falling due before the budget ends, and stops
    taking new work when it ends. `follow` keeps the run going (until `stop` or the budget) and
    wakes on new events through LISTEN. `on_outcome(outcome, new_status)` sees every recorded
    attempt (for logging).

    The main thread keeps up to PREFETCH x `concurrency` rows claimed, so a worker that finishes
    starts on the next row at once while the main thread records outcomes and claims more in
    batches; the lease covers that wait in the queue.
    """
    if concurrency < 1 or concurrency > 512:
        raise InvalidValue("--concurrency must be between 1 and 512")
    if not 0 < timeout <= 3600:
        raise InvalidValue("--timeout must be more than 0 and at most 3600 seconds")
    if budget is not None and budget <= 0:
        raise InvalidValue("--budget must be positive")
    started = time.monotonic()
    end = started + budget if budget is not None else None
    stop = stop or threading.Event()
    token = uuid.uuid4()
    report = NotifyReport()
    poster = HttpPoster()
    gates = _Gates()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notify")
    outstanding: dict[int, Claim] = {}  # claimed and not yet recorded (queued or in flight), by delivery id
    results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    per_subscriber: Counter[int] = Counter()
    subscribers: dict[int, Subscriber] = {}
    loaded_at = -SUBSCRIBERS_TTL
    rotation = itertools.count()
    limit = PREFETCH * concurrency
    conn.execute(f"LISTEN {CHANNEL}")
    try:
        while True:
            now = time.monotonic()
            stopping = stop.is_set() or (end is not None and end - now < min(timeout, MIN_ATTEMPT))
            if not stopping and len(outstanding) < limit:
                if now - loaded_at >= SUBSCRIBERS_TTL:
                    subscribers = {s.id: s for s in list_subscribers(conn, enabled_only=True)}
                    loaded_at = now
                request_timeout = timeout if end is None else min(timeout, max(end - now, 0.05))
                claims = _claim_round(conn, subscribers, limit - len(outstanding), per_subscriber,
                                      token, request_timeout, next(rotation))
                for claim in claims:
                    pool.submit(_send, poster, gates, subscribers[claim.subscriber_id], claim, timeout, end, results)
                    outstanding[claim.id] = claim
                    per_subscriber[claim.subscriber_id] += 1
            if outstanding:
                room = len(outstanding) < limit and not stopping
                outcomes = _gather(results, IDLE_CHECK if room else None, max(1, concurrency // 2))
                for outcome in outcomes:
                    outstanding.pop(outcome.claim.id)
                    per_subscriber[outcome.claim.subscriber_id] -= 1
                if outcomes:
                    _record(conn, outcomes, token, subscribers, report, on_outcome)
                continue
            if stopping:
                break
            # Idle: nothing outstanding, nothing claimable right now.
            remaining = None if end is None else end - time.monotonic()
            due = conn.execute(NEXT_DUE).fetchone()[0]
            if due is not None and due <= 0:
                due = 0.05  # due but held by another process's lease or a sibling: look again shortly
            if not follow:
                if remaining is None or due is None or due >= remaining:
                    break
            _wait_for_notify(conn, min(w for w in (due, remaining, RECHECK_SECONDS) if w is not None), stop)
    finally:
        # Normal end: nothing is outstanding. On an exception (SIGTERM, lost connection) the
        # unrecorded rows keep their lease and fall due again when it ends.
        pool.shutdown(wait=False, cancel_futures=True)
        poster.close()
        try:
            conn.execute(f"UNLISTEN {CHANNEL}")
        except psycopg.Error:
            pass
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _gather(results: queue.SimpleQueue, timeout: float | None, enough: int) -> list[Outcome]:
    """Return the outcomes that arrive: the first within `timeout`, then more for up to GATHER seconds.

    Recording and claiming in batches keeps the main thread's round trips few; the workers do not
    wait meanwhile, they take the rows already queued for them.
    """
    try:
        outcomes = [results.get(timeout=timeout)]
    except queue.Empty:
        return []
    until = time.monotonic() + GATHER
    while len(outcomes) < enough:
        left = until - time.monotonic()
        try:
            outcomes.append(results.get(timeout=left) if left > 0 else results.get_nowait())
        except queue.Empty:
            break
    return outcomes


def _claim_round(conn: psycopg.Connection, subscribers: dict[int, Subscriber], free: int,
                 per_subscriber: Counter, token: uuid.UUID, request_timeout: float, turn: int) -> list[Claim]:
    """Claim up to `free` due deliveries, each subscriber within its share; start with a different one each round."""
    ids = sorted(subscribers)
    if not ids:
        return []
    start = turn % len(ids)
    # A claimed row may wait in the queue behind PREFETCH - 1 others of each worker before its
    # request starts: the lease covers that, the request itself, and the time to record it.
    lease = timedelta(seconds=PREFETCH * request_timeout + LEASE_MARGIN)
    claims: list[Claim] = []
    for sub_id in ids[start:] + ids[:start]:
        room = min(PREFETCH * subscribers[sub_id].max_in_flight - per_subscriber[sub_id], free - len(claims))
        if room <= 0:
            continue
        rows = conn.execute(CLAIM, {"subscriber": sub_id, "limit": room, "lease": lease, "token": token}).fetchall()
        claims.extend(Claim(r[0], r[1], r[2], r[3].encode(), r[4], r[5]) for r in rows)
        if len(claims) >= free:
            break
    return claims


def _record(conn: psycopg.Connection, outcomes: list[Outcome], token: uuid.UUID,
            subscribers: dict[int, Subscriber], report: NotifyReport,
            on_outcome: Callable[[Outcome, str], None] | None) -> None:
    unattempted = [o.claim.id for o in outcomes if not o.attempted]
    if unattempted:
        conn.execute(RELEASE, (unattempted, token))
        outcomes = [o for o in outcomes if o.attempted]
        if not outcomes:
            return
    params = {
        "ids": [o.claim.id for o in outcomes], "ok": [o.ok for o in outcomes], "gone": [o.gone for o in outcomes],
        "status": [o.http_status for o in outcomes], "error": [None if o.ok else (o.error or "")[:MAX_ERROR] for o in outcomes],
        "at": [o.attempted_at for o in outcomes], "token": token,
    }
    gone = sorted({o.claim.subscriber_id for o in outcomes if o.gone})
    disabled = []
    if not gone:
        statuses = dict(conn.execute(RECORD, params).fetchall())  # one statement, its own transaction
    else:
        with conn.transaction():
            statuses = dict(conn.execute(RECORD, params).fetchall())
            reason = f"the endpoint answered 410 Gone at {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
            disabled = [r[0] for r in conn.execute(DISABLE, (reason, gone)).fetchall()]
    for o in outcomes:
        new_status = statuses.get(o.claim.id)
        if new_status is None:
            report.lost_leases += 1
        elif o.ok:
            report.delivered += 1
        elif new_status == "dead":
            report.dead += 1
        else:
            report.failed += 1
        if on_outcome is not None:
            on_outcome(o, new_status or "lease lost")
    report.disabled += len(disabled)
    report.disabled_ids.extend(disabled)
    for sub_id in disabled:
        subscribers.pop(sub_id, None)  # claim nothing more for it in this run


def _wait_for_notify(conn: psycopg.Connection, seconds: float | None, stop: threading.Event) -> None:
    """Sleep until a NOTIFY on the outbox channel, `seconds` pass, or `stop` is set (checked every second)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if left <= 0:
            return
        for _ in conn.notifies(timeout=left, stop_after=1):
            return
