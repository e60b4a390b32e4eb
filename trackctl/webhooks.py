"""Webhook subscribers, their secrets and Standard Webhooks signatures, and the deliveries table.

A secret is `whsec_` + base64 of 24 to 64 random bytes. It is stored (every delivery is signed
with it) and shown once, when trackctl makes it; afterwards only its masked form. Records that
carry a secret keep it out of their repr, so a stray log line or traceback cannot show it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from . import queries
from .errors import AlreadyExists, InvalidValue, NotFound, UsageError, param
from .names import check_id, check_limit
from .outbox import check_types

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)  # at once, then 5 s ... 10 h
DEFAULT_IN_FLIGHT = 16
ROTATION_OVERLAP = timedelta(hours=24)
URL = re.compile(r"^https?://[^\x00-\x20\x7f/?#@]+(?:[/?#][^\x00-\x20\x7f]*)?$")
# Query parameters whose values are credentials (`?token=...`, `?sig=...`): shown as ***.
SECRET_PARAMETER = re.compile(r"(?i)token|secret|key|sig|pass|auth|credential")
_SCHEDULE_STEP = re.compile(r"^(\d{1,9})(ms|s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Subscriber:
    id: int
    url: str
    types: list[str] | None
    retry_schedule: list[int]
    max_in_flight: int
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    secret: str = field(repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None

    @property
    def masked_secret(self) -> str:
        return mask_secret(self.secret)

    def listing(self) -> dict:
        """The record `webhook list` shows: everything but the secrets, which appear masked."""
        return {"id": self.id, "url": shown_url(self.url), "types": ",".join(self.types) if self.types else "*",
                "retry_schedule": format_schedule(self.retry_schedule), "max_in_flight": self.max_in_flight,
                "enabled": self.enabled, "disabled_reason": self.disabled_reason,
                "secret": self.masked_secret,
                "rotating_until": self.previous_until, "created_at": self.created_at}


LISTING_COLUMNS = ["id", "url", "types", "retry_schedule", "max_in_flight", "enabled", "disabled_reason",
                   "secret", "rotating_until", "created_at"]

SQL = queries.load("webhooks")


# --- secrets and signatures --------------------------------------------------------------------

def generate_secret() -> str:
    """Return a new random secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a secret (the base64-decoded part after `whsec_`), or raise."""
    # The message never quotes the value: it is a secret even when it is malformed.
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidValue("the webhook secret must start with 'whsec_'",
                           hint=f"omit {param('secret')} to have one generated")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue("the webhook secret is not base64 after 'whsec_'",
                           hint=f"omit {param('secret')} to have one generated") from None
    if not 24 <= len(key) <= 64:
        raise InvalidValue(f"the webhook secret decodes to {len(key)} bytes (24 to 64 needed)",
                           hint=f"omit {param('secret')} to have one generated")
    return key


def mask_secret(secret: str) -> str:
    """Return a secret in the only form trackctl shows after creating it: `whsec_…` + 4 characters."""
    return f"{SECRET_PREFIX}…{secret[-4:]}" if secret else ""


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one Standard Webhooks signature, `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value: one signature per key (two during a rotation)."""
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


# --- retry schedules ---------------------------------------------------------------------------

def parse_schedule(text: str) -> list[int]:
    """Return the seconds of a schedule like `0s,5s,5m,30m,2h` (the first: before the first attempt)."""
    steps = [p.strip() for p in (text or "").split(",")]
    if not steps or not all(steps):
        raise InvalidValue("the retry schedule is empty or has an empty step", hint="e.g. 0s,5s,5m,30m,2h")
    if len(steps) > 50:
        raise InvalidValue("the retry schedule has more than 50 steps")
    seconds = []
    for step in steps:
        match = _SCHEDULE_STEP.match(step)
        if not match:
            raise InvalidValue(f"invalid retry schedule step {step[:20]!r}", hint="use e.g. 0s, 5s, 5m, 2h, 1d")
        n, unit = int(match.group(1)), match.group(2) or "s"
        value = -(-n // 1000) if unit == "ms" else n * _UNITS[unit]
        if value > 31_536_000:
            raise InvalidValue(f"retry schedule step {step!r} is longer than a year")
        seconds.append(value)
    return seconds


def format_schedule(seconds: list[int]) -> str:
    out = []
    for s in seconds:
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if s and s % size == 0:
                out.append(f"{s // size}{unit}")
                break
        else:
            out.append(f"{s}s")
    return ",".join(out)


def check_url(url: str) -> str:
    if len(url) > 2000 or not URL.fullmatch(url):
        raise InvalidValue(f"invalid webhook URL {shown_url(url)[:80]!r}",
                           hint="give an http:// or https:// URL without user:password@ or control characters")
    return url


def shown_url(url: str) -> str:
    """Return the URL as trackctl prints it: credentials in user:password@ or in the query are ***."""
    base, sep, query = url.partition("?")
    base = re.sub(r"^([a-z]+://)[^/@]*@", r"\1***@", base, flags=re.I)
    if not sep:
        return base
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}=***" if eq and SECRET_PARAMETER.search(name) else item)
    return base + "?" + "&".join(parts) + fragment


# --- subscribers -------------------------------------------------------------------------------

def _subscriber(row: tuple) -> Subscriber:
    (id_, url, types, schedule, in_flight, enabled, reason, created, secret, previous, until) = row
    return Subscriber(id_, url, types, list(schedule), in_flight, enabled, reason, created, secret, previous, until)


def add_subscriber(conn: psycopg.Connection, url: str, *, secret: str | None = None,
                   types: list[str] | None = None, retry_schedule: list[int] | None = None,
                   max_in_flight: int = DEFAULT_IN_FLIGHT) -> Subscriber:
    """Create a subscriber (with a new secret unless one is given) and return it, secret included."""
    check_url(url)
    types = check_types(types)
    if secret is None:
        secret = generate_secret()
    secret_key(secret)
    schedule = list(retry_schedule) if retry_schedule is not None else list(DEFAULT_SCHEDULE)
    if not 1 <= max_in_flight <= 256:
        raise InvalidValue(f"{param('max_in_flight')} must be between 1 and 256", value=max_in_flight)
    try:
        with conn.transaction():
            row = conn.execute(SQL.insert_subscriber, {"url": url, "secret": secret, "types": types, "schedule": schedule,
                                                       "max_in_flight": max_in_flight}).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AlreadyExists(f"a webhook for {shown_url(url)[:80]} already exists",
                            hint="see 'trackctl webhook list'; remove it first to change it") from None
    return get_subscriber(conn, row[0])


ALL_TYPES: list[str] = []  # `update_subscriber(types=ALL_TYPES)`: every event type from now on


def update_subscriber(conn: psycopg.Connection, subscriber_id: int, *, url: str | None = None,
                      types: list[str] | None = None, max_in_flight: int | None = None) -> Subscriber:
    """Change a subscriber's URL, event types or in-flight cap (None: unchanged); return it, secret included.

    `types=ALL_TYPES` (an empty list) subscribes it to every type. Deliveries already queued
    keep going to the subscriber, at its new URL from the next attempt on.
    """
    if url is None and types is None and max_in_flight is None:
        raise UsageError("nothing to change", hint=f"give {param('url')}, {param('types')} or {param('max_in_flight')}")
    if url is not None:
        check_url(url)
    checked = check_types(types) if types is not None else None
    if max_in_flight is not None and not 1 <= max_in_flight <= 256:
        raise InvalidValue(f"{param('max_in_flight')} must be between 1 and 256", value=max_in_flight)
    params = {"id": subscriber_id, "url": url, "set_types": types is not None, "types": checked,
              "max_in_flight": max_in_flight}
    try:
        with conn.transaction():
            row = conn.execute(SQL.update_subscriber, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AlreadyExists(f"a webhook for {shown_url(url or '')[:80]} already exists",
                            hint="see 'trackctl webhook list'") from None
    if row is None:
        raise NotFound(f"no webhook with id {subscriber_id}", hint="see 'trackctl webhook list'")
    return get_subscriber(conn, subscriber_id)


def get_subscriber(conn: psycopg.Connection, subscriber_id: int) -> Subscriber:
    row = conn.execute(SQL.select_subscribers, {"id": subscriber_id, "enabled_only": False}).fetchone()
    if row is None:
        raise NotFound(f"no webhook with id {subscriber_id}", hint="see 'trackctl webhook list'")
    return _subscriber(row)


def list_subscribers(conn: psycopg.Connection, *, enabled_only: bool = False) -> list[Subscriber]:
    """Return every subscriber by id (secrets included: show them with `mask_secret` only)."""
    rows = conn.execute(SQL.select_subscribers, {"id": None, "enabled_only": enabled_only}).fetchall()
    return [_subscriber(r) for r in rows]


def remove_subscriber(conn: psycopg.Connection, subscriber_id: int) -> str:
    """Delete a subscriber and its deliveries; return its URL."""
    row = conn.execute(SQL.delete_subscriber, {"id": subscriber_id}).fetchone()
    if row is None:
        raise NotFound(f"no webhook with id {subscriber_id}", hint="see 'trackctl webhook list'")
    return row[0]


def rotate_secret(conn: psycopg.Connection, subscriber_id: int, *, secret: str | None = None,
                  overlap: timedelta = ROTATION_OVERLAP) -> Subscriber:
    """Give a subscriber a new secret (generated unless given) and return it, secret included.

    Until `overlap` has passed, deliveries carry two signatures, one with each secret, so the
    receiver can switch over at its own pace (Standard Webhooks rotation).
    """
    if secret is None:
        secret = generate_secret()
    secret_key(secret)
    if overlap < timedelta(0):
        raise InvalidValue("the overlap must not be negative")
    if conn.execute(SQL.rotate_secret, {"overlap": overlap, "secret": secret, "id": subscriber_id}).fetchone() is None:
        raise NotFound(f"no webhook with id {subscriber_id}", hint="see 'trackctl webhook list'")
    return get_subscriber(conn, subscriber_id)


def enable_subscriber(conn: psycopg.Connection, subscriber_id: int) -> Subscriber:
    """Enable a subscriber again (after a 410 Gone disabled it); its pending deliveries resume."""
    if conn.execute(SQL.enable_subscriber, {"id": subscriber_id}).fetchone() is None:
        raise NotFound(f"no webhook with id {subscriber_id}", hint="see 'trackctl webhook list'")
    return get_subscriber(conn, subscriber_id)


# --- deliveries --------------------------------------------------------------------------------

DELIVERY_STATUSES = ("pending", "done", "dead")


@dataclass(frozen=True)
class Delivery:
    id: int
    subscriber_id: int
    event_id: str
    type: str
    cursor: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


DELIVERY_COLUMNS = ["id", "subscriber_id", "event_id", "type", "status", "attempts", "next_attempt_at",
                    "last_attempt_at", "last_status", "last_error", "delivered_at"]

def list_deliveries(conn: psycopg.Connection, *, status: str | None = None, subscriber_id: int | None = None,
                    limit: int | None = 100) -> list[Delivery]:
    """Return deliveries newest first, optionally of one status and one subscriber."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidValue(f"unknown delivery status {status[:20]!r} (known: {', '.join(DELIVERY_STATUSES)})")
    check_limit(limit)
    check_id(subscriber_id, "subscriber_id")
    rows = conn.execute(SQL.list_deliveries, {"status": status, "subscriber": subscriber_id, "limit": limit})
    return [Delivery(*r) for r in rows.fetchall()]


def replay_delivery(conn: psycopg.Connection, delivery_id: int) -> None:
    """Make one done or dead delivery pending again, due now."""
    if conn.execute(SQL.replay_one, {"id": delivery_id}).fetchone() is None:
        row = conn.execute(SQL.delivery_status, {"id": delivery_id}).fetchone()
        if row is None:
            raise NotFound(f"no delivery with id {delivery_id}", hint="see 'trackctl webhook deliveries'")
        raise UsageError(f"delivery {delivery_id} is already pending", hint="'trackctl notify' will deliver it")


def replay_dead(conn: psycopg.Connection, subscriber_id: int | None = None) -> int:
    """Make every dead delivery (of one subscriber, or all) pending again; return how many."""
    if subscriber_id is not None:
        get_subscriber(conn, subscriber_id)
    return conn.execute(SQL.replay_dead, {"subscriber": subscriber_id}).rowcount
