"""What the benchmark scripts share: a scratch database for one run, and two small helpers.

The scripts run as `python bench/bench_x.py`, so this directory is on sys.path and they import
this module as `scratch`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
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
