"""Scale proof (issue 7): N simulated hosts run the whole crontab against one database of
1 000 000 shipments while single `assign` claims are timed.

Each host is a separate OS process (this script with --host-worker) that runs every job of the
crontab, as its own `trackctl` process, for --rounds rounds. The commands are the crontab's: the
job list, each job's arguments and its hard time limit come from `trackctl.cron.JOBS`, and each
line is rendered by `trackctl.cron.command_line` for this installation (absolute `trackctl` path,
`timeout -k 5s LIMITs`, TRACKCTL_LOG_FORMAT=json, stdout to /dev/null, stderr appended to the
host's log file), then run by /bin/sh with a cron-like environment (PATH and SHELL of the
repository's crontab, no TRACKCTL_* variables but the database's) in a directory of its own, so
no ./.env is read. Time is compressed: within a host the six jobs run back to back, in the table's
order, instead of on their schedules (cron would start poll and notify every minute, refill every
5 minutes, the others hourly or daily, and jobs due in the same minute at once). Each host reports
every run (job, seconds, exit code, the last log line of a failed run) as a JSON line on its stdout.

The carrier is the built-in simulator (no HTTP) and a webhook subscriber points at a local
endpoint in another process (this script with --webhook-sink), so notify makes real deliveries.
The shipments are bulk-created with INSERT ... SELECT generate_series (not through the CLI, not
timed; a third of them terminal, none due). At the start of every phase a slice of them (--due,
a different slice each phase, never polled before) is made open and due, so every phase starts
with the same polling work: each of these reaches `delivered` at its first poll (four events,
one status change with its outbox event and webhook delivery). While the hosts run, this process
claims codes at a steady --claim-rate (`trackctl.assign.assign` on an open connection; each claim
is a new shipment with its outbox event, due for polling at once) until the last host ends, and
reports p50/p95/p99, the peak number of client connections (sampled every 0.5 s) against
max_connections, the work done (shipments polled, outbox events, deliveries), the job runs'
own outcomes from `sequencing.run`, and the database and table sizes before and after.
Before the phases it times 500 claims at the same rate with no job running: the limit the loaded
figures compare to.

Run:  /tmp/dev/bin/python bench/bench_scale.py                      (defaults: 4 hosts x 3 rounds)
      /tmp/dev/bin/python bench/bench_scale.py --hosts 1,2,4,8      (a sweep: one phase per count)
      /tmp/dev/bin/python bench/bench_scale.py --hosts 8 --rounds 5 --shipments 5000000 --due 0.01

Without --database-url an embedded PostgreSQL is started in a temporary directory and removed at
the end. A URL must name a scratch database: the benchmark migrates it and writes to it. The
report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from scratch import say, scratch_database, trackctl_command
from trackctl import cron, webhooks
from trackctl.assign import assign
from trackctl.carriers import add_carrier

# What cron gives a job: the repository crontab's SHELL and PATH, the user's HOME, nothing else
# (the installation's own variables are part of each command line).
CRON_ENV = {"SHELL": "/bin/sh", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.path.expanduser("~"),
            "LOGNAME": os.environ.get("LOGNAME") or os.environ.get("USER") or ""}
POOL_TARGET = 20_000  # well above the codes the claims take between two refills of a round
IDLE_CLAIMS = 500

BULK = """
INSERT INTO sequencing.tracking (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status,
                                 assigned_at, next_poll_at, last_event_at)
SELECT gen_random_uuid()::text, %(pool)s, 'bulk-' || g, %(carrier)s, 1,
       (ARRAY['delivered','delivered','in_transit','out_for_delivery','pending','cancelled'])[1 + g %% 6],
       now() - make_interval(hours => g %% 500),
       now() + interval '1 day',
       now() - make_interval(hours => g %% 500)
FROM generate_series(1, %(n)s) AS g
"""
# Each phase makes its own slice of the bulk shipments due (slice k: g % due_every = k, never
# polled before, assigned k hours ago) and open, so at its first poll the simulator reports all
# four steps: four events and one status change (to delivered, with its outbox event and
# delivery) per shipment. Every phase starts with the same polling work.
MAKE_DUE = """
UPDATE sequencing.tracking SET status = 'in_transit', next_poll_at = '-infinity'
WHERE order_id LIKE 'bulk-%%' AND substr(order_id, 6)::bigint %% %(due_every)s = %(slice)s
"""
SIZES = """
SELECT pg_database_size(current_database()),
       (SELECT json_object_agg(relname, pg_total_relation_size(c.oid)) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sequencing' AND c.relkind = 'r')
"""
CLIENTS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
# What the phase's job runs recorded themselves (outcome `skipped`: another host held the lock).
RUN_OUTCOMES = """
SELECT job, outcome, count(*) FROM sequencing.run WHERE started_at >= %s GROUP BY job, outcome
"""
WORK_DONE = """
SELECT (SELECT count(*) FROM sequencing.tracking WHERE last_polled_at >= %(t)s),
       (SELECT count(*) FROM sequencing.outbox WHERE created_at >= %(t)s),
       (SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'done' AND delivered_at >= %(t)s),
       (SELECT count(*) FROM sequencing.webhook_delivery WHERE status <> 'done')
"""


# --- one host: the crontab's commands, back to back ----------------------------------------------


def installation(url: str, work: Path) -> cron.Installation:
    """Return how this host's crontab would run the jobs (as `trackctl cron print` renders it)."""
    timeout = shutil.which("timeout")
    if timeout is None:
        sys.exit("bench_scale: coreutils 'timeout' is needed: it enforces each job's hard time limit")
    if conninfo_to_dict(url).get("password"):
        # As `trackctl cron print --env-file`: a password stays out of command lines (ps shows them).
        env_file = work / "env"
        escaped = url.replace("\\", "\\\\").replace("'", "\\'")
        env_file.touch(mode=0o600)
        env_file.write_text(f"TRACKCTL_DATABASE_URL='{escaped}'\n")
        database = ("TRACKCTL_ENV_FILE", str(env_file))
    else:
        database = ("TRACKCTL_DATABASE_URL", url)
    return cron.Installation(trackctl=tuple(trackctl_command()), timeout=timeout,
                             environment=(database, ("TRACKCTL_LOG_FORMAT", "json")),
                             log_file=str(work / "cron.log"))


def crontab_command(job: cron.CronJob, inst: cron.Installation) -> str:
    """Return the command of the job's crontab line, as cron hands it to the shell."""
    line = cron.command_line(job, inst)
    if not line.startswith(job.schedule + " "):
        raise RuntimeError(f"unexpected crontab line for {job.name}: {line!r}")
    return line[len(job.schedule) + 1:].replace("\\%", "%")  # cron turns \% back into %


def host_worker(name: str, rounds: int, work: Path) -> None:
    """Run every crontab job `rounds` times, one after the other; print each run as a JSON line."""
    work.mkdir(parents=True, exist_ok=True)
    inst = installation(os.environ["TRACKCTL_DATABASE_URL"], work)
    commands = [(job, crontab_command(job, inst)) for job in cron.JOBS]
    log = Path(inst.log_file)
    log.touch()
    for n in range(rounds):
        for job, command in commands:
            offset = log.stat().st_size
            started = time.monotonic()
            proc = subprocess.run(["/bin/sh", "-c", command], env=CRON_ENV, cwd=work, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=job.limit + 60)
            seconds = time.monotonic() - started
            error = ""
            if proc.returncode != 0:
                with log.open("rb") as f:
                    f.seek(offset)
                    lines = (f.read() + proc.stderr).decode(errors="replace").strip().splitlines()
                error = lines[-1] if lines else ""
                try:
                    error = json.loads(error).get("message", error)  # a JSON log line: its message
                except (ValueError, AttributeError):
                    pass
                error = error[-300:]
            print(json.dumps({"host": name, "round": n + 1, "job": job.name, "limit": job.limit,
                              "seconds": round(seconds, 3), "rc": proc.returncode, "error": error}), flush=True)


# --- the webhook endpoint, in a process of its own -------------------------------------------------


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def webhook_sink() -> None:
    """Answer every POST with 204; print the port, then serve until stdin closes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


# --- this process: setup, claims, phases, report ----------------------------------------------------


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@dataclass
class Claims:
    latencies: list[float] = field(default_factory=list)  # milliseconds
    inline: int = 0  # codes made on the spot because the pool was dry
    peak_clients: int = 0

    def line(self) -> str:
        v = self.latencies
        return (f"{len(v)}; p50 {pct(v, 50):.2f} ms, p95 {pct(v, 95):.2f} ms, p99 {pct(v, 99):.2f} ms, "
                f"max {max(v):.2f} ms")


def timed_claims(conn: psycopg.Connection, prefix: str, rate: float, count: int | None = None,
                 until=None) -> Claims:
    """Claim at `rate` per second, `count` times or until `until()` is true; time each claim.

    Every half second (outside the timed calls) the client connections of the server are counted.
    """
    out = Claims()
    interval, due, sampled = 1.0 / rate, time.monotonic(), 0.0
    n = 0
    while (count is None or n < count) and not (until is not None and until()):
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        due = max(due, now) + interval
        t = time.perf_counter()
        a = assign(conn, f"{prefix}-{n}", "sim")
        out.latencies.append((time.perf_counter() - t) * 1000)
        out.inline += a.generated_inline
        n += 1
        if time.monotonic() - sampled >= 0.5:
            out.peak_clients = max(out.peak_clients, conn.execute(CLIENTS).fetchone()[0])
            sampled = time.monotonic()
    return out


def due_every(due: float) -> int:
    """Return the slice size: one bulk shipment in this many is due in each phase."""
    return max(2, round(1 / due))


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def phase(args, conn: psycopg.Connection, url: str, work: Path, number: int, hosts: int, idle_p50: float,
          max_connections: str) -> dict:
    """N host processes x R rounds of the crontab while claims are timed; print the phase, return its summary."""
    say(f"phase: {hosts} hosts x {args.rounds} rounds")
    made_due = conn.execute(MAKE_DUE, {"due_every": due_every(args.due), "slice": number}).rowcount
    due = conn.execute("SELECT count(*) FROM sequencing.tracking WHERE next_poll_at = '-infinity' "
                       "AND status NOT IN ('delivered', 'returned', 'cancelled') AND stale_at IS NULL").fetchone()[0]
    size0, tables0 = conn.execute(SIZES).fetchone()
    t0 = conn.execute("SELECT now()").fetchone()[0]
    env = {**os.environ, "TRACKCTL_DATABASE_URL": url}
    me = str(Path(__file__).resolve())
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, me, "--host-worker", f"h{i}", "--rounds", str(args.rounds),
                               "--work", str(work / f"phase{number}" / f"h{i}")],
                              env=env, stdout=subprocess.PIPE, text=True) for i in range(hosts)]
    runs: list[dict] = []
    readers = [threading.Thread(target=lambda p=p: runs.extend(json.loads(line) for line in p.stdout))
               for p in procs]
    for r in readers:
        r.start()
    claims = timed_claims(conn, f"claim-h{hosts}", args.claim_rate,
                          until=lambda: all(p.poll() is not None for p in procs))
    for p in procs:
        p.wait()
    for r in readers:
        r.join()
    wall = time.monotonic() - started
    size1, tables1 = conn.execute(SIZES).fetchone()
    outcomes = {(j, o): c for j, o, c in conn.execute(RUN_OUTCOMES, (t0,)).fetchall()}
    polled, events, delivered, undelivered = conn.execute(WORK_DONE, {"t": t0}).fetchone()
    crashed = [f"h{i} exit {p.returncode}" for i, p in enumerate(procs) if p.returncode != 0]

    who = "host (process)" if hosts == 1 else "hosts (processes)"
    print(f"\n{hosts} {who} x {args.rounds} rounds of the crontab's {len(cron.JOBS)} jobs, "
          f"back to back, each under its cron time limit: wall {wall:.1f} s")
    if crashed:
        print(f"  host processes that failed: {', '.join(crashed)}")
    print(f"{'job':<14}{'limit s':>8}{'runs':>6}{'failed':>8}{'killed':>8}{'skipped':>9}{'median s':>10}{'max s':>8}")
    medians = {}
    for job in cron.JOBS:
        rs = [r for r in runs if r["job"] == job.name]
        secs = [r["seconds"] for r in rs] or [float("nan")]
        bad = [r for r in rs if r["rc"] != 0]
        killed = sum(r["rc"] in (124, 137) for r in rs)  # timeout: 124 after SIGTERM, 137 after SIGKILL
        medians[job.name] = statistics.median(secs)
        print(f"{job.name:<14}{job.limit:>8}{len(rs):>6}{len(bad):>8}{killed:>8}"
              f"{outcomes.get((job.name, 'skipped'), 0):>9}{medians[job.name]:>10.2f}{max(secs):>8.2f}")
        for r in bad[:2]:
            print(f"    {r['host']} round {r['round']}: exit {r['rc']}: {r['error'][:200]}")
    print(f"single claims while the jobs ran ({args.claim_rate:g}/s): {claims.line()} "
          f"({statistics.median(claims.latencies) / idle_p50:.1f} x the idle p50); codes made inline "
          f"(pool dry): {claims.inline}")
    print(f"client connections: peak {claims.peak_clients} of max_connections {max_connections}")
    print(f"work: {due} shipments due at the start ({made_due} of them this phase's slice), "
          f"{len(claims.latencies)} claimed during the phase; "
          f"polled {polled}; outbox events {events}; deliveries done {delivered}, not done at the end {undelivered}")
    print(f"database size: {size0 / 2**20:.0f} MiB before, {size1 / 2**20:.0f} MiB after "
          f"(+{(size1 - size0) / 2**20:.1f} MiB)")
    for name in sorted(tables1, key=lambda k: -tables1[k])[:6]:
        print(f"  {name:<22}{tables0.get(name, 0) / 2**20:>9.1f} MiB -> {tables1[name] / 2**20:>9.1f} MiB")
    print(f"load average at the end of the phase: {load()}")
    return {"hosts": hosts, "wall": wall, "runs": len(runs), "failed": sum(r["rc"] != 0 for r in runs),
            "expected": hosts * args.rounds * len(cron.JOBS), "claims": len(claims.latencies),
            "p50": pct(claims.latencies, 50), "p95": pct(claims.latencies, 95), "p99": pct(claims.latencies, 99),
            "clients": claims.peak_clients, "growth": (size1 - size0) / 2**20, "medians": medians}


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--hosts", default="4", help="hosts, or a comma list (1,2,4,8): one phase each, same database")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the whole crontab per host")
    ap.add_argument("--shipments", type=int, default=1_000_000, help="bulk-created shipments")
    ap.add_argument("--due", type=float, default=0.002, help="fraction of shipments due for polling per phase")
    ap.add_argument("--claim-rate", type=float, default=100.0, help="single claims per second while the jobs run")
    ap.add_argument("--database-url", help="a scratch database (default: a temporary embedded server)")
    ap.add_argument("--host-worker", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--webhook-sink", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.host_worker:
        host_worker(args.host_worker, args.rounds, args.work)
        return
    if args.webhook_sink:
        webhook_sink()
        return
    try:
        host_counts = [int(h) for h in args.hosts.split(",")]
    except ValueError:
        ap.error("--hosts takes a number or a comma list of numbers")
    if not (0 < args.due <= 0.5) or args.claim_rate <= 0 or args.rounds < 1 or min(host_counts) < 1:
        ap.error("--due must be in (0, 0.5], --claim-rate above 0, --rounds and hosts at least 1")
    if len(host_counts) >= due_every(args.due):
        ap.error(f"at most {due_every(args.due) - 1} phases with --due {args.due} (each needs its own slice)")
    start_load = load()
    sink = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--webhook-sink"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        with scratch_database(args.database_url, "trackctl-bench-scale-") as scratch:
            conn, url = scratch.conn, scratch.url
            max_connections = conn.execute("SHOW max_connections").fetchone()[0]
            print("trackctl scale benchmark (issue 7)")
            print(f"  {scratch.where}, PostgreSQL {scratch.server_version} (max_connections "
                  f"{max_connections}); Python {platform.python_version()}, psycopg {psycopg.__version__}")
            print(f"  {os.cpu_count()} CPUs, load average at start {start_load}")
            print(f"  --hosts {args.hosts} --rounds {args.rounds} --shipments {args.shipments} --due {args.due} "
                  f"--claim-rate {args.claim_rate:g}")
            print("  jobs per round, as in the crontab (name: command, hard limit):")
            for job in cron.JOBS:
                print(f"    {job.name}: {job.command}, timeout -k {cron.KILL_AFTER} {job.limit}s")
            carrier = add_carrier(conn, "sim", adapter="simulator", options={"step": "30s"}, max_concurrency=16)
            webhooks.add_subscriber(conn, f"http://127.0.0.1:{port}/", secret=webhooks.generate_secret())
            conn.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (POOL_TARGET,))
            pool = conn.execute("SELECT id FROM sequencing.pool WHERE name = 'default'").fetchone()[0]
            say(f"bulk-creating {args.shipments} shipments")
            t = time.monotonic()
            conn.execute(BULK, {"pool": pool, "carrier": carrier.id, "n": args.shipments})
            conn.execute("VACUUM ANALYZE")
            setup = time.monotonic() - t
            size0, _ = conn.execute(SIZES).fetchone()
            print(f"\nsetup: {args.shipments} shipments bulk-created in {setup:.1f} s; database {size0 / 2**20:.0f} MiB")
            subprocess.run([*trackctl_command(), "refill"], env={**os.environ, "TRACKCTL_DATABASE_URL": url},
                           capture_output=True, check=True)
            idle = timed_claims(conn, "claim-idle", args.claim_rate, count=IDLE_CLAIMS)
            idle_p50 = pct(idle.latencies, 50)
            print(f"single claims with no job running (the limit): {idle.line()}")

            summaries = [phase(args, conn, url, scratch.work, n, hosts, idle_p50, max_connections)
                         for n, hosts in enumerate(host_counts, start=1)]

            polled = conn.execute("SELECT count(*) FROM sequencing.tracking WHERE last_polled_at IS NOT NULL").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM sequencing.outbox").fetchone()[0]
            done = conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'done'").fetchone()[0]
            size1, _ = conn.execute(SIZES).fetchone()
            print(f"\nall phases: shipments polled {polled}; outbox events {events}; deliveries done {done}; "
                  f"database {size0 / 2**20:.0f} MiB -> {size1 / 2**20:.0f} MiB")
            print(f"\nsummary (claim latency against the idle p50 {idle_p50:.2f} ms; conns = peak client connections "
                  f"of {max_connections}):")
            print(f"{'hosts':>5}{'wall s':>8}{'failed':>10}{'claims':>8}{'p50 ms':>8}{'x idle':>7}{'p95 ms':>8}"
                  f"{'p99 ms':>8}{'conns':>6}{'+MiB':>7}")
            for r in summaries:
                print(f"{r['hosts']:>5}{r['wall']:>8.1f}{r['failed']:>5}/{r['runs']:<4}{r['claims']:>8}{r['p50']:>8.2f}"
                      f"{r['p50'] / idle_p50:>7.1f}{r['p95']:>8.2f}{r['p99']:>8.2f}{r['clients']:>6}{r['growth']:>7.1f}")
                if r["runs"] != r["expected"]:
                    print(f"      ({r['expected'] - r['runs']} of {r['expected']} job runs not reported)")
            print("median seconds per job run (the whole trackctl process, start-up included):")
            print(f"{'hosts':>5}" + "".join(f"{j.name:>13}" for j in cron.JOBS))
            for r in summaries:
                print(f"{r['hosts']:>5}" + "".join(f"{r['medians'][j.name]:>13.2f}" for j in cron.JOBS))
            print(f"load average at end: {load()}")
    finally:
        if sink.stdin:
            sink.stdin.close()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
