"""Per-subscriber lanes of a notify run: each subscriber's own worker threads, in-flight cap and breaker.

A lane's slowness costs that lane only. Each subscriber has its own queue and its own threads
(at most its `max_in_flight`, and at most the run's `--concurrency`), so an endpoint that never
answers or whose host does not resolve holds its own workers, never another subscriber's. When
a lane's requests keep failing without an answer (timeouts, refused connections, host not found:
BREAKER_AFTER in a row), its breaker opens: the lane makes no request for a back-off that starts
at BREAKER_REST seconds and doubles up to BREAKER_MAX_REST, then lets one probe through; any HTTP
answer closes the breaker again. After a single failure without an answer the lane already
makes one request at a time until an answer comes, so requests that time out together do not
send fresh ones after them. Rows a lane holds while its breaker is open are handed back
unattempted (their attempts and schedule untouched).

Workers are daemon threads, so a stopped run never waits for a request that cannot be ended (a
host-name lookup, for one); the run abandons them, and the HTTP client ends the rest at once.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from . import queries, telemetry
from .http_client import HttpClient, TransportError
from .webhooks import Subscriber, secret_key, signature_header

SQL = queries.load("notify")

MAX_RESPONSE_BODY = 64 * 1024  # of a subscriber's answer only this much is read; the rest is dropped
MIN_ATTEMPT = 1.0  # seconds of budget a request needs (or the whole timeout, if shorter) to be made
BREAKER_AFTER = 3  # failed attempts without an HTTP answer in a row that open a lane's breaker
BREAKER_REST = 5.0  # seconds of the first rest; each failed probe doubles it
BREAKER_MAX_REST = 300.0


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
    attempted: bool = True  # False: never made, or abandoned when the run stopped: the row is released

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def gone(self) -> bool:
        return self.http_status == 410


def signed_headers(sub: Subscriber, event_id: str, body: bytes) -> dict[str, str]:
    """Return the Standard Webhooks headers of one attempt (two signatures during a rotation)."""
    timestamp = int(time.time())
    keys = [secret_key(sub.secret)]
    if sub.previous_secret:
        keys.append(secret_key(sub.previous_secret))
    return {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, event_id, timestamp, body),
    }


def post_event(client: HttpClient, sub: Subscriber, event_id: str, body: bytes,
               timeout: float) -> tuple[int | None, str | None]:
    """POST one signed event; return (HTTP status, error) — error None only for a 2xx."""
    # The trace context (when tracing is on) rides in headers the signature does not cover (issue 15).
    headers = telemetry.inject_headers(signed_headers(sub, event_id, body))
    try:
        response = client.request("POST", sub.url, headers=headers, body=body,
                                  timeout=timeout, max_body=MAX_RESPONSE_BODY, cut_body=True)
    except TransportError as exc:
        return None, str(exc)
    status = response.status
    return status, None if 200 <= status < 300 else f"HTTP {status}"


class Breaker:
    """Opens after BREAKER_AFTER failures without an answer in a row; rests, then lets one probe through."""

    def __init__(self) -> None:
        self.failures = 0
        self.rest = BREAKER_REST
        self.open_until = 0.0  # time.monotonic() until which no request is made
        self.opened = 0  # times it opened in this run (for the run's report)

    def allowed(self, now: float) -> int:
        """Requests the lane may have in flight now: unbounded while all is well, 1 after a failure
        without an answer (no new request joins a batch that is timing out together), 0 while
        resting, then 1 probe."""
        if self.failures == 0:
            return 1 << 30
        if self.failures < BREAKER_AFTER:
            return 1
        return 0 if now < self.open_until else 1

    def record(self, answered: bool, now: float) -> None:
        if answered:
            self.failures, self.rest = 0, BREAKER_REST
            return
        self.failures += 1
        if self.failures == BREAKER_AFTER or (self.failures > BREAKER_AFTER and now >= self.open_until):
            if self.failures > BREAKER_AFTER:
                self.rest = min(self.rest * 2, BREAKER_MAX_REST)  # the probe failed too
            self.open_until = now + self.rest
            self.opened += 1


class Lane:
    """One subscriber's queue, workers and breaker. The run's main thread offers claims; workers report outcomes."""

    def __init__(self, sub: Subscriber, width: int, client: HttpClient, timeout: float, end: float | None,
                 results) -> None:
        self.sub = sub
        self.width = width
        self.breaker = Breaker()
        self.outstanding = 0  # claimed and not yet reported (queued or in flight)
        self._client, self._timeout, self._end, self._results = client, timeout, end, results
        self._queue: collections.deque[Claim] = collections.deque()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self._in_flight = 0
        self._closed = False

    def room(self, now: float, prefetch: int) -> int:
        """How many more rows the main thread may claim for this lane now."""
        with self._cond:
            cap = min(self.width, self.breaker.allowed(now))
            return max(0, prefetch * cap - self.outstanding) if cap else 0

    def offer(self, claims: list[Claim]) -> None:
        with self._cond:
            self._queue.extend(claims)
            self.outstanding += len(claims)
            wanted = min(self.width, len(self._queue) + self._in_flight)
            while self._threads < wanted and self._idle < len(self._queue):
                self._threads += 1
                self._idle += 1
                threading.Thread(target=self._work, name=f"notify-{self.sub.id}", daemon=True).start()
            self._cond.notify(len(claims))

    def reported(self) -> None:
        """The main thread took one outcome of this lane."""
        with self._cond:
            self.outstanding -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._in_flight >= self._cap()):
                    self._cond.wait(0.5)
                if self._closed:
                    self._idle -= 1
                    self._threads -= 1
                    return
                claim = self._queue.popleft()
                self._in_flight += 1
                self._idle -= 1
            outcome = Outcome(claim, datetime.now(timezone.utc), None, None, attempted=False)
            try:
                outcome = self._attempt(claim) or outcome
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._idle += 1
                    self._cond.notify()
                self._results.put(outcome)

    def _cap(self) -> int:
        """Requests allowed in flight now (the queue is also drained when the breaker rests: see _attempt)."""
        allowed = self.breaker.allowed(time.monotonic())
        return self.width if allowed == 0 else min(self.width, allowed)

    def _attempt(self, claim: Claim) -> Outcome | None:
        """Make one attempt; None: not made (the breaker rests, the budget is spent, the run stopped)."""
        timeout = self._timeout
        now = time.monotonic()
        with self._cond:
            if self.breaker.allowed(now) == 0:
                return None
        if self._end is not None:
            # Counted from when the request really starts, and never past the end of the run's
            # budget; a row the budget leaves no time for is given back rather than failed.
            left = self._end - now
            if left < min(timeout, MIN_ATTEMPT):
                return None
            timeout = min(timeout, left)
        if self._client.aborted:
            return None
        attempted_at = datetime.now(timezone.utc)
        attributes = {"trackctl.subscriber.id": self.sub.id, "trackctl.event.type": claim.event_type,
                      "trackctl.event.id": claim.event_id, "trackctl.delivery.attempt": claim.attempt,
                      **telemetry.http_attributes("POST", self.sub.url)}
        with telemetry.span("webhook delivery", attributes, kind="client") as traced:
            try:
                status, error = post_event(self._client, self.sub, claim.event_id, claim.body, timeout)
            except Exception as exc:  # a worker never dies silently: the attempt is recorded as failed
                status, error = None, f"{type(exc).__name__}: {exc}"[:300]
            traced.set("http.response.status_code", status)
            if status is None or status >= 400:
                traced.fail(str(status) if status is not None else "no answer")
        if self._client.aborted and status is None:
            return None  # abandoned by the stop: not an attempt, and not the endpoint's fault
        with self._cond:
            self.breaker.record(status is not None, time.monotonic())
        return Outcome(claim, attempted_at, status, error)


# --- `webhook test`: one signed ping through the same client and signing -------------------------

PING_TYPE = "webhook.test"


@dataclass(frozen=True)
class PingResult:
    subscriber_id: int
    url: str  # as shown (credentials masked)
    event_id: str
    status: int | None  # the HTTP status of the answer; None: no answer (see error)
    error: str | None  # None only for a 2xx
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def ping_subscriber(conn, subscriber_id: int, *, timeout: float = 10.0) -> PingResult:
    """Send one signed `webhook.test` event to a subscriber (enabled or not) and return how it answered.

    Nothing is written to the outbox or the deliveries: the ping is not an event of any shipment.
    """
    import json

    from .webhooks import get_subscriber, shown_url

    if not 0 < timeout <= 3600:
        from .errors import InvalidValue, param

        raise InvalidValue(f"{param('timeout')} must be more than 0 and at most 3600 seconds", value=timeout)
    sub = get_subscriber(conn, subscriber_id)
    event_id, timestamp = conn.execute(SQL.new_event_id).fetchone()
    body = json.dumps({"id": event_id, "type": PING_TYPE, "timestamp": timestamp,
                       "data": {"subscriber_id": sub.id}}, separators=(",", ":")).encode()
    client = HttpClient(pool_size=1)
    started = time.monotonic()
    try:
        status, error = post_event(client, sub, event_id, body, timeout)
    finally:
        client.close()
    return PingResult(sub.id, shown_url(sub.url), event_id, status, error, round(time.monotonic() - started, 3))
