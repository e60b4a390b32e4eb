"""`--rate-limit N/s`: request starts of a carrier are paced over every process and host (issue 13.4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from carrier_server import CarrierServer, http_json_event  # noqa: E402
from conftest import trackctl_command  # noqa: E402

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import refill


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_two_poll_processes_together_keep_to_the_rate(conn, cli):
    with CarrierServer() as server:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, max_concurrency=8)
        r = cli("carrier", "set", "acme", "--rate-limit", "4/s")
        assert r.returncode == 0, r
        refill(conn)
        codes = [assign(conn, f"o{i}", "acme").code for i in range(24)]
        for c in codes:
            server.history(c, [http_json_event("e1", "in_transit", "2026-11-20T09:15:00-03:00")])
        procs = [subprocess.Popen([*trackctl_command(), "poll", "--format", "json", "--budget", "60s"], env=cli.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert sum(json.loads(o[0])[0]["polled"] for o in outs) == 24
        assert len(server.requests) == 24
        assert most_in_one_second([s.started for s in server.requests]) <= 4
