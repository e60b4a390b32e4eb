"""Real-carrier polling (issue 13): 17TRACK throughput against its rate bound, karrio DHL against the
concurrency bound, and HTTP keep-alive (connections counted at the server).

    .venv/bin/python bench/bench_carriers.py [--track17 20000] [--dhl 2000] [--keepalive 1000]

Each part polls with the real `trackctl poll` command (a subprocess) against a local server:

- 17track: N external shipments already registered with a local 17TRACK-shaped server that
  enforces 40 numbers per call and 3 requests per second (429 over it). Bound: 3 requests/s x 40
  numbers = 120 shipments/s. Ratio = shipments polled per second / bound. The server's 429 and
  over-size counts must be 0. Printed both over the whole `trackctl poll` process and as the
  server saw it (first request received to the last). (Registration is left out of the timed run: it costs one more
  request per 40 new numbers, once per number.)
- karrio DHL: N shipments through `karrio:dhl_universal`, a server answering DHL's shape after
  `--latency` seconds. Bound: max_concurrency / latency requests per second. Also measured in the
  same run: a raw client making the same requests with as many threads (the limit without
  trackctl, karrio or the database).
- keep-alive: N http-json shipments against an HTTP/1.1 keep-alive server that counts the TCP
  connections it accepted; target: connections <= requests / 10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from karrio_server import KarrioServer, dhl_universal_shipment  # noqa: E402
from scratch import say, scratch_database, trackctl_command  # noqa: E402
from track17_server import Track17Server, event  # noqa: E402

from trackctl.carriers import add_carrier  # noqa: E402

SEED = """
INSERT INTO sequencing.tracking (tracking_id, source, order_id, freightcarrier_id, status, assigned_at,
                                 remote_registered_at)
SELECT %(prefix)s || lpad(n::text, 8, '0'), 'external', 'o' || n, %(carrier)s, 'pending', now(),
       CASE WHEN %(registered)s THEN now() END
FROM generate_series(1, %(count)s) AS n
"""


def seed(conn, carrier_id: int, prefix: str, count: int, registered: bool = False) -> list[str]:
    conn.execute(SEED, {"prefix": prefix, "carrier": carrier_id, "count": count, "registered": registered})
    conn.execute("VACUUM ANALYZE sequencing.tracking")
    return [f"{prefix}{n:08d}" for n in range(1, count + 1)]


def run_poll(url: str, work: Path, carrier: str, env_extra: dict) -> tuple[dict, float]:
    env = {**os.environ, "TRACKCTL_DATABASE_URL": url, "TRACKCTL_HOME": str(work / "home"), **env_extra}
    started = time.perf_counter()
    summary_started = time.monotonic()
    proc = subprocess.run(trackctl_command() + ["poll", "--carrier", carrier, "--budget", "900s", "--format", "json"],
                          env=env, cwd=work, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 6):  # 6: some requests failed or met a 429; the summary says how many
        raise RuntimeError(f"trackctl poll failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    (summary,) = json.loads(proc.stdout)
    summary["exit"] = proc.returncode
    summary["started_at"], summary["ended_at"] = summary_started, time.monotonic()
    return summary, elapsed


def bench_17track(scratch, count: int) -> dict:
    with Track17Server(key="bench-key") as server:
        c = add_carrier(scratch.conn, "jadlog", 20, adapter="17track", url=server.url, token_env="TRACK17_KEY")
        codes = seed(scratch.conn, c.id, "JD", count, registered=True)
        server.registered.update(codes)
        for code in codes[::2]:
            server.track(code, "InTransit", [event("2026-11-22T10:00:00Z", "Em trânsito", "Departure")])
        say(f"17track: polling {count} registered shipments")
        summary, elapsed = run_poll(scratch.url, scratch.work, "jadlog", {"TRACK17_KEY": "bench-key"})
        bound = 3 * 40
        rate = summary["ok"] / elapsed
        span = server.calls[-1].at - server.calls[0].at
        # As the server saw it: n requests arrive over n - 1 spacings, first to last.
        n = len(server.calls)
        served = summary["ok"] * (n - 1) / n / span if span > 0 else 0.0
        return {"part": "17track", "server_side_per_s": round(served, 1), "server_side_ratio": round(served / bound, 3),
                "shipments": summary["ok"], "rate_limited_shipments": summary["rate_limited"],
                "seconds": round(elapsed, 1),
                "requests": len(server.calls), "max_numbers_per_call": max(len(x.numbers) for x in server.calls),
                "http_429": server.limited, "oversize_calls": server.oversize,
                "most_requests_in_1s": server.max_in_window(), "connections": server.connections,
                "shipments_per_s": round(rate, 1), "bound_per_s": bound, "ratio": round(rate / bound, 3)}


def raw_limit(url: str, threads: int, requests: int) -> float:
    """Requests per second a plain threaded client gets from the same server (no trackctl, no karrio)."""
    left = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                n = next(left, None)
            if n is None:
                return
            req = urllib.request.Request(f"{url}/track/shipments?trackingNumber=RAW{n}",
                                         headers={"DHL-API-Key": "k"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except Exception:
                pass

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return requests / (time.perf_counter() - started)


def bench_dhl(scratch, count: int, latency: float, concurrency: int) -> dict:
    with KarrioServer(latency=latency) as server:
        c = add_carrier(scratch.conn, "dhl", 30, adapter="karrio:dhl_universal", url=server.url,
                        max_concurrency=concurrency, credentials={"consumer_key": "DHL_KEY", "consumer_secret": "DHL_SECRET"})
        codes = seed(scratch.conn, c.id, "JJD", count)
        for code in codes:
            server.shipments[code] = dhl_universal_shipment(code)
        raw = raw_limit(server.url, concurrency, min(count, 400))
        server.requests.clear()
        server.first, server.last = None, 0.0
        say(f"karrio DHL: polling {count} shipments, {latency * 1000:g} ms per request, max_concurrency {concurrency}")
        summary, elapsed = run_poll(scratch.url, scratch.work, "dhl", {"DHL_KEY": "k", "DHL_SECRET": "s"})
        bound = concurrency / latency
        rate = summary["polled"] / elapsed
        served = len(server.requests) / (server.last - server.first)  # as the carrier sees it
        return {"part": "karrio dhl_universal", "shipments": summary["polled"], "failed": summary["failed"],
                "seconds": round(elapsed, 1), "requests_per_s": round(rate, 1), "bound_per_s": bound,
                "ratio": round(rate / bound, 3), "server_side_per_s": round(served, 1),
                # the poll process's own start (imports, karrio, database) and end, outside the requests
                "start_to_first_request_s": round(server.first - summary["started_at"], 2),
                "last_answer_to_exit_s": round(summary["ended_at"] - server.last, 2),
                "server_side_ratio": round(served / bound, 3), "raw_client_per_s": round(raw, 1),
                "raw_ratio": round(raw / bound, 3), "ratio_to_raw": round(rate / raw, 3)}


class KeepAliveServer:
    """http-json over HTTP/1.1 keep-alive, counting accepted connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def do_GET(self) -> None:  # noqa: N802
                code = self.path.rsplit("/", 1)[-1]
                with owner.lock:
                    owner.requests += 1
                body = json.dumps({"code": code, "events": [
                    {"id": "e1", "status": "in_transit", "occurred_at": "2026-11-20T09:15:00-03:00"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def bench_keepalive(scratch, count: int) -> dict:
    server = KeepAliveServer()
    try:
        c = add_carrier(scratch.conn, "acme", 40, adapter="http-json", url=server.url, max_concurrency=4)
        seed(scratch.conn, c.id, "KA", count)
        say(f"keep-alive: polling {count} http-json shipments")
        summary, elapsed = run_poll(scratch.url, scratch.work, "acme", {})
        return {"part": "keep-alive (http-json)", "requests": server.requests, "connections": server.connections,
                "connections_per_request": round(server.connections / max(server.requests, 1), 3),
                "target": "<= 0.1", "met": server.connections <= server.requests / 10, "seconds": round(elapsed, 1)}
    finally:
        server.server.shutdown()
        server.server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track17", type=int, default=20_000, help="17track shipments (0 skips)")
    parser.add_argument("--dhl", type=int, default=2_000, help="karrio DHL shipments (0 skips)")
    parser.add_argument("--latency", type=float, default=0.05, help="DHL server latency (s)")
    parser.add_argument("--concurrency", type=int, default=4, help="DHL carrier max_concurrency")
    parser.add_argument("--keepalive", type=int, default=1_000, help="http-json shipments for keep-alive (0 skips)")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    opts = parser.parse_args()
    results = []
    for part, n in (("keepalive", opts.keepalive), ("dhl", opts.dhl), ("track17", opts.track17)):
        if not n:
            continue
        with scratch_database(opts.database_url, f"trackctl-bench-carriers-{part}-") as scratch:
            if part == "track17":
                results.append(bench_17track(scratch, n))
            elif part == "dhl":
                results.append(bench_dhl(scratch, n, opts.latency, opts.concurrency))
            else:
                results.append(bench_keepalive(scratch, n))
        print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
