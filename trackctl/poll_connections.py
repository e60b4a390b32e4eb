"""The database connections of one poll run, shared by its worker threads (trackctl/poll.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import psycopg

from .errors import DatabaseUnavailable


class Connections:
    """A few connections shared by the worker threads, each used by one thread at a time.

    A thread that finds none idle waits until one is given back, dropped (it may then open a new
    one) or the run is aborted; none can wait for ever. When the server refuses a new connection
    (max_connections, a role's limit) the run goes on with those it has, and with none at all it
    borrows the command's own connection, which is idle while the workers run.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int,
                 fallback: psycopg.Connection | None = None) -> None:
        self._connect = connect
        self._size = max(1, size)
        self._fallback = fallback
        self._idle: list[psycopg.Connection] = []
        self._made = 0  # connections in use or idle, the fallback included
        self._cond = threading.Condition()
        self._all: list[psycopg.Connection] = []  # the ones this pool opened, and closes
        self._aborted: BaseException | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._take()
        try:
            yield conn
        except psycopg.OperationalError:
            self._drop(conn)
            raise
        except BaseException:
            self._give_back(conn)
            raise
        else:
            self._give_back(conn)

    def _take(self) -> psycopg.Connection:
        while True:
            with self._cond:
                while True:
                    if self._aborted is not None:
                        raise RuntimeError("the poll run was stopped") from self._aborted
                    if self._idle:
                        return self._idle.pop()
                    if self._made < self._size:
                        self._made += 1
                        break
                    self._cond.wait()
            try:
                conn = self._connect()
            except DatabaseUnavailable:
                with self._cond:
                    self._made -= 1
                    self._cond.notify_all()
                    if self._made == 0 and self._fallback is None:
                        raise
                    # The server refused one more: make do with what is open (or borrow the
                    # command's connection when nothing is), and wait for one of them.
                    if self._made == 0:
                        self._idle.append(self._fallback)
                        self._fallback = None
                        self._made = 1
                    self._size = self._made
                continue
            except BaseException:
                with self._cond:
                    self._made -= 1
                    self._cond.notify_all()
                raise
            with self._cond:
                self._all.append(conn)
            return conn

    def _give_back(self, conn: psycopg.Connection) -> None:
        if conn.closed:
            self._drop(conn)
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                self._drop(conn)
                return
        with self._cond:
            self._idle.append(conn)
            self._cond.notify()

    def _drop(self, conn: psycopg.Connection) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        with self._cond:
            self._made -= 1
            self._cond.notify_all()  # a waiter may open a new one in its place

    def abort(self, cause: BaseException) -> None:
        """Wake every thread waiting for a connection with an error: the run is over."""
        with self._cond:
            if self._aborted is None:
                self._aborted = cause
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
