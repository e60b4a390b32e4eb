"""trackctl/statuses.py mirrors the status table, the source of the status model."""

from __future__ import annotations

from trackctl import statuses
from trackctl.carriers import POLLED_STATUSES
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
