"""Delivering outbox events to webhook subscribers (Standard Webhooks), at least once, in order per shipment.

How one `notify` process works:

- The main thread owns the database connection. It claims due deliveries with
  `FOR UPDATE SKIP LOCKED` and leases them (the row's `next_attempt_at` moves to the end of the
  lease and `lease_token` names this process), hands each to its subscriber's lane, and records
  the outcomes in one statement per round. Several processes on several hosts share the work
  this way and never hold the same row at the same time.
- Each subscriber has its own lane (trackctl/lanes.py): its own worker threads, at most its
  `max_in_flight` (and `--concurrency`) requests in flight, and its own breaker. A subscriber
  that never answers, or whose host does not resolve, slows only itself.
- A lease lasts longer than a request can (timeout + margin), and only as many rows are claimed
  as a lane has room for, so a request starts soon after its claim. A process killed mid-run
  leaves its rows pending; they fall due again when their lease ends. Nothing is marked done
  without a 2xx answer, so at worst a delivery is sent twice (consumers deduplicate on the
  event id, which is also the `webhook-id` header).
- Per shipment and subscriber, a delivery is claimed only when no earlier event of that shipment
  is still pending for that subscriber: a later event waits while an earlier one is retried.
- `stop` (an Event: Ctrl-C, SIGTERM) ends the run within about a second: requests in flight are
  abandoned (their sockets shut) and every row not finished is released, due again at once,
  its attempts unchanged.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from . import outbox, queries
from .errors import InvalidValue, param
from .lanes import MIN_ATTEMPT, Claim, Lane, Outcome
from .webhooks import Subscriber, list_subscribers

__all__ = ["Claim", "NotifyReport", "Outcome", "deliver"]

SQL = queries.load("notify")

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 10.0
LEASE_MARGIN = 10.0  # seconds a lease outlives the request deadline: time to record the outcome
MAX_ERROR = 300
IDLE_CHECK = 0.25  # seconds between looks for new work, and for `stop`, while requests are out
PREFETCH = 2  # rows claimed per lane slot: one in flight, one queued
GATHER = 0.01  # seconds the main thread collects outcomes before recording them in one statement
SUBSCRIBERS_TTL = 1.0  # seconds the subscriber list (URLs, secrets, caps) is reused
ABANDON_WAIT = 1.0  # seconds a stopped run waits for its abandoned requests to report


@dataclass
class NotifyReport:
    """What one notify run did."""
    delivered: int = 0
    failed: int = 0  # failed attempts that will be retried
    dead: int = 0  # deliveries parked after their last attempt
    disabled: int = 0  # subscribers disabled by 410 Gone
    lost_leases: int = 0  # outcomes not recorded: the lease had run out and moved on
    released: int = 0  # rows given back unattempted (stopped run, resting breaker, spent budget)
    breakers: int = 0  # times a subscriber's breaker opened
    stopped: bool = False  # the run ended because `stop` was set
    seconds: float = 0.0
    disabled_ids: list[int] = field(default_factory=list)


def deliver(conn: psycopg.Connection, *, budget: float | None = None, follow: bool = False,
            concurrency: int = DEFAULT_CONCURRENCY, timeout: float = DEFAULT_TIMEOUT,
            stop: threading.Event | None = None,
            on_outcome: Callable[[Outcome, str], None] | None = None,
            only_subscribers: Collection[int] | None = None) -> NotifyReport:
    """Deliver due deliveries until none is due (or the budget ends, or `stop` is set); return what was done.

    Without `budget` the run ends as soon as nothing is due and nothing is in flight
    (subscribers whose breaker rests are left for the next run). With it, the run also waits
    for retries and new events falling due before the budget ends, and stops taking new work
    when it ends. `follow` keeps the run going (until `stop` or the budget) and wakes on new
    events through LISTEN. `concurrency` caps each subscriber's requests in flight (with its own
    `max_in_flight`). `on_outcome(outcome, new_status)` sees every recorded attempt.
    `only_subscribers` limits the run to those subscribers' deliveries (the demo's own receiver).
    """
    if concurrency < 1 or concurrency > 512:
        raise InvalidValue(f"{param('concurrency')} must be between 1 and 512", value=concurrency)
    if not 0 < timeout <= 3600:
        raise InvalidValue(f"{param('timeout')} must be more than 0 and at most 3600 seconds", value=timeout)
    if budget is not None and budget <= 0:
        raise InvalidValue(f"{param('budget')} must be positive", value=budget)
    from .http_client import HttpClient

    started = time.monotonic()
    run = _Run(conn, concurrency, timeout, started + budget if budget is not None else None,
               stop or threading.Event(), on_outcome, HttpClient(pool_size=concurrency))
    run.only = None if only_subscribers is None else set(only_subscribers)
    outbox.listen(conn)
    try:
        run.loop(follow)
    finally:
        run.finish()
    run.report.seconds = round(time.monotonic() - started, 3)
    return run.report


class _Run:
    def __init__(self, conn: psycopg.Connection, concurrency: int, timeout: float, end: float | None,
                 stop: threading.Event, on_outcome, client) -> None:
        self.conn, self.concurrency, self.timeout, self.end, self.stop = conn, concurrency, timeout, end, stop
        self.on_outcome, self.client = on_outcome, client
        self.token = uuid.uuid4()
        self.report = NotifyReport()
        self.results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.outstanding: dict[int, Claim] = {}  # claimed, not yet recorded, by delivery id
        self.lanes: dict[int, Lane] = {}
        self.subscribers: dict[int, Subscriber] = {}
        self.loaded_at = -SUBSCRIBERS_TTL
        self.turn = 0
        self.only: set[int] | None = None  # deliver to these subscribers only (None: to all)

    def loop(self, follow: bool) -> None:
        while True:
            now = time.monotonic()
            if self.stop.is_set():
                self.report.stopped = True
                return
            spent = self.end is not None and self.end - now < min(self.timeout, MIN_ATTEMPT)
            if not spent:
                self._claim_round(now)
            if self.outstanding:
                outcomes = _gather(self.results, IDLE_CHECK, max(1, self.concurrency // 2))
                if outcomes:
                    self._record(outcomes)
                continue
            if spent:
                return
            # Idle: nothing outstanding, nothing claimable right now.
            remaining = None if self.end is None else self.end - time.monotonic()
            resting = [sid for sid, lane in self.lanes.items() if lane.room(time.monotonic(), 1) == 0]
            due = self.conn.execute(SQL.next_due, {"resting": resting}).fetchone()[0]
            if due is not None and due <= 0:
                due = 0.05  # due but held by another process's lease or a sibling: look again shortly
            waits = [w for w in (due, self._breaker_wake(resting)) if w is not None]
            if not follow and (remaining is None or not waits or min(waits) >= remaining):
                return
            outbox.wait_for_events(self.conn, lambda: not self.stop.is_set(),
                                   min(w for w in (*waits, remaining, outbox.RECHECK_SECONDS) if w is not None))

    def _breaker_wake(self, resting: list[int]) -> float | None:
        """Seconds until the first resting breaker lets a probe through (None: none rests)."""
        if not resting:
            return None
        now = time.monotonic()
        return max(0.05, min(self.lanes[sid].breaker.open_until for sid in resting) - now)

    def _lane(self, sub: Subscriber) -> Lane:
        lane = self.lanes.get(sub.id)
        if lane is None:
            lane = self.lanes[sub.id] = Lane(sub, min(sub.max_in_flight, self.concurrency), self.client,
                                             self.timeout, self.end, self.results)
        else:
            lane.sub = sub  # URL, secrets or cap may have changed (`webhook set`, a rotation)
            lane.width = min(sub.max_in_flight, self.concurrency)
        return lane

    def _claim_round(self, now: float) -> None:
        """Claim what each lane has room for; start with a different subscriber each round."""
        if now - self.loaded_at >= SUBSCRIBERS_TTL:
            self.subscribers = {s.id: s for s in list_subscribers(self.conn, enabled_only=True)
                                if self.only is None or s.id in self.only}
            self.loaded_at = now
        ids = sorted(self.subscribers)
        if not ids:
            return
        start = self.turn % len(ids)
        self.turn += 1
        request_timeout = self.timeout if self.end is None else min(self.timeout, max(self.end - now, 0.05))
        # A claimed row may wait in its lane's queue behind one other per slot before its request
        # starts: the lease covers that, the request itself, and the time to record it.
        lease = timedelta(seconds=PREFETCH * request_timeout + LEASE_MARGIN)
        for sub_id in ids[start:] + ids[:start]:
            lane = self._lane(self.subscribers[sub_id])
            room = lane.room(now, PREFETCH)
            if room <= 0:
                continue
            rows = self.conn.execute(SQL.claim, {"subscriber": sub_id, "limit": room, "lease": lease,
                                                 "token": self.token}).fetchall()
            claims = [Claim(r[0], r[1], r[2], r[3].encode(), r[4], r[5]) for r in rows]
            if claims:
                for claim in claims:
                    self.outstanding[claim.id] = claim
                lane.offer(claims)

    def _record(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.outstanding.pop(o.claim.id, None)
            lane = self.lanes.get(o.claim.subscriber_id)
            if lane is not None:
                lane.reported()
        unattempted = [o.claim.id for o in outcomes if not o.attempted]
        if unattempted:
            self.conn.execute(SQL.release, {"ids": unattempted, "token": self.token})
            self.report.released += len(unattempted)
            outcomes = [o for o in outcomes if o.attempted]
            if not outcomes:
                return
        params = {
            "ids": [o.claim.id for o in outcomes], "ok": [o.ok for o in outcomes], "gone": [o.gone for o in outcomes],
            "status": [o.http_status for o in outcomes],
            "error": [None if o.ok else (o.error or "")[:MAX_ERROR] for o in outcomes],
            "at": [o.attempted_at for o in outcomes], "token": self.token,
        }
        gone = sorted({o.claim.subscriber_id for o in outcomes if o.gone})
        disabled = []
        if not gone:
            statuses = dict(self.conn.execute(SQL.record, params).fetchall())  # one statement, its own transaction
        else:
            with self.conn.transaction():
                statuses = dict(self.conn.execute(SQL.record, params).fetchall())
                reason = f"the endpoint answered 410 Gone at {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
                disabled = [r[0] for r in self.conn.execute(SQL.disable, {"reason": reason, "ids": gone}).fetchall()]
        for o in outcomes:
            new_status = statuses.get(o.claim.id)
            if new_status is None:
                self.report.lost_leases += 1
            elif o.ok:
                self.report.delivered += 1
            elif new_status == "dead":
                self.report.dead += 1
            else:
                self.report.failed += 1
            if self.on_outcome is not None:
                self.on_outcome(o, new_status or "lease lost")
        self.report.disabled += len(disabled)
        self.report.disabled_ids.extend(disabled)
        for sub_id in disabled:
            self.subscribers.pop(sub_id, None)  # claim nothing more for it in this run
            self.loaded_at = time.monotonic()  # and do not load it back before the list is read again

    def finish(self) -> None:
        """End the run: abandon what is in flight, record what reports in time, release the rest."""
        self.client.abort()
        for lane in self.lanes.values():
            lane.close()
        try:
            until = time.monotonic() + ABANDON_WAIT
            while self.outstanding and time.monotonic() < until:
                outcomes = _gather(self.results, max(0.01, until - time.monotonic()), 1 << 30)
                if outcomes:
                    self._record(outcomes)
            if self.outstanding:  # still in a request that cannot be cut short (a host-name lookup)
                ids = list(self.outstanding)
                self.conn.execute(SQL.release, {"ids": ids, "token": self.token})
                self.report.released += len(ids)
                self.outstanding.clear()
            outbox.unlisten(self.conn)
        except psycopg.Error:
            pass  # the connection is gone: the rows' leases end by themselves and they fall due again
        finally:
            self.report.breakers = sum(lane.breaker.opened for lane in self.lanes.values())
            self.client.close()


def _gather(results: queue.SimpleQueue, timeout: float, enough: int) -> list[Outcome]:
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

