"""The http-json adapter: `GET {base}/trackings/{code}` answering the JSON shape of CARRIERS.md."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from ..errors import InvalidValue, param
from . import transport
from .base import (MAX_DESCRIPTION, MAX_LOCATION, MAX_RAW_STATUS, STATUSES, AdapterConfig, CarrierEvent,
                   FetchFailed, ShipmentRef, clip, event_key, event_objects, parse_options_none)


class JsonGetAdapter:
    """A carrier whose tracking is one GET answering JSON: `path` (with `{code}`) under the base URL
    (--url, else `default_url`), the body read by `parse(doc, code)`. http-json and correios are two."""

    name: ClassVar[str]
    requires_url: ClassVar[bool]
    default_url: ClassVar[str | None] = None
    path: ClassVar[str]

    def __init__(self, config: AdapterConfig) -> None:
        base = config.url or self.default_url
        if not base:
            raise InvalidValue(f"the {self.name} adapter needs the carrier's base URL", hint=f"add {param('url')} URL")
        self.base = base.rstrip("/")
        self.timeout = config.timeout
        self.headers = request_headers(config)

    parse_options = staticmethod(parse_options_none)

    def parse(self, doc: Any, code: str) -> list[CarrierEvent]:
        raise NotImplementedError

    def fetch(self, shipment: ShipmentRef) -> list[CarrierEvent]:
        url = self.base + self.path.format(code=urllib.parse.quote(shipment.code, safe=""))
        doc = transport.json_body(transport.get(url, self.headers, self.timeout))
        return [] if doc is None else self.parse(doc, shipment.code)


class HttpJsonAdapter(JsonGetAdapter):
    """Any carrier (or a shipper's own proxy) answering trackctl's documented JSON shape."""

    name = "http-json"
    requires_url = True
    path = "/trackings/{code}"

    def parse(self, doc: Any, code: str) -> list[CarrierEvent]:
        return parse_trackings(doc, code)


def request_headers(config: AdapterConfig) -> dict[str, str]:
    """Return the headers every request of a carrier carries (the token only when it has one)."""
    headers = {"User-Agent": config.user_agent, "Accept": "application/json"}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    return headers


def iso_time(value: Any, what: str, kind: str) -> datetime:
    """Return an ISO 8601 date-time (with or without offset), or raise FetchFailed saying `what` is not `kind`."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise FetchFailed(f"invalid body: {what} is not {kind}")
    try:
        return datetime.fromisoformat(value.strip().upper())
    except ValueError as exc:
        raise FetchFailed(f"invalid body: {what} {value[:40]!r} is not {kind}") from exc


def parse_time(value: Any, what: str) -> datetime:
    """Return an RFC 3339 timestamp with its offset as an aware datetime, or raise FetchFailed."""
    when = iso_time(value, what, "an RFC 3339 timestamp")
    if when.tzinfo is None or when.utcoffset() is None:
        raise FetchFailed(f"invalid body: {what} {value[:40]!r} has no UTC offset")
    return when


def _optional_text(event: Mapping, name: str, limit: int) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FetchFailed(f"invalid body: event {name} is not a string")
    return clip(value, limit)


def parse_trackings(doc: Any, code: str) -> list[CarrierEvent]:
    """Return the events of an http-json body; any departure from the shape raises FetchFailed."""
    if not isinstance(doc, dict):
        raise FetchFailed("invalid body: not a JSON object")
    answered = doc.get("code")
    if answered is not None and (not isinstance(answered, str) or answered.strip().lower() != code.lower()):
        raise FetchFailed("invalid body: the response is for another code")
    events = doc.get("events")
    if not isinstance(events, list):
        raise FetchFailed("invalid body: 'events' is missing or not a list")
    out: dict[str, CarrierEvent] = {}
    for event in event_objects(events):
        ident = event.get("id")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)) or str(ident) == "":
            raise FetchFailed("invalid body: an event has no id")
        status = event.get("status")
        if not isinstance(status, str) or not status.strip():
            raise FetchFailed("invalid body: an event has no status")
        raw = clip(status, MAX_RAW_STATUS) or "?"
        key = event_key(str(ident))
        if key in out:
            continue  # the same event twice in one answer is stored once
        out[key] = CarrierEvent(
            key=key,
            occurred_at=parse_time(event.get("occurred_at"), "occurred_at"),
            status=status if status in STATUSES else None,
            raw_status=raw,
            description=_optional_text(event, "description", MAX_DESCRIPTION),
            location=_optional_text(event, "location", MAX_LOCATION),
        )
    return list(out.values())
