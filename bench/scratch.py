"""What the benchmark scripts share: a scratch database for one run, and two small helpers.

The scripts run as `python bench/bench_x.py`, so this directory is on sys.path and they import
this module as `scratch`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from trackctl import db, embedded


def say(message: str) -> None:
    """A progress line on stderr, apart from the report on stdout."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def trackctl_command() -> list[str]:
    """The command that runs trackctl: the installed script next to this Python, else `python -m trackctl`."""
    script = Path(sys.executable).with_name("trackctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trackctl"]


@dataclass(frozen=True)
class ScratchDatabase:
    url: str
    where: str  # the database, described for the report
    home: Path  # the embedded server's home (TRACKCTL_HOME); made only when the server is started here
    work: Path  # a temporary directory, removed at the end
    conn: psycopg.Connection
    server_version: str


@contextmanager
def scratch_database(database_url: str | None, prefix: str) -> Iterator[ScratchDatabase]:
    """A migrated database and an open connection to it, for the length of the `with` block.

    With `database_url` that database is used (it must be a scratch one); without it an embedded
    PostgreSQL is started under a new temporary directory (named with `prefix`). On the way out
    the connection is closed, the embedded server (if started here) stopped and the directory removed.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    home = work / "home"
    try:
        if database_url:
            url, where = database_url, f"given database {db.describe_target(database_url)}"
        else:
            say("starting an embedded PostgreSQL")
            url, where = embedded.ensure_running(home), f"embedded PostgreSQL in {home}"
        conn = db.open_connection(url)
        try:
            db.migrate(conn)
            version = conn.execute("SHOW server_version").fetchone()[0]
            yield ScratchDatabase(url=url, where=where, home=home, work=work, conn=conn, server_version=version)
        finally:
            conn.close()
    finally:
        if not database_url and home.exists():
            embedded.stop(home)
        shutil.rmtree(work, ignore_errors=True)


# --- a lean webhook endpoint in its own process ----------------------------------------------------

ENDPOINT_LATENCY = 0.020


async def _serve(port_out, stats, ready, latency: float) -> None:
    # asyncio HTTP/1.1 on keep-alive connections: every POST gets 204 after `latency`. Lean on
    # purpose: the benchmarks measure notify, not the receiver.
    open_now = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                open_now += 1
                stats[1] = max(stats[1], open_now)
                await asyncio.sleep(latency)
                open_now -= 1
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                now = time.time()
                stats[0] += 1
                if stats[2] == 0:
                    stats[2] = now
                stats[3] = now
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_out.value = server.sockets[0].getsockname()[1]
    ready.set()
    async with server:
        await server.serve_forever()


def _endpoint_process(port_out, stats, ready, latency: float) -> None:
    asyncio.run(_serve(port_out, stats, ready, latency))


def start_endpoint(latency: float = ENDPOINT_LATENCY) -> tuple[multiprocessing.Process, int, "multiprocessing.Array"]:
    """Start the endpoint process; return it, its port and its stats.

    stats: [0] requests answered, [1] most answered at once, [2] and [3] time.time() of the first
    and the last answer. Terminate the process when done.
    """
    port, stats, ready = multiprocessing.Value("i", 0), multiprocessing.Array("d", 4), multiprocessing.Event()
    proc = multiprocessing.Process(target=_endpoint_process, args=(port, stats, ready, latency), daemon=True)
    proc.start()
    if not ready.wait(30):
        proc.terminate()
        raise SystemExit("the benchmark endpoint did not start")
    return proc, port.value, stats
