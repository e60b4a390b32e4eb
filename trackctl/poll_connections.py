"""The database connections of one poll run, shared by its worker threads (trackctl/poll.py).

A `psycopg_pool.ConnectionPool` holds them: it opens one at the start and grows while workers
wait, up to the run's size; a connection that comes back broken (server restarted, backend
killed) is dropped and replaced, never handed out again. When the server refuses more
(max_connections, a role's limit) the pool keeps to those it has and retries in the background.
When it cannot open even one, the run borrows the command's own connection, idle while the
workers run, one worker at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg

OPEN_WAIT = 2.0  # seconds to get the first connection before the run borrows the command's one
TAKE_WAIT = 120.0  # seconds a worker may wait for a connection (statements take milliseconds)
CLOSE_WAIT = 1.0  # seconds closing waits for the pool's own threads


def _stopped() -> Exception:
    """The error of a worker that asks for a connection once the run is over."""
    from psycopg_pool import PoolClosed

    return PoolClosed("the poll run was stopped")


class Connections:
    """The run's connections: `connection()` lends one to a worker for a statement or a transaction."""

    def __init__(self, conninfo: str, size: int, fallback: psycopg.Connection | None = None) -> None:
        from psycopg_pool import ConnectionPool

        from .db import prepare_threshold

        threshold = prepare_threshold()  # TRACKCTL_PREPARED_STATEMENTS, checked before anything opens

        def configure(conn: psycopg.Connection) -> None:
            # Every connection of the run like the command's own: autocommit (one statement is
            # its own transaction), prepared statements as the environment allows (poolers).
            conn.autocommit = True
            conn.prepare_threshold = threshold

        self._pool = ConnectionPool(
            conninfo, min_size=1, max_size=max(1, size), open=False, configure=configure,
            kwargs={"application_name": "trackctl", "connect_timeout": 10}, timeout=TAKE_WAIT,
            name="trackctl-poll")
        self._fallback = fallback
        self._borrowed: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._opened = False
        self._aborted = False

    def _open(self) -> None:
        """Open the pool when a worker first needs it (a run with nothing to poll opens nothing)."""
        from psycopg_pool import PoolTimeout

        with self._lock:
            if self._opened or self._aborted:
                return
            try:
                self._pool.open(wait=True, timeout=OPEN_WAIT)
            except PoolTimeout:  # wait() has closed the pool
                if self._fallback is None:
                    raise
                self._borrowed = self._fallback
            self._opened = True

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if not self._opened:
            self._open()
        if self._borrowed is None:
            with self._pool.connection() as conn:
                yield conn
            return
        with self._lock:
            conn = self._borrowed
            if self._aborted:
                raise _stopped()
            if conn.closed:
                raise psycopg.OperationalError("the connection to the database was lost")
            try:
                yield conn
            finally:
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()

    def abort(self, cause: BaseException) -> None:
        """Fail every worker waiting for a connection, and any that asks later: the run is over."""
        with self._lock:
            self._aborted = True
        self._pool.close(timeout=0)

    def close(self) -> None:
        self._pool.close(timeout=CLOSE_WAIT)
