"""Polling policy and reports: intervals, backoff, pacing constants, what a run returns.

Defaults are documented in docs/POLLING.md ("Defaults in one place").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .carriers.base import (MAX_DESCRIPTION, MAX_LOCATION, MAX_RAW_STATUS, STATUSES, CarrierEvent, FetchFailed,
                            clip, event_key)
from .errors import TrackctlError

DEFAULT_BUDGET = 50  # seconds; below the one-minute cron interval
# Seconds between polls of a shipment by its status (terminal statuses are never polled), and
# `moved`: the most a shipment waits after a poll that brought news (it is re-polled soon, as
# 17TRACK does: a parcel that just moved is likely to move again).
DEFAULT_INTERVALS = {
    "pending": 3600,
    "in_transit": 1800,
    "out_for_delivery": 600,
    "failed_attempt": 1800,
    "available_for_pickup": 7200,
    "exception": 3600,
    "moved": 900,
}
INTERVAL_JITTER = 0.10  # ± this fraction, so shipments assigned together spread out
BACKOFF_BASE = 60.0  # first retry after a failed request, before jitter
BACKOFF_CAP = 3600.0
LEASE_MARGIN = 15.0  # a claim and a slot are leased for the carrier's timeout plus this
MAX_WORKERS_PER_CARRIER = 32
WORKERS_PER_SLOT = 2  # one worker records an answer while another has the slot for the next request
MAX_CONNECTIONS = 16
BUSY_PAUSE = (0.01, 0.2)  # waiting for a free slot held by another process: from, up to (s)
MAX_ERROR_TEXT = 500
# Rate limits: a sliding window in the database, at most int(rate) request starts within
# int(rate) / rate x PACE_MARGIN seconds (3/s: 3 starts in any 1.15 s), starts booked at most
# PACE_LEAD seconds ahead; a worker that wakes more than PACE_LATE after its booked start records
# its real start, so that scheduling delays on a loaded host cannot crowd four requests into a
# second at the carrier.
PACE_MARGIN = 1.15
PACE_LEAD = 0.1
PACE_LATE = 0.01


@dataclass(frozen=True)
class PollFailure:
    carrier: str
    code: str | None  # None: the carrier could not be polled at all
    reason: str
    # why the carrier could not be polled, as an error naming its fields (the CLI names them as flags)
    problem: TrackctlError | None = field(default=None, repr=False, compare=False)


@dataclass
class CarrierSummary:
    carrier: str
    adapter: str
    polled: int = 0  # shipments asked about
    ok: int = 0
    failed: int = 0
    rate_limited: int = 0
    new_events: int = 0
    changed: int = 0  # status changes
    stale: int = 0  # shipments flagged stale
    note: str = ""  # why the carrier stopped before running out of due shipments
    problem: TrackctlError | None = field(default=None, repr=False, compare=False)  # as PollFailure's


@dataclass(frozen=True)
class PollReport:
    carriers: list[CarrierSummary]
    failures: list[PollFailure]
    seconds: float
    interrupted: bool = False  # the caller's stop flag ended the run early
    released: int = 0  # claims of abandoned requests given back (due again at once)

    @property
    def failed_requests(self) -> int:
        """Failed shipments, 429s included."""
        return sum(c.failed + c.rate_limited for c in self.carriers)

    @property
    def unavailable(self) -> int:
        """Carriers that could not be polled at all (token missing, adapter not loadable)."""
        return sum(1 for f in self.failures if f.code is None)

    @property
    def failed(self) -> bool:
        return bool(self.failed_requests or self.unavailable)

    @property
    def polled(self) -> int:
        return sum(c.polled for c in self.carriers)


def intervals_of(settings) -> dict[str, int]:
    """The poll intervals of a carrier: the defaults with its overrides."""
    return {**DEFAULT_INTERVALS, **{k: int(v) for k, v in settings.poll_intervals.items()}}


def next_interval(intervals: dict[str, int], status: str, moved: bool = False) -> timedelta:
    """Time to the next poll of a shipment in `status` (sooner when it just moved), with jitter."""
    seconds = intervals.get(status, intervals["pending"])
    if moved:
        seconds = min(seconds, intervals["moved"])
    return timedelta(seconds=seconds * random.uniform(1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER))


def redact(text: str) -> str:
    from .logs import redact as _redact

    return _redact(text)


def normalise_events(events: Sequence[CarrierEvent]) -> list[CarrierEvent]:
    """Return an adapter's events checked and fitted to the columns; raise FetchFailed on nonsense."""
    out: dict[str, CarrierEvent] = {}
    if events is None or isinstance(events, (str, bytes)):
        raise FetchFailed("the adapter returned no list of events")
    for e in events:
        key, occurred, raw = getattr(e, "key", None), getattr(e, "occurred_at", None), getattr(e, "raw_status", None)
        if not isinstance(key, str) or not key:
            raise FetchFailed("the adapter returned an event without a key")
        if not isinstance(occurred, datetime) or occurred.tzinfo is None or occurred.utcoffset() is None:
            raise FetchFailed("the adapter returned an event without a timezone-aware occurred_at")
        status = getattr(e, "status", None)
        raw_text = clip(raw if isinstance(raw, str) else None, MAX_RAW_STATUS) or (status if isinstance(status, str) else None)
        if not raw_text:
            raise FetchFailed("the adapter returned an event without a raw status")
        description, location = getattr(e, "description", None), getattr(e, "location", None)
        key = event_key(key)
        out.setdefault(key, CarrierEvent(
            key=key, occurred_at=occurred, status=status if status in STATUSES else None, raw_status=raw_text,
            description=clip(description if isinstance(description, str) else None, MAX_DESCRIPTION),
            location=clip(location if isinstance(location, str) else None, MAX_LOCATION)))
    return list(out.values())
