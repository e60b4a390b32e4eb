"""Two hosts running the whole crontab at the same moment against one database.

Each "host" is a set of real processes, one per cron job, started together with the exact
arguments of the schedule (trackctl/cron.py) and its own TRACKCTL_HOST_NAME. Afterwards: no
error, no work done twice (codes generated once per shortfall, each shipment polled once, each
webhook delivered once), exact pool levels, and every run recorded under its job and host.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import trackctl_command

from trackctl import cron
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import create_pool, pool_levels
from trackctl.runs import list_runs
from trackctl.webhooks import add_subscriber

HOSTS = ("host-a", "host-b")
SHIPMENTS = 120


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 204 and counts every webhook-id it gets."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        lock = threading.Lock()
        ids = self.ids

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    ids[self.headers.get("webhook-id")] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.mark.slow
def test_two_hosts_running_every_cron_job_at_once(cli, conn, receiver):
    # Work for every job: two pools to fill (one large, so the refills overlap), open shipments
    # of a simulator carrier to poll, and their assignment events to deliver to a subscriber.
    create_pool(conn, "bulk", target=50_000)
    add_carrier(conn, "sim", adapter="simulator", options={"step": "1h"}, max_concurrency=4)
    add_subscriber(conn, receiver.url)
    for n in range(SHIPMENTS):
        assign(conn, f"order-{n}", "sim")  # the empty default pool makes its codes inline
    events = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery").fetchone()[0]
    assert events == SHIPMENTS

    procs = []
    for host in HOSTS:
        env = {**cli.env, "TRACKCTL_HOST_NAME": host}
        for j in cron.JOBS:
            procs.append((host, j, subprocess.Popen(trackctl_command() + list(j.args), env=env,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for host, j, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{host} {j.command}: exit {proc.returncode}\n{err}"
        assert "error" not in err.lower() and "Traceback" not in err, f"{host} {j.command}:\n{err}"

    # Exact pool levels, and the codes of each shortfall generated once.
    levels = {p.name: p for p in pool_levels(conn)}
    assert levels["default"].free == 200 and levels["bulk"].free == 50_000
    runs = list_runs(conn, limit=1000)
    refills = [r for r in runs if r.job == "refill"]
    assert sum(r.counts["generated"] for r in refills) == 200 + 50_000

    # Each shipment polled exactly once, each webhook delivered exactly once.
    assert conn.execute("SELECT min(poll_count), max(poll_count) FROM sequencing.tracking "
                        "WHERE order_id IS NOT NULL").fetchone() == (1, 1)
    assert sum(r.counts["polled"] for r in runs if r.job == "poll") == SHIPMENTS
    assert len(receiver.ids) == SHIPMENTS and max(receiver.ids.values()) == 1
    assert sum(r.counts["delivered"] for r in runs if r.job == "notify") == SHIPMENTS

    # Every run recorded, once per job and host, and none failed or left running.
    recorded = Counter((r.job, r.host) for r in runs)
    assert recorded == Counter({(j.name, h): 1 for j in cron.JOBS for h in HOSTS})
    assert {r.outcome for r in runs} <= {"ok", "skipped"}, [(r.job, r.outcome, r.error) for r in runs]
