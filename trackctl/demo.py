"""The demo: the whole system running for a minute on whatever database is configured.

It creates a simulator carrier whose parcels advance every second, refills, assigns a few hundred
orders in one batch, subscribes a webhook receiver it runs on 127.0.0.1, and then runs poll and
notify cycles (recorded as runs, like cron's) until every demo shipment is delivered and every
event has reached the receiver. The receiver's subscription is removed at the end, so nothing
keeps trying to reach it afterwards.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from .assign import assign_lines
from .batch_input import parse_records
from .carriers import add_carrier, list_carriers, set_carrier
from .pools import PoolLevel, pool_levels, refill
from .runs import recorded_run

DEMO_CARRIER = "demo-express"
DEMO_STEP = "1s"  # the simulator moves each parcel one status further every second
DEMO_INTERVALS = {"pending": 1, "in_transit": 1, "out_for_delivery": 1, "failed_attempt": 1,
                  "available_for_pickup": 1, "exception": 1}
DEMO_CONCURRENCY = 16
TIME_LIMIT = 40.0  # seconds of poll and notify cycles at most: the demo stays under a minute
POLL_BUDGET = 5.0

DEMO_PROGRESS = """
SELECT count(*), count(*) FILTER (WHERE status = 'delivered')
FROM sequencing.tracking WHERE order_id LIKE %s
"""
PENDING_FOR = "SELECT count(*) FROM sequencing.webhook_delivery WHERE subscriber_id = %s AND status = 'pending'"


@dataclass(frozen=True)
class Cycle:
    """Where the demo stands after one poll and notify cycle."""
    number: int
    shipments: int
    delivered: int
    polled: int  # carrier requests so far
    events: int  # new carrier events so far
    webhooks: int  # deliveries the local receiver has accepted so far
    seconds: float


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


def prepare_carrier(conn: psycopg.Connection) -> None:
    """Create the demo carrier (or bring an older one up to date) with a fast simulator."""
    settings = {"adapter": "simulator", "options": {"step": DEMO_STEP, "seed": "7"}, "intervals": DEMO_INTERVALS,
                "max_concurrency": DEMO_CONCURRENCY}
    if DEMO_CARRIER in {c.name for c in list_carriers(conn)}:
        set_carrier(conn, DEMO_CARRIER, **settings)
    else:
        add_carrier(conn, DEMO_CARRIER, **settings)


def run_demo(conn: psycopg.Connection, orders: int = 300, *,
             on_cycle: Callable[[Cycle], None] | None = None, time_limit: float = TIME_LIMIT) -> DemoSummary:
    """Run the demo on `conn`; call `on_cycle` after every poll and notify cycle; return a summary."""
    from .notify import deliver
    from .poll import poll
    from .webhooks import add_subscriber, remove_subscriber

    started = time.monotonic()
    prepare_carrier(conn)
    with recorded_run(conn, "refill") as run:
        refilled = sum(r.generated for r in refill(conn))
        run.count(generated=refilled)
    # Order ids of this demo run: a second demo has fresh shipments to follow, not delivered ones.
    prefix = f"demo-{int(time.time() * 1000):x}-"
    lines = "".join(f"{prefix}{n:05d},{DEMO_CARRIER}\n" for n in range(1, orders + 1))
    outcomes = list(assign_lines(conn, parse_records(io.BytesIO(lines.encode()), "csv")))
    new = sum(1 for o in outcomes if o.assignment and o.assignment.new)

    polled = events = 0
    cycle = shipments = delivered = pending = 0
    with WebhookReceiver() as receiver:
        subscriber = add_subscriber(conn, receiver.url, retry_schedule=[0, 1, 1, 2])
        try:
            while True:
                cycle += 1
                with recorded_run(conn, "poll") as run:
                    report = poll(conn, carrier=DEMO_CARRIER, budget=POLL_BUDGET)
                    run.count(polled=report.polled, new_events=sum(c.new_events for c in report.carriers))
                polled += report.polled
                events += sum(c.new_events for c in report.carriers)
                with recorded_run(conn, "notify") as run:
                    sent = deliver(conn)
                    run.count(delivered=sent.delivered, failed=sent.failed)
                shipments, delivered = conn.execute(DEMO_PROGRESS, (prefix + "%",)).fetchone()
                pending = conn.execute(PENDING_FOR, (subscriber.id,)).fetchone()[0]
                if on_cycle:
                    on_cycle(Cycle(cycle, shipments, delivered, polled, events, receiver.count,
                                   round(time.monotonic() - started, 1)))
                if (delivered == shipments and pending == 0) or time.monotonic() - started > time_limit:
                    break
                if report.polled == 0 and sent.delivered == 0:
                    time.sleep(0.3)  # nothing due yet: the simulator moves parcels on once a second
        finally:
            remove_subscriber(conn, subscriber.id)
        webhooks = receiver.count
    with recorded_run(conn, "refill") as run:
        again = sum(r.generated for r in refill(conn))
        run.count(generated=again)
    return DemoSummary(orders, new, refilled + again, delivered, polled, events, webhooks, cycle,
                       delivered == shipments and pending == 0, pool_levels(conn),
                       round(time.monotonic() - started, 1))
