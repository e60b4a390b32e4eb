"""Connections and the migrations runner."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psycopg

from . import queries
from .config import Settings
from .errors import DatabaseUnavailable, InvalidValue, MigrationEdited, SchemaOutOfDate, param

MIGRATION_FILE = queries.MIGRATION_FILE
# Key of the session advisory lock that serialises `db migrate` across processes and hosts.
MIGRATE_LOCK = 7_262_001

SQL = queries.load("db")


def sql_dir() -> Path:
    """Return the folder of numbered migrations: inside the installed package, or the checkout's sql/."""
    here = Path(__file__).resolve().parent
    installed = here / "sql"
    return installed if installed.is_dir() else here.parent / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @cached_property
    def text(self) -> str:
        return queries.migration_script(self.path)

    @cached_property
    def checksum(self) -> str:
        import hashlib  # not at import: `trackctl assign` never checksums a migration

        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def migrations(folder: Path | None = None) -> list[Migration]:
    """Return the migration files in version order."""
    found = []
    for path in (folder or sql_dir()).iterdir():
        match = MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path))
    return sorted(found, key=lambda m: m.version)


def latest_version(folder: Path | None = None) -> int:
    return max(file_versions(folder), default=0)


def describe_target(url: str) -> str:
    """Return where a connection string points, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable URL)"
    host = str(params.get("host") or "localhost")
    where = host if host.startswith("/") else f"{host}:{params.get('port') or 5432}"
    return f"{where}/{params.get('dbname') or ''}"


def connect_failure_reason(exc: Exception) -> str:
    """Return libpq's reason for a failed connection ("Connection refused"), without the boilerplate."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    return first.rsplit(" failed: ", 1)[-1] if " failed: " in first else first


# A server at max_connections (or a role or database at its connection limit) turns a new
# connection away; many hosts' cron jobs starting in the same minute can meet that for a moment.
# Such a refusal is retried with growing pauses for up to FULL_WAIT seconds before it is an error.
FULL_WAIT = 10.0
FULL_SERVER = re.compile(r"too many clients already|too many connections for|remaining connection slots are reserved")


def open_connection(url: str, *, connect_timeout: int = 10, wait_when_full: float = FULL_WAIT) -> psycopg.Connection:
    """Return an autocommit connection, or raise DatabaseUnavailable naming host and database only."""
    import time

    give_up = time.monotonic() + wait_when_full
    pause = 0.1
    while True:
        try:
            return _connect_once(url, connect_timeout)
        except DatabaseUnavailable as exc:
            if not FULL_SERVER.search(str(exc)) or time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def conninfo_of(conn: psycopg.Connection) -> str:
    """The parameters `conn` was opened with (its password included) for more connections like it."""
    from psycopg.conninfo import make_conninfo

    params = {"password": conn.info.password} if conn.info.password else {}
    return make_conninfo(conn.info.dsn, **params)


def _check_url(url: str) -> None:
    """Refuse a connection string libpq would misread as an unreachable server (a port that is no number)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        port = str(conninfo_to_dict(url).get("port") or "")
    except psycopg.ProgrammingError:
        return  # connect() says so, in the same words as for every other malformed string
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise InvalidValue(f"the database URL has an invalid port {port[:20]!r}",
                           hint=f"check TRACKCTL_DATABASE_URL or {param('database_url')}")


# psycopg prepares a statement on a connection after it ran this many times there. A pooler in
# transaction mode that does not keep protocol-level prepared statements (PgBouncer with
# max_prepared_statements = 0, or older than psycopg's docs ask: 1.22 with a libpq of 17 or
# newer) needs TRACKCTL_PREPARED_STATEMENTS=off (docs/SCALING.md).
ENV_PREPARED_STATEMENTS = "TRACKCTL_PREPARED_STATEMENTS"
PREPARE_THRESHOLD = 5


def prepare_threshold() -> int | None:
    """Return psycopg's prepare_threshold for this process's connections (None: never prepare)."""
    value = os.environ.get(ENV_PREPARED_STATEMENTS, "").strip().lower()
    if value in ("", "on"):
        return PREPARE_THRESHOLD
    if value == "off":
        return None
    raise InvalidValue(f"{ENV_PREPARED_STATEMENTS} is {value[:20]!r}", hint="use on (the default) or off")


def _connect_once(url: str, connect_timeout: int) -> psycopg.Connection:
    _check_url(url)
    threshold = prepare_threshold()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout,
                               application_name="trackctl", prepare_threshold=threshold)
    except psycopg.ProgrammingError as exc:
        # libpq's message can quote the string back, password included: never show it.
        raise InvalidValue("the database URL is not a valid PostgreSQL connection string",
                           hint=f"check TRACKCTL_DATABASE_URL or {param('database_url')}") from exc
    except psycopg.OperationalError as exc:
        reason = connect_failure_reason(exc)
        raise DatabaseUnavailable(
            f"cannot connect to the database at {describe_target(url)}: {reason.strip()}",
            hint="check that the server is running and TRACKCTL_DATABASE_URL is right",
        ) from exc


def connect(settings: Settings, *, check_schema: bool = True) -> psycopg.Connection:
    """Return a connection to the configured database (starting the embedded one if none is set).

    On the embedded database pending migrations are applied automatically; on a configured
    database a schema behind the code is an error that asks for `trackctl db migrate`.
    """
    if settings.embedded:
        from . import embedded

        url = embedded.ensure_running(settings.home)
    else:
        url = settings.database_url or ""
    conn = open_connection(url)
    if check_schema:
        try:
            ensure_schema(conn, auto_migrate=settings.embedded)
        except BaseException:
            conn.close()
            raise
    return conn


def applied_versions(conn: psycopg.Connection) -> set[int]:
    """Return the versions recorded as applied (empty on a database never migrated)."""
    try:
        # One statement in autocommit: a missing table aborts nothing, and `assign` pays one round trip.
        row = conn.execute(SQL.applied_versions).fetchone()
    except psycopg.errors.UndefinedTable:
        if not conn.autocommit:
            conn.rollback()
        return set()
    return set(row[0] or ())


def schema_version(conn: psycopg.Connection) -> int:
    return max(applied_versions(conn), default=0)


def file_versions(folder: Path | None = None) -> set[int]:
    names = (p.name for p in (folder or sql_dir()).iterdir())
    return {int(m.group(1)) for n in names if (m := MIGRATION_FILE.match(n))}


def ensure_schema(conn: psycopg.Connection, *, auto_migrate: bool = False) -> None:
    """Raise SchemaOutOfDate unless every migration file is applied and none unknown to this code is."""
    have, want = applied_versions(conn), file_versions()
    if have == want:
        return
    newer = have - want
    if newer:
        raise SchemaOutOfDate(f"the database has migration {max(newer)}, newer than this trackctl ({max(want)})",
                              hint="upgrade trackctl on this host")
    if auto_migrate:
        migrate(conn)
        return
    missing = sorted(want - have)
    raise SchemaOutOfDate(f"the database schema lacks migration{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(str(v) for v in missing)} (at version {max(have, default=0)}, "
                          f"this trackctl needs {max(want)})",
                          hint="run 'trackctl db migrate'")


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    state: str  # applied | pending | edited | unknown
    applied_at: object | None


def migration_status(conn: psycopg.Connection) -> list[MigrationState]:
    """Return every migration known to the files or the database, with its state."""
    try:
        with conn.transaction():
            applied = {r[0]: r for r in conn.execute(SQL.applied).fetchall()}
    except psycopg.errors.UndefinedTable:
        applied = {}
    states = []
    files = {m.version: m for m in migrations()}
    for version in sorted(set(files) | set(applied)):
        m, a = files.get(version), applied.get(version)
        if a is None:
            states.append(MigrationState(version, m.name, "pending", None))
        elif m is None:
            states.append(MigrationState(version, a[1], "unknown", a[3]))
        else:
            states.append(MigrationState(version, m.name, "applied" if a[2] == m.checksum else "edited", a[3]))
    return states


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply pending migrations in order, each in its own transaction; return those applied."""
    conn.execute(SQL.lock, (MIGRATE_LOCK,))
    try:
        conn.execute(SQL.bootstrap)
        applied = {r[0]: r for r in conn.execute(SQL.applied).fetchall()}
        files = migrations()
        for m in files:
            if m.version in applied and applied[m.version][2] != m.checksum:
                raise MigrationEdited(
                    f"migration {m.name} was edited after it was applied (checksum differs)",
                    hint="restore the original file and put the change in a new numbered migration",
                )
        newest_file = files[-1].version if files else 0
        if applied and max(applied) > newest_file:
            raise SchemaOutOfDate(f"the database has migration {max(applied)}, newer than this trackctl",
                                  hint="upgrade trackctl on this host")
        done = []
        for m in files:
            if m.version in applied:
                continue
            with conn.transaction():
                conn.execute(queries.migration_script(m.path))
                conn.execute(SQL.record, (m.version, m.name, m.checksum))
            done.append(m)
        return done
    finally:
        conn.execute(SQL.unlock, (MIGRATE_LOCK,))
