"""Validation of the identifiers users type: order ids, carrier and pool names."""

from __future__ import annotations

import re

from .errors import InvalidValue, param

ORDER_ID_MAX = 64
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
CARRIER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PARCEL_MAX = 999


def _has_control(value: str) -> bool:
    import unicodedata  # only for the rare id that is not printable ASCII

    return any(unicodedata.category(ch) == "Cc" for ch in value)


def check_order_id(value: str) -> str:
    """Return the order id if it is 1-64 characters without control characters, else raise."""
    if not value:
        raise InvalidValue("order id is empty")
    if len(value) > ORDER_ID_MAX:
        raise InvalidValue(f"order id is {len(value)} characters long (at most {ORDER_ID_MAX})")
    # Printable ASCII (nearly every real id) holds none of what the scans below look for; the
    # test runs in C, which keeps validation cheap on 100 000-line batches.
    if not (value.isascii() and value.isprintable()):
        if _has_control(value) or "\u2028" in value or "\u2029" in value:
            raise InvalidValue("order id contains a control character")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            # A lone surrogate (undecodable bytes in argv, "\ud800" in JSON) cannot be stored as UTF-8.
            raise InvalidValue("order id is not valid UTF-8 text")
    if value != value.strip():
        raise InvalidValue("order id has leading or trailing whitespace")
    return value


def check_pool_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise InvalidValue(f"invalid pool name {value[:40]!r}",
                           hint="use 1-32 lowercase letters, digits, '-' or '_'")
    return value


def check_carrier_name(value: str) -> str:
    if not CARRIER_NAME.fullmatch(value):
        raise InvalidValue(f"invalid carrier name {value[:40]!r}",
                           hint="start with a letter; use 1-32 lowercase letters, digits, '-' or '_'")
    return value


def check_parcel(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PARCEL_MAX:
        raise InvalidValue(f"parcel number must be an integer from 1 to {PARCEL_MAX}")
    return value


LIMIT_MAX = 1_000_000_000  # a --limit beyond this means "all"; the database's integers end not far above


def check_limit(value: int | None, minimum: int = 1) -> int | None:
    """Return a --limit value if it is None or from `minimum` to LIMIT_MAX, else raise."""
    if value is not None and not minimum <= value <= LIMIT_MAX:
        raise InvalidValue(f"{param('limit')} must be from {minimum} to {LIMIT_MAX}", value=value)
    return value


def check_id(value: int | None, what: str) -> int | None:
    """Return a database id given on the command line if it is None or a positive 32-bit integer."""
    if value is not None and not 1 <= value <= 2_147_483_647:
        raise InvalidValue(f"{param(what)} must be a positive integer of at most 2147483647", value=value)
    return value


def carrier_ref_id(ref: str) -> int | None:
    """Return the numeric carrier id a reference names, or None when it is a name."""
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 9 else None


_DURATION = re.compile(r"^\s*(\d{1,9})\s*(s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> int:
    """Return the seconds in `value`: a whole number with an optional unit s, m, h, d or w (`30d`, `50s`)."""
    match = _DURATION.match(value or "")
    if not match:
        raise InvalidValue(f"invalid duration {value[:20]!r}", hint="use a number and a unit, e.g. 50s, 10m, 30d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
