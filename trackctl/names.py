"""Validation of the identifiers users type: order ids, carrier and pool names."""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidValue

ORDER_ID_MAX = 64
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
CARRIER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PARCEL_MAX = 999


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def check_order_id(value: str) -> str:
    """Return the order id if it is 1-64 characters without control characters, else raise."""
    if not value:
        raise InvalidValue("order id is empty")
    if len(value) > ORDER_ID_MAX:
        raise InvalidValue(f"order id is {len(value)} characters long (at most {ORDER_ID_MAX})")
    if _has_control(value) or "\u2028" in value or "\u2029" in value:
        raise InvalidValue("order id contains a control character")
    if value != value.strip():
        raise InvalidValue("order id has leading or trailing whitespace")
    return value


def check_pool_name(value: str) -> str:
    if not NAME.match(value):
        raise InvalidValue(f"invalid pool name {value[:40]!r}",
                           hint="use 1-32 lowercase letters, digits, '-' or '_'")
    return value


def check_carrier_name(value: str) -> str:
    if not CARRIER_NAME.match(value):
        raise InvalidValue(f"invalid carrier name {value[:40]!r}",
                           hint="start with a letter; use 1-32 lowercase letters, digits, '-' or '_'")
    return value


def check_parcel(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PARCEL_MAX:
        raise InvalidValue(f"parcel number must be an integer from 1 to {PARCEL_MAX}")
    return value


def carrier_ref_id(ref: str) -> int | None:
    """Return the numeric carrier id a reference names, or None when it is a name."""
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 9 else None
