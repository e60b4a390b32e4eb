"""The poll run's connection pool (trackctl/poll_connections.py, on psycopg_pool), on a real server."""

from __future__ import annotations

import threading

import psycopg
import pytest

from trackctl.db import conninfo_of
from trackctl.poll_connections import Connections


def test_a_connection_killed_on_the_server_is_replaced_not_handed_out_again(conn):
    pool = Connections(conninfo_of(conn), size=1)
    try:
        with pool.connection() as worker:
            first = worker.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (first,))
        with pytest.raises(psycopg.OperationalError):
            with pool.connection() as worker:
                worker.execute("SELECT 1")
        # The only connection of the pool was dead: the next worker gets a new, working one.
        with pool.connection() as worker:
            assert worker.execute("SELECT pg_backend_pid()").fetchone()[0] != first
            assert worker.autocommit
    finally:
        pool.close()


def test_a_failed_transaction_is_rolled_back_before_the_next_worker_gets_the_connection(conn):
    pool = Connections(conninfo_of(conn), size=1)
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with pool.connection() as worker, worker.transaction():
                worker.execute("SELECT 1 / 0")
        with pool.connection() as worker:
            assert worker.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert worker.execute("SELECT 2").fetchone() == (2,)
    finally:
        pool.close()


@pytest.mark.parametrize("setting, threshold", [("off", None), ("on", 5)])
def test_the_pools_connections_follow_trackctl_prepared_statements(conn, monkeypatch, setting, threshold):
    monkeypatch.setenv("TRACKCTL_PREPARED_STATEMENTS", setting)
    pool = Connections(conninfo_of(conn), size=2)
    try:
        with pool.connection() as worker:
            assert worker.prepare_threshold == threshold
    finally:
        pool.close()


def test_abort_fails_a_worker_waiting_for_a_connection_instead_of_leaving_it_waiting(conn):
    pool = Connections(conninfo_of(conn), size=1)
    failed: list[BaseException] = []

    def waiter() -> None:
        try:
            with pool.connection():
                pass
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            failed.append(exc)

    try:
        with pool.connection():
            thread = threading.Thread(target=waiter, daemon=True)
            thread.start()
            thread.join(0.5)
            assert thread.is_alive(), "the waiter got a connection the pool did not have"
            pool.abort(RuntimeError("the database went away"))
            thread.join(30)
        assert not thread.is_alive()
        assert len(failed) == 1 and isinstance(failed[0], psycopg.OperationalError)
        with pytest.raises(psycopg.OperationalError):
            with pool.connection():
                pass
    finally:
        pool.close()


def test_without_any_connection_of_its_own_the_run_borrows_the_commands_one(conn):
    # A conninfo the server refuses (no such database) stands for a server with no room left.
    bad = conninfo_of(conn).replace(f"dbname={conn.info.dbname}", "dbname=trackctl_no_such_database")
    assert bad != conninfo_of(conn)
    pool = Connections(bad, size=4, fallback=conn)
    try:
        with pool.connection() as worker:
            assert worker is conn
    finally:
        pool.close()
    pool = Connections(bad, size=4)
    with pytest.raises(psycopg.OperationalError):
        with pool.connection():
            pass
    pool.close()
