"""trackctl/statuses.py mirrors the status table, the source of the status model."""

from __future__ import annotations

import re

import psycopg
import pytest

from trackctl import statuses
from trackctl.carriers import POLLED_STATUSES, add_carrier
from trackctl.carriers.base import STATUSES, TERMINAL


def test_the_python_status_model_is_the_status_table(conn):
    rows = conn.execute("SELECT key, label, terminal FROM sequencing.status ORDER BY position").fetchall()
    assert [(k, statuses.LABELS[k], k in statuses.TERMINAL) for k in statuses.STATUSES] == rows


def test_polled_statuses_are_the_ones_that_are_not_terminal(conn):
    polled = [k for (k,) in conn.execute(
        "SELECT key FROM sequencing.status WHERE NOT terminal ORDER BY position").fetchall()]
    assert list(statuses.POLLED) == polled == list(POLLED_STATUSES)


def test_adapters_see_the_same_model():
    assert STATUSES is statuses.STATUSES and TERMINAL is statuses.TERMINAL


def test_a_shipment_status_is_a_key_of_the_model_and_the_keys_stay(conn):
    # Migration 0011: the shipment's status is checked against the model's keys by a CHECK (not a
    # foreign key per row); the keys themselves cannot change, so the list stays the table's.
    definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE conname = 'tracking_status_known'").fetchone()[0]
    assert tuple(re.findall(r"'([a-z_]+)'::text", definition)) == statuses.STATUSES
    keys = [r[0] for r in conn.execute("SELECT key FROM sequencing.status ORDER BY position")]
    assert tuple(keys) == statuses.STATUSES
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("DELETE FROM sequencing.status WHERE key = 'exception'")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("UPDATE sequencing.status SET key = 'lost' WHERE key = 'exception'")
    conn.execute("UPDATE sequencing.status SET label = label || '' WHERE key = 'exception'")  # labels may change
    add_carrier(conn, "acme")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO sequencing.tracking (tracking_id, source, order_id, freightcarrier_id, status, "
                     "assigned_at) SELECT 'EXT12345', 'external', 'o-1', c.id, 'lost', now() "
                     "FROM sequencing.carrier c LIMIT 1")
