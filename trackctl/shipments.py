"""Shipment changes: every new event, status change and stale flag goes through `apply_status_change`.

One function, one transaction: the shipment row is locked, the events are inserted once each
(ON CONFLICT on the per-shipment dedupe key), the status is recomputed as the newest event by
the carrier's event time among known statuses (not by arrival order), and the stale flag is set
or cleared. Carrier polls, `trackctl cancel`, `trackctl mark` and the stale sweep all call it,
so whatever must happen with a change (the outbox row of issue 5) has exactly one place to go.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from . import queries
from .carriers.base import STATUSES, TERMINAL, CarrierEvent
from .errors import InvalidValue, NotFound, TransitionRefused, param
from .outbox import record_stale, record_status_changed

MANUAL_NOTE_MAX = 500
SQL = queries.load("shipments")


@dataclass(frozen=True)
class StatusChange:
    """What one call changed on one shipment (possibly nothing)."""

    shipment_id: int
    code: str  # the tracking code
    order_id: str
    carrier: str  # the carrier's name
    previous_status: str  # before this call; equal to `status` when it changed nothing
    status: str  # after it
    new_events: int  # events stored by this call (re-reported ones are not counted)
    occurred_at: datetime | None = None  # carrier time of the event that set `status`, when it changed
    description: str | None = None
    location: str | None = None
    stale: bool = False  # the shipment is stale after this call
    flagged_stale: bool = False  # this call flagged it stale
    last_event_at: datetime | None = None  # when trackctl last recorded news (assignment if never)

    @property
    def changed(self) -> bool:
        return self.status != self.previous_status


@contextlib.contextmanager
def _transaction(conn: psycopg.Connection) -> Iterator[None]:
    """Join the caller's transaction if there is one (the poller's), else open one."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        with conn.transaction():
            yield
    else:
        yield


def manual_event(status: str, note: str | None = None) -> CarrierEvent:
    """Return the event a person's change records (its time is set when it is applied)."""
    if status not in STATUSES:
        raise InvalidValue(f"unknown status {status[:40]!r} (known: {', '.join(STATUSES)})")
    default = "Cancelled with trackctl cancel" if status == "cancelled" else f"Marked {status} with trackctl mark"
    text = (note or "").strip()
    if len(text) > MANUAL_NOTE_MAX or any(not ch.isprintable() for ch in text):
        raise InvalidValue(f"{param('note')} must be at most {MANUAL_NOTE_MAX} printable characters")
    return CarrierEvent(key=f"manual:{uuid.uuid4().hex}", occurred_at=None,  # type: ignore[arg-type]
                        status=status, raw_status=status, description=text or default)


def check_manual_transition(code: str, current: str, target: str) -> bool:
    """Return False when the change is a no-op, True when allowed; raise TransitionRefused otherwise."""
    verb = "cancelled" if target == "cancelled" else f"marked {target}"
    if current in TERMINAL:
        if current == target:
            return False
        raise TransitionRefused(f"shipment {code} is {current}: a {current} shipment cannot be {verb}",
                                hint="delivered, returned and cancelled are final")
    if target == "pending" and current != "pending":
        raise TransitionRefused(f"shipment {code} is {current}: it cannot go back to pending",
                                hint="mark it with the status it has now, e.g. in_transit or exception")
    return True


def apply_status_change(conn: psycopg.Connection, shipment_id: int, events: Sequence[CarrierEvent] = (), *,
                        source: str = "carrier", stale_after: timedelta | None = None) -> StatusChange:
    """Record events of one shipment and move its status; return what changed.

    `source` is `carrier` (events from an adapter, any order, re-reported ones ignored) or
    `manual` (one event from a person: the transition is checked against the current status
    under the row lock, and refused with TransitionRefused when it makes no sense).
    With `stale_after`, a shipment that gets no new event here and has had no news for longer
    is flagged stale (no longer polled); any new event clears the flag.
    Runs in the caller's transaction if there is one, else in its own.
    """
    if source not in ("carrier", "manual"):
        raise ValueError(f"unknown event source {source!r}")
    with _transaction(conn):
        row = conn.execute(SQL.lock_shipment, {"id": shipment_id, "stale_after": stale_after}).fetchone()
        if row is None:
            raise NotFound(f"no assigned shipment with id {shipment_id}")
        code, order_id, carrier, previous, was_stale, quiet_since, quiet_too_long = row
        if source == "manual":
            if len(events) != 1 or events[0].status is None:
                raise ValueError("a manual change is exactly one event with a status")
            if not check_manual_transition(code, previous, events[0].status):
                return StatusChange(shipment_id, code, order_id, carrier, previous, previous, 0,
                                    stale=was_stale, last_event_at=quiet_since)
            at = conn.execute(SQL.manual_time, (shipment_id,)).fetchone()[0]
            events = [CarrierEvent(events[0].key, at, events[0].status, events[0].raw_status,
                                   events[0].description, events[0].location)]
        new_events = 0
        status, occurred_at, description, location = previous, None, None, None
        if events:
            applied = conn.execute(SQL.apply_events, {
                "id": shipment_id, "source": source,
                "keys": [e.key for e in events],
                "times": [e.occurred_at for e in events],
                "statuses": [e.status if e.status in STATUSES else None for e in events],
                "raws": [e.raw_status for e in events],
                "descriptions": [e.description for e in events],
                "locations": [e.location for e in events],
            }).fetchone()
            new_events = applied[0]
            if new_events:
                quiet_since = applied[5]
                if applied[1] is not None and applied[1] != previous:
                    status, occurred_at, description, location = applied[1:5]
        flag = not new_events and not was_stale and bool(quiet_too_long) and previous not in TERMINAL
        if flag:
            quiet_since = conn.execute(SQL.update_shipment, {
                "id": shipment_id, "status": status, "news": False, "stale": True,
            }).fetchone()[0]
        change = StatusChange(
            shipment_id, code, order_id, carrier, previous, status, new_events,
            occurred_at=occurred_at, description=description, location=location,
            stale=flag or (was_stale and not new_events), flagged_stale=flag, last_event_at=quiet_since,
        )
        # The outbox row of the change, in this same transaction (../shared/WEBHOOKS.md).
        if change.changed:
            record_status_changed(conn, shipment_id, previous, occurred_at, description, location)
        if change.flagged_stale:
            record_stale(conn, shipment_id, quiet_since)
    return change


def _shipments_of(conn: psycopg.Connection, ref: str, carrier: str | None = None) -> list[tuple[int, str]]:
    carrier_id, carrier_name = None, None
    if carrier is not None:
        from .carriers import get_carrier

        resolved = get_carrier(conn, carrier, removed_too=True)  # raises UnknownCarrier with the known names
        carrier_id, carrier_name = resolved.id, resolved.name
    row = conn.execute(SQL.find_by_code, (ref,)).fetchone()
    if row is not None:
        if row[2] is None:  # no carrier: a free pool code (a carrier's own number may have no order)
            raise NotFound(f"code {ref!r} is free: no order has it yet")
        if carrier_id is not None and row[2] != carrier_name:
            raise NotFound(f"code {ref} belongs to carrier {row[2]}, not {carrier_name}: nothing was cancelled",
                           hint=f"drop {param('carrier')} to cancel it, or give its order id with {param('carrier')} {carrier_name}")
        return [(row[0], ref)]
    rows = conn.execute(SQL.find_by_order, {"order_id": ref, "carrier_id": carrier_id}).fetchall()
    if not rows:
        if carrier_id is not None and conn.execute(SQL.find_by_order, {"order_id": ref, "carrier_id": None}).fetchone():
            raise NotFound(f"order {ref[:80]!r} has no shipment with carrier {carrier_name}: nothing was cancelled",
                           hint=f"see its shipments with 'trackctl status --order {ref[:80]}'")
        raise NotFound(f"no shipment with code or order id {ref[:80]!r}",
                       hint="check it with 'trackctl status CODE' or 'trackctl status --order ORDER'")
    return [(r[0], r[1]) for r in rows]


def cancel(conn: psycopg.Connection, ref: str, note: str | None = None, *,
           carrier: str | None = None) -> list[StatusChange]:
    """Cancel the shipment with code `ref`, or every shipment of order `ref`; return the changes.

    With `carrier` (name or id) only that carrier's shipments of the order are cancelled (and a
    code of another carrier is refused). All or nothing: when one shipment cannot be cancelled
    (delivered, returned) nothing is, and TransitionRefused names it. Already cancelled shipments
    are left as they are.
    """
    event = manual_event("cancelled", note)
    with conn.transaction():
        targets = _shipments_of(conn, ref, carrier)
        return _cancel_all(conn, targets, event, f"order {ref}")


def _cancel_all(conn: psycopg.Connection, targets: list[tuple[int, str]], event: CarrierEvent,
                what: str) -> list[StatusChange]:
    changes = []
    for shipment_id, code in targets:
        try:
            changes.append(apply_status_change(conn, shipment_id, [event], source="manual"))
        except TransitionRefused as exc:
            if len(targets) > 1:
                raise TransitionRefused(f"{what}: {exc.message}; nothing was cancelled",
                                        hint="cancel the other codes one by one, e.g. 'trackctl cancel CODE'") from exc
            raise
    return changes


def cancel_open_of_carrier(conn: psycopg.Connection, carrier_id: int, note: str) -> list[StatusChange]:
    """Cancel every open shipment of a carrier, in the caller's transaction; return the changes."""
    event = manual_event("cancelled", note)
    targets = [(r[0], "") for r in conn.execute(SQL.open_of_carrier, (carrier_id,)).fetchall()]
    return _cancel_all(conn, targets, event, "carrier")


def mark(conn: psycopg.Connection, code: str, status: str, note: str | None = None) -> StatusChange:
    """Record a manual status for one shipment (carriers without an API); return the change."""
    event = manual_event(status, note)
    row = conn.execute(SQL.find_by_code, (code,)).fetchone()
    if row is None:
        raise NotFound(f"no shipment with code {code[:80]!r}", hint="mark takes a tracking code, not an order id")
    if row[2] is None:  # no carrier: a free pool code (a carrier's own number may have no order)
        raise NotFound(f"code {code!r} is free: no order has it yet")
    return apply_status_change(conn, row[0], [event], source="manual")


def sweep_stale(conn: psycopg.Connection, batch: int = 500, stop=None) -> list[StatusChange]:
    """Flag every open shipment with no news for longer than its carrier's stale_after; return them.

    Each shipment is its own transaction; once `stop` (anything with `is_set()`) is set, the sweep
    ends after the shipment in hand and returns those flagged so far.
    """
    flagged: list[StatusChange] = []
    while True:
        rows = conn.execute(SQL.quiet_shipments, {"limit": batch}).fetchall()
        done = 0
        for shipment_id, stale_after in rows:
            if stop is not None and stop.is_set():
                return flagged
            change = apply_status_change(conn, shipment_id, (), stale_after=stale_after)
            if change.flagged_stale:
                flagged.append(change)
                done += 1
        if done == 0:  # nothing (more) to flag, or only shipments another process changed meanwhile
            return flagged
