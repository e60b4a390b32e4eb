"""The adapter interface: what a carrier adapter is given, what it returns and what it raises.

An adapter turns one carrier's tracking API into normalised events. trackctl creates one
adapter object per carrier and poll run (`Adapter(config)`) and calls `fetch(shipment)` -- or,
for an adapter that declares `max_batch` > 1, `fetch_batch(shipments)` with up to that many --
from several worker threads at once, so both must be thread-safe. See docs/ADAPTERS.md.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..statuses import STATUSES, TERMINAL  # noqa: F401  (adapters import them from here)

MAX_BODY = 1024 * 1024  # a response body above 1 MiB is a failed request
DEFAULT_RETRY_AFTER = 60.0  # seconds, when a 429 has no readable Retry-After
MAX_RETRY_AFTER = 86_400.0  # a Retry-After further away than a day is taken as a day
MIN_RETRY_AFTER = 1.0

# Column limits of sequencing.tracking_event: longer text is cut, longer keys are hashed.
MAX_KEY = 300
MAX_RAW_STATUS = 200
MAX_DESCRIPTION = 2000
MAX_LOCATION = 500


@dataclass(frozen=True)
class AdapterConfig:
    """What an adapter is built from: the carrier's settings, with the token already resolved."""

    carrier: str
    url: str | None = None
    token: str | None = field(default=None, repr=False)  # never printed, never logged
    timeout: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)
    user_agent: str = "trackctl"
    # Secret settings (karrio credentials), read from the environment when polling; never printed.
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Pacing and accounting of the requests (see Calls); adapters that make several requests per
    # fetch (17track) use it themselves, for the others trackctl counts one request per fetch.
    calls: "Calls | None" = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ShipmentRef:
    """The shipment an adapter is asked about."""

    code: str
    order_id: str
    status: str
    assigned_at: datetime
    poll_count: int = 0  # polls made before this one (the simulator derives its failures from it)
    registered: bool = False  # the carrier's tracking service was told about the code (17TRACK register)


@dataclass(frozen=True)
class CarrierEvent:
    """One event as the carrier reported it, normalised.

    `key` is the carrier's identity of the event (stable across polls): it is the dedupe key.
    `status` is a status-model key, or None when the carrier's status is not one trackctl knows;
    `raw_status` always keeps what the carrier said. `occurred_at` is timezone-aware.
    """

    key: str
    occurred_at: datetime
    status: str | None
    raw_status: str
    description: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class ShipmentResult:
    """What a batch adapter says about one shipment of a request.

    `error` set: this shipment failed (the request itself did not). `registered`: the carrier's
    service now knows the number (recorded once; ShipmentRef.registered says so next time).
    `stale`: the carrier has given up on the number (17TRACK Expired): flag it stale.
    """

    events: Sequence[CarrierEvent] = ()
    error: str | None = None
    registered: bool = False
    stale: bool = False


class Calls:
    """Pacing and accounting of one carrier's HTTP requests, handed to adapters in AdapterConfig.

    `with calls.request("track", numbers=40) as call:` waits for the carrier's rate limit (shared
    by every process and host through the database), then times the request and records its
    outcome: ok, failed (FetchFailed or any other exception) or rate_limited (RateLimited).
    `call.registered = n` records numbers a register request made known. Adapters whose requests
    are made by a library (karrio) call `pace()` before each request and `record(...)` after. Without a poll run
    (tests, scripts) nothing is paced or recorded.
    """

    def __init__(self, pace: Callable[[], None] | None = None,
                 record: Callable[[str, str, int, int, float], None] | None = None) -> None:
        self._pace = pace
        self._record = record

    def bind(self, pace: Callable[[], None] | None, record: Callable[[str, str, int, int, float], None] | None) -> None:
        """Set the pacing and recording of this carrier's requests (the poller does, per run)."""
        self._pace, self._record = pace, record

    def pace(self) -> None:
        """Wait until the carrier's rate limit lets one more request start."""
        if self._pace is not None:
            self._pace()

    def record(self, kind: str, outcome: str, numbers: int, registered: int, latency_ms: float) -> None:
        """Record one request made (outcome: ok, failed or rate_limited)."""
        if self._record is not None:
            self._record(kind, outcome, numbers, registered, latency_ms)

    @contextlib.contextmanager
    def request(self, kind: str, numbers: int) -> Iterator["Call"]:
        self.pace()
        call = Call()
        started = time.monotonic()
        outcome = "failed"
        try:
            yield call
            outcome = "ok"
        except RateLimited:
            outcome = "rate_limited"
            raise
        finally:
            self.record(kind, outcome, numbers, call.registered, (time.monotonic() - started) * 1000.0)


@dataclass
class Call:
    registered: int = 0


class FetchFailed(Exception):
    """The request failed (timeout, connection error, 5xx, invalid or oversized body).

    The message must never contain the token; trackctl also redacts it as a second line of defence.
    """


class RateLimited(Exception):
    """HTTP 429: nobody may call the carrier for `retry_after` seconds (None: the default, 60 s)."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"rate limited (HTTP 429), retry after {retry_after if retry_after is not None else 'default'} s")
        self.retry_after = retry_after


@runtime_checkable
class Adapter(Protocol):
    """What trackctl calls. Return the carrier's events for the shipment ([] = no news)."""

    def fetch(self, shipment: ShipmentRef) -> Sequence[CarrierEvent]: ...


class AdapterClass(Protocol):
    """What the `trackctl.carriers` entry point names (a class, or any callable alike).

    Optional class attributes: `requires_url` / `requires_token` (True: a carrier cannot be
    given the adapter without a base URL / a token variable), `max_batch` (shipments per request,
    default 1; above 1 the adapter has `fetch_batch(shipments) -> {code: ShipmentResult}`),
    `rate_limit` (requests per second
    the carrier allows, default none), `shared_rate_limit` (True: the limit is per API key, so
    carriers with the same adapter, token variable and URL share it), `accounts_requests` (True:
    the adapter paces and records its requests through `config.calls` itself) and, with
    `stop_batch(shipments)`, numbers registered with the carrier's service are told to stop once
    terminal or stale.
    """

    requires_url: ClassVar[bool]

    def __call__(self, config: AdapterConfig) -> Adapter: ...


def parse_options_none(raw: Mapping[str, str]) -> dict[str, Any]:
    """The default `parse_options`: an adapter without options accepts none."""
    if raw:
        raise ValueError(f"this adapter takes no options (got {', '.join(sorted(raw))})")
    return {}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the seconds a Retry-After header asks for (seconds or an HTTP date), None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # HTTP dates are GMT
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def event_key(key: str) -> str:
    """Return a dedupe key that fits the column: long carrier identities are replaced by their hash."""
    if 1 <= len(key) <= MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def clip(text: str | None, limit: int) -> str | None:
    """Return text without control characters and cut to `limit` characters; None for empty."""
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:limit] or None


def event_objects(events: Sequence[Any]) -> Iterator[Mapping[str, Any]]:
    """Yield the events of a body's event list, raising FetchFailed at the first that is not an object."""
    for event in events:
        if not isinstance(event, dict):
            raise FetchFailed("invalid body: an event is not an object")
        yield event
