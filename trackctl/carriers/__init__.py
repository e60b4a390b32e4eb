"""Carrier records: add, change, list and resolve by name or numeric id (freightcarrier_id).

Besides its name and pool a carrier has adapter settings (which adapter, URL, the NAME of the
environment variable holding its token, concurrency cap, timeout, adapter options) and polling
policy (interval overrides, stale-after, breaker threshold and cool-down). Adapters live beside
this module; nothing heavy is imported here, since `trackctl assign` imports it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import queries
from ..errors import AlreadyExists, InUse, InvalidValue, UnknownCarrier, UnknownPool, param
from ..names import carrier_ref_id, check_carrier_name, check_pool_name
from ..statuses import POLLED

DEFAULT_MAX_CONCURRENCY = 6
DEFAULT_TIMEOUT = 10.0
MAX_CONCURRENCY = 256
MAX_TIMEOUT = 300.0
TOKEN_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SQL = queries.load("carriers")
# Statuses whose poll interval can be set (terminal shipments are never polled): statuses.POLLED.
POLLED_STATUSES = POLLED
# Interval keys besides the statuses: `moved`, the most a shipment waits after a poll with news.
INTERVAL_KEYS = tuple(POLLED_STATUSES) + ("moved",)
MAX_RATE_LIMIT = 10_000.0
SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Carrier:
    id: int
    name: str
    pool: str
    pool_id: int




def list_carriers(conn: psycopg.Connection) -> list[Carrier]:
    """Return every carrier, by id."""
    return [Carrier(*row) for row in conn.execute(SQL.list_carriers).fetchall()]


KNOWN_SHOWN = 10  # carriers named in an "unknown carrier" message


def unknown_carrier(ref: str, known: list[Carrier]) -> UnknownCarrier:
    names = ", ".join(c.name for c in known[:KNOWN_SHOWN]) or "none yet"
    if len(known) > KNOWN_SHOWN:
        names += f", ... ({len(known)} in all: 'trackctl carrier list')"
    return UnknownCarrier(f"unknown carrier {ref[:40]!r} (known: {names})",
                          hint="add one with 'trackctl carrier add NAME'")


def get_carrier(conn: psycopg.Connection, ref: str, *, removed_too: bool = False) -> Carrier:
    """Return the carrier named by `ref` (name or numeric id), or raise UnknownCarrier.

    A removed carrier is unknown unless `removed_too` (its shipments still name it).
    """
    row = conn.execute(SQL.carrier_by_ref, {"name": ref, "id": carrier_ref_id(ref),
                                            "removed_too": removed_too}).fetchone()
    if row is None:
        raise unknown_carrier(ref, list_carriers(conn))
    return Carrier(*row)


def add_carrier(conn: psycopg.Connection, name: str, carrier_id: int | None = None,
                pool: str = "default", **settings: Any) -> Carrier:
    """Create a carrier drawing codes from `pool`; return it.

    Keyword settings are those of `set_carrier` (adapter, url, token_env, max_concurrency, ...).
    """
    check_carrier_name(name)
    check_pool_name(pool)
    if carrier_id is not None and not 0 < carrier_id < 2**31:
        raise InvalidValue("carrier id must be a positive integer")
    try:
        with conn.transaction():
            row = conn.execute(SQL.insert_carrier, {"id": carrier_id, "name": name, "pool": pool}).fetchone()
            if row is not None and settings:
                _apply_settings(conn, row[0], name, None, settings)
    except psycopg.errors.UniqueViolation as exc:
        what = f"id {carrier_id}" if exc.diag.constraint_name == "carrier_pkey" else f"name {name!r}"
        removed = conn.execute(SQL.removed_named, {"name": name, "id": carrier_id}).fetchone()
        if removed is not None:
            raise AlreadyExists(f"a removed carrier ({removed[0]}) still has the {what}: its shipments keep it",
                                hint="choose another name and id") from exc
        raise AlreadyExists(f"a carrier with {what} already exists",
                            hint="see 'trackctl carrier list'") from exc
    if row is None:
        raise UnknownPool(f"unknown pool {pool!r}", hint="create it with 'trackctl pool create'")
    return get_carrier(conn, name)


# ---------------------------------------------------------------------------------------------
# Adapter settings and polling policy


@dataclass(frozen=True)
class CarrierSettings:
    id: int
    name: str
    pool: str
    adapter: str | None  # None: no API, shipments are marked by hand
    url: str | None
    token_env: str | None  # the NAME of the variable holding the token, never the token
    max_concurrency: int
    timeout: float
    options: dict = field(default_factory=dict)
    poll_intervals: dict = field(default_factory=dict)  # status -> seconds, overriding the defaults
    stale_after: timedelta = timedelta(days=30)
    breaker_threshold: int = 10
    breaker_cooldown: timedelta = timedelta(minutes=5)
    credentials: dict = field(default_factory=dict)  # secret setting -> NAME of its environment variable
    rate_limit: float | None = None  # requests per second over all hosts (None: the adapter's own, if any)


@dataclass(frozen=True)
class CarrierState:
    """What the pollers share about a carrier right now."""

    carrier: str
    breaker: str  # closed | open | half-open
    consecutive_failures: int
    blocked_until: datetime | None  # HTTP 429
    open_until: datetime | None
    opened_at: datetime | None
    slots_in_use: int




def _settings_row(row: tuple) -> CarrierSettings:
    return CarrierSettings(*row[:8], dict(row[8] or {}), dict(row[9] or {}), *row[10:13], dict(row[13] or {}),
                           row[14])


def list_carrier_settings(conn: psycopg.Connection) -> list[CarrierSettings]:
    """Return every carrier's adapter settings and polling policy, by id."""
    return [_settings_row(r) for r in conn.execute(SQL.list_settings).fetchall()]


def carrier_settings(conn: psycopg.Connection, ref: str) -> CarrierSettings:
    """Return the settings of the carrier named by `ref` (name or id), or raise UnknownCarrier."""
    row = conn.execute(SQL.settings_by_ref, {"name": ref, "id": carrier_ref_id(ref)}).fetchone()
    if row is None:
        raise unknown_carrier(ref, list_carriers(conn))
    return _settings_row(row)


def carrier_states(conn: psycopg.Connection) -> list[CarrierState]:
    """Return the breaker, 429 block and slots in use of every carrier."""
    return [CarrierState(*r) for r in conn.execute(SQL.states).fetchall()]


def reset_carrier_state(conn: psycopg.Connection, ref: str) -> CarrierSettings:
    """Close the breaker and lift the 429 block of a carrier (a person decided it is fine)."""
    carrier = carrier_settings(conn, ref)
    conn.execute(SQL.reset_state, (carrier.id,))
    return carrier


def set_carrier(conn: psycopg.Connection, ref: str, **settings: Any) -> CarrierSettings:
    """Change some settings of a carrier; return all of them.

    Settings: adapter (None removes it), url, token_env, max_concurrency, timeout, options
    (`{KEY: VALUE}` strings as given to --option; an empty VALUE removes KEY), intervals (`{STATUS:
    seconds}`), stale_after, breaker_threshold (int), breaker_cooldown (seconds or timedelta), pool.
    """
    current = carrier_settings(conn, ref)
    with conn.transaction():
        _apply_settings(conn, current.id, current.name, current, settings)
    return carrier_settings(conn, current.name)


def _seconds_delta(value: Any, what: str) -> timedelta:
    delta = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
    if delta <= timedelta(0):
        raise InvalidValue(f"{param(what)} must be more than zero", value=value)
    return delta


def check_url(url: str) -> str:
    """Return a carrier base URL if it is http(s) with a host and no credentials, else raise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"invalid carrier URL {url[:80]!r}", hint="use http://HOST[:PORT][/PATH] or https://...")
    if parts.username or parts.password or "@" in parts.netloc:
        raise InvalidValue("the carrier URL must not contain credentials",
                           hint=f"put the token in an environment variable and name it with {param('token_env')}")
    if parts.query or parts.fragment:
        raise InvalidValue("the carrier URL must not have a query or fragment")
    if len(url) > 2000 or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidValue("the carrier URL is too long or contains spaces or control characters")
    try:
        parts.port
    except ValueError as exc:
        raise InvalidValue(f"invalid port in carrier URL {url[:80]!r}") from exc
    return url


def _apply_settings(conn: psycopg.Connection, carrier_id: int, name: str, current: CarrierSettings | None,
                    changes: Mapping[str, Any]) -> None:
    known = {"adapter", "url", "token_env", "max_concurrency", "timeout", "options", "intervals", "stale_after",
             "breaker_threshold", "breaker_cooldown", "pool", "credentials", "rate_limit"}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown carrier settings: {', '.join(sorted(unknown))}")
    cur = current or CarrierSettings(carrier_id, name, "", None, None, None, DEFAULT_MAX_CONCURRENCY,
                                     DEFAULT_TIMEOUT)
    adapter = changes.get("adapter", cur.adapter) or None
    url = changes.get("url", cur.url) or None
    token_env = changes.get("token_env", cur.token_env) or None
    max_concurrency = changes.get("max_concurrency")
    max_concurrency = cur.max_concurrency if max_concurrency is None else max_concurrency
    timeout = changes.get("timeout")
    timeout = cur.timeout if timeout is None else float(timeout)
    if url is not None:
        check_url(url)
    if token_env is not None and not TOKEN_ENV.fullmatch(token_env):
        raise InvalidValue(f"invalid environment variable name {token_env[:40]!r} for {param('token_env')}",
                           hint="give the NAME of the variable holding the token, e.g. CORREIOS_TOKEN, not the token")
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise InvalidValue(f"{param('max_concurrency')} must be from 1 to {MAX_CONCURRENCY}", value=max_concurrency)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidValue(f"{param('timeout')} must be more than 0 and at most {MAX_TIMEOUT:g} seconds", value=timeout)

    rate_limit = (changes["rate_limit"] or None) if "rate_limit" in changes else cur.rate_limit  # 0 removes it
    if rate_limit is not None and not 0 < float(rate_limit) <= MAX_RATE_LIMIT:
        raise InvalidValue(f"{param('rate_limit')} must be more than 0 and at most {MAX_RATE_LIMIT:g} "
                           "requests per second", value=rate_limit)
    credentials = dict(cur.credentials) if adapter == cur.adapter else {}
    for setting, var in (changes.get("credentials") or {}).items():
        if not SETTING_NAME.fullmatch(setting):
            raise InvalidValue(f"invalid credential setting {setting[:40]!r}", hint="a provider setting name, e.g. api_key")
        if not var:
            credentials.pop(setting, None)
        elif not TOKEN_ENV.fullmatch(var):
            raise InvalidValue(f"invalid environment variable name {var[:40]!r} for "
                               f"{param('credentials')} {setting}",
                               hint="give SETTING=VARIABLE_NAME, e.g. consumer_key=DHL_KEY, not the secret itself")
        else:
            credentials[setting] = var

    option_changes = changes.get("options") or {}
    # Options belong to an adapter: a new adapter starts from its own defaults.
    options = dict(cur.options) if adapter == cur.adapter else {}
    if adapter is not None:
        from .registry import load_adapter, parse_options, requires_token, requires_url

        adapter_class = load_adapter(adapter)
        if requires_url(adapter_class) and not url:
            raise InvalidValue(f"the {adapter} adapter needs the carrier's base URL", hint=f"add {param('url')} URL")
        if requires_token(adapter_class) and not token_env:
            raise InvalidValue(f"the {adapter} adapter needs an API key",
                               hint=f"name the environment variable holding it with {param('token_env')}")
        given = {k: v for k, v in option_changes.items() if v != ""}
        options = {k: v for k, v in options.items() if k not in option_changes}
        options.update(parse_options(adapter, adapter_class, given))
        check = getattr(adapter_class, "check_settings", None)
        if callable(check):  # karrio: the provider's required settings, given as options or credentials
            try:
                check(options, credentials, url)
            except ValueError as exc:
                raise InvalidValue(f"adapter {adapter}: {exc}") from exc
    elif option_changes:
        raise InvalidValue(f"{param('options')} needs an adapter", hint=f"add {param('adapter')} NAME")

    intervals = dict(cur.poll_intervals)
    for status, seconds in (changes.get("intervals") or {}).items():
        if status not in INTERVAL_KEYS:
            raise InvalidValue(f"no poll interval for status {status[:40]!r}",
                               hint=f"intervals exist for {', '.join(INTERVAL_KEYS)}")
        if seconds is None:
            intervals.pop(status, None)
        elif not 1 <= seconds <= 30 * 86400:
            raise InvalidValue("a poll interval must be from 1 second to 30 days")
        else:
            intervals[status] = int(seconds)
    stale_after = cur.stale_after if changes.get("stale_after") is None else _seconds_delta(
        changes["stale_after"], "stale_after")
    threshold = changes.get("breaker_threshold")
    threshold = cur.breaker_threshold if threshold is None else threshold
    if not 1 <= threshold <= 100_000:
        raise InvalidValue(f"{param('breaker_threshold')} must be from 1 to 100000", value=threshold)
    cooldown = cur.breaker_cooldown if changes.get("breaker_cooldown") is None else _seconds_delta(
        changes["breaker_cooldown"], "breaker_cooldown")
    pool_id = None
    if changes.get("pool"):
        check_pool_name(changes["pool"])
        row = conn.execute(SQL.pool_id, (changes["pool"],)).fetchone()
        if row is None:
            raise UnknownPool(f"unknown pool {changes['pool']!r}", hint="create it with 'trackctl pool create'")
        pool_id = row[0]
    conn.execute(SQL.update_settings, {
        "id": carrier_id, "adapter": adapter, "url": url, "token_env": token_env,
        "max_concurrency": max_concurrency, "timeout": timeout, "options": Jsonb(options),
        "poll_intervals": Jsonb(intervals), "stale_after": stale_after, "breaker_threshold": threshold,
        "breaker_cooldown": cooldown, "pool_id": pool_id, "credentials": Jsonb(credentials),
        "rate_limit": float(rate_limit) if rate_limit is not None else None,
    })


# ---------------------------------------------------------------------------------------------
# Removal


@dataclass(frozen=True)
class RemovedCarrier:
    name: str
    deleted: bool  # True: the row is gone; False: kept (removed) for its shipments' history
    shipments: int  # shipments that keep naming it
    cancelled: int  # open shipments cancelled by --force


def remove_carrier(conn: psycopg.Connection, ref: str, *, force: bool = False) -> RemovedCarrier:
    """Remove a carrier; return what happened.

    Without shipments the carrier is deleted. With shipments it is refused (InUse) unless `force`:
    then its open shipments are cancelled (each a `cancelled` event, delivered to webhooks like
    `trackctl cancel`) and the carrier is marked removed: its row stays, because assigned codes are
    never deleted and name it, but it is no longer listed, assigned, polled or changed, and its name
    and id stay taken. All in one transaction: on any refusal nothing changes.
    """
    from ..shipments import cancel_open_of_carrier

    carrier = get_carrier(conn, ref)
    with conn.transaction():
        row = conn.execute(SQL.lock_for_removal, (carrier.id,)).fetchone()
        if row is None:  # removed by someone else meanwhile
            raise unknown_carrier(ref, list_carriers(conn))
        carrier_id, name, shipments, open_ = row
        if shipments == 0:
            conn.execute(SQL.delete_carrier, (carrier_id,))
            return RemovedCarrier(name, True, 0, 0)
        if not force:
            raise InUse(f"carrier {name} has {shipments} shipment{'s' if shipments != 1 else ''}, {open_} of them open",
                        hint=f"'trackctl carrier remove {name} --force' cancels the open ones and keeps the "
                             "carrier only as their history")
        cancelled = cancel_open_of_carrier(conn, carrier_id, f"carrier {name} removed with trackctl carrier remove")
        conn.execute(SQL.retire_carrier, (carrier_id,))
    return RemovedCarrier(name, False, shipments, sum(1 for c in cancelled if c.changed))
