"""The demo: the whole system running for a minute on whatever database is configured.

It creates a simulator carrier whose parcels advance every second, with a pool of its own, refills
that pool, assigns a few hundred orders in one batch, subscribes a webhook receiver it runs on
127.0.0.1, and then runs poll and notify cycles (recorded as runs, through the same job functions
as cron's) until every demo shipment is delivered and every event has reached the receiver. The
receiver's subscription is removed at the end, so nothing keeps trying to reach it afterwards.

It keeps to what it created. Its carrier and its subscriber are marked `demo` (migration 0006):
events of a demo carrier's shipments are queued for demo subscribers only, and a demo subscriber
gets nothing else, so the user's subscribers receive none of the demo's events and the demo's
notify never works through (or waits behind) the user's deliveries; it delivers to its own
subscriber only. Its refill fills its own pool, its poll polls its own carrier. Ctrl-C or SIGTERM
stops it within a cycle: the job under way gives back what it holds and is recorded as
interrupted, and the subscription is removed all the same.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from . import interrupts, jobs, queries
from .assign import assign_lines
from .batch_input import parse_records
from .carriers import add_carrier, list_carriers, set_carrier
from .pools import PoolLevel, create_pool, get_pool, pool_levels, set_target
from .errors import NotFound

DEMO_CARRIER = "demo-express"
DEMO_POOL = "demo-express"  # the demo's own pool: it never takes codes from the user's pools
DEMO_STEP = "1s"  # the simulator moves each parcel one status further every second
DEMO_INTERVALS = {"pending": 1, "in_transit": 1, "out_for_delivery": 1, "failed_attempt": 1,
                  "available_for_pickup": 1, "exception": 1}
DEMO_CONCURRENCY = 16
TIME_LIMIT = 40.0  # seconds of poll and notify cycles at most: the demo stays under a minute
POLL_BUDGET = 5.0

SQL = queries.load("demo")


@dataclass(frozen=True)
class Cycle:
    """Where the demo stands after one poll and notify cycle."""
    number: int  # this cycle's number, from 1
    shipments: int  # the demo's shipments
    delivered: int  # of them, delivered by now
    polled: int  # carrier requests so far
    events: int  # new carrier events so far
    webhooks: int  # deliveries the local receiver has accepted so far
    seconds: float  # since the first cycle began, to a tenth


@dataclass(frozen=True)
class DemoSummary:
    orders: int
    new_codes: int
    refilled: int
    delivered: int
    polled: int
    events: int
    webhooks: int
    cycles: int
    complete: bool  # every demo shipment delivered and every webhook received
    pools: list[PoolLevel]
    seconds: float


class WebhookReceiver:
    """A local HTTP endpoint that accepts every webhook (204) and counts them."""

    def __init__(self) -> None:
        receiver = self
        self.count = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass  # quiet: the demo reports counts

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-webhooks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/trackctl-demo"

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def prepare_carrier(conn: psycopg.Connection, orders: int = 300) -> None:
    """Create the demo's pool and carrier (or bring older ones up to date), marked as the demo's."""
    settings = {"adapter": "simulator", "options": {"step": DEMO_STEP, "seed": "7"}, "intervals": DEMO_INTERVALS,
                "max_concurrency": DEMO_CONCURRENCY}
    with conn.transaction():
        try:
            get_pool(conn, DEMO_POOL)
            set_target(conn, DEMO_POOL, orders)
        except NotFound:
            create_pool(conn, DEMO_POOL, orders)
        if DEMO_CARRIER in {c.name for c in list_carriers(conn)}:
            set_carrier(conn, DEMO_CARRIER, pool=DEMO_POOL, **settings)
        else:
            add_carrier(conn, DEMO_CARRIER, pool=DEMO_POOL, **settings)
        conn.execute(SQL.mark_carrier_demo, (DEMO_CARRIER,))


def run_demo(conn: psycopg.Connection, orders: int = 300, *,
             on_cycle: Callable[[Cycle], None] | None = None, time_limit: float = TIME_LIMIT,
             stop: Any = None) -> DemoSummary:
    """Run the demo on `conn`; call `on_cycle` after every poll and notify cycle; return a summary.

    `stop` (default `interrupts.STOP`) ends it after the job under way, which records itself as
    interrupted; the demo then removes its subscription and raises that job's problem.
    """
    from .webhooks import add_subscriber, remove_subscriber

    stop = interrupts.STOP if stop is None else stop
    started = time.monotonic()
    prepare_carrier(conn, orders)
    first = jobs.refill(conn, DEMO_POOL, stop=stop)
    first.raise_problem()
    refilled = first.counts.get("generated", 0)
    # Order ids of this demo run: a second demo has fresh shipments to follow, not delivered ones.
    prefix = f"demo-{int(time.time() * 1000):x}-"
    lines = "".join(f"{prefix}{n:05d},{DEMO_CARRIER}\n" for n in range(1, orders + 1))
    outcomes = list(assign_lines(conn, parse_records(io.BytesIO(lines.encode()), "csv")))
    new = sum(1 for o in outcomes if o.assignment and o.assignment.new)

    polled = events = 0
    cycle = shipments = delivered = pending = 0
    with WebhookReceiver() as receiver:
        with conn.transaction():  # marked in the transaction that creates it: never a moment unmarked
            subscriber = add_subscriber(conn, receiver.url, retry_schedule=[0, 1, 1, 2])
            conn.execute(SQL.mark_subscriber_demo, (subscriber.id,))
        try:
            while True:
                cycle += 1
                polling = jobs.poll(conn, carrier=DEMO_CARRIER, budget=POLL_BUDGET, stop=stop)
                polled += polling.data.polled
                events += sum(c.new_events for c in polling.data.carriers)
                if stop.is_set():
                    polling.raise_problem()
                sending = jobs.notify(conn, only_subscribers=[subscriber.id], stop=stop)
                if stop.is_set():
                    sending.raise_problem()
                shipments, delivered = conn.execute(SQL.demo_progress, (prefix + "%",)).fetchone()
                pending = conn.execute(SQL.pending_for, (subscriber.id,)).fetchone()[0]
                if on_cycle:
                    on_cycle(Cycle(cycle, shipments, delivered, polled, events, receiver.count,
                                   round(time.monotonic() - started, 1)))
                if (delivered == shipments and pending == 0) or time.monotonic() - started > time_limit:
                    break
                if polling.data.polled == 0 and sending.data.delivered == 0:
                    stop.wait(0.3)  # nothing due yet: the simulator moves parcels on once a second
        finally:
            with interrupts.deferred():
                remove_subscriber(conn, subscriber.id)
        webhooks = receiver.count
    again = jobs.refill(conn, DEMO_POOL, stop=stop)
    again.raise_problem()
    return DemoSummary(orders, new, refilled + again.counts.get("generated", 0), delivered, polled, events,
                       webhooks, cycle, delivered == shipments and pending == 0, pool_levels(conn, DEMO_POOL),
                       round(time.monotonic() - started, 1))
