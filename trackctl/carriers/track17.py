"""The 17track adapter: 17TRACK Tracking API v2.4, one key for 3 000+ carriers (CARRIERS.md).

Every request is a POST of a JSON array of at most 40 numbers with the header `17token`. A
number is registered once (`register`, one unit of the account's quota), before its first
`gettrackinfo`; trackctl records the registration on the shipment and registers again only when
17TRACK answers -18019902 (not registered). Numbers are told to `stoptrack` once terminal or
stale in trackctl (the poller hands them to `stop_batch`). The key allows 3 requests per second
over all processes and hosts: the adapter declares the limit (per key, so carriers sharing a key
share it) and paces every one of its requests through `config.calls`, which also records each
request for `trackctl carrier stats`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from ..errors import InvalidValue, param
from . import transport
from .base import (MAX_DESCRIPTION, MAX_LOCATION, AdapterConfig, CarrierEvent, Calls, FetchFailed, ShipmentRef,
                   ShipmentResult, clip, event_key)
from .http_json import parse_time

DEFAULT_URL = "https://api.17track.net"
MAX_NUMBERS = 40
REQUESTS_PER_SECOND = 3.0
ALREADY_REGISTERED = -18019901
NOT_REGISTERED = -18019902
CARRIER_NOT_DETECTED = -18019903

# latest_status.status (and the part of a sub_status before '_') -> trackctl status.
STATUS = {
    "InfoReceived": "pending",
    "InTransit": "in_transit",
    "OutForDelivery": "out_for_delivery",
    "AvailableForPickup": "available_for_pickup",
    "DeliveryFailure": "failed_attempt",
    "Exception": "exception",
    "Delivered": "delivered",
}
# An event's `stage` where its sub_status says nothing trackctl knows.
STAGE = {
    "InfoReceived": "pending",
    "PickedUp": "in_transit",
    "Departure": "in_transit",
    "Arrival": "in_transit",
    "AvailableForPickup": "available_for_pickup",
    "OutForDelivery": "out_for_delivery",
    "Delivered": "delivered",
    "DeliveryFailure": "failed_attempt",
    "Exception": "exception",
    "Returned": "returned",
}


def event_status(event: Mapping) -> str | None:
    sub = event.get("sub_status")
    if isinstance(sub, str) and sub:
        mapped = STATUS.get(sub.split("_", 1)[0])
        if mapped:
            return mapped
    stage = event.get("stage")
    return STAGE.get(stage) if isinstance(stage, str) else None


class Track17Adapter:
    """Carriers without an adapter of their own, through 17TRACK."""

    requires_url: ClassVar[bool] = False
    requires_token: ClassVar[bool] = True  # the API key (17token), from the variable token_env names
    max_batch: ClassVar[int] = MAX_NUMBERS
    rate_limit: ClassVar[float] = REQUESTS_PER_SECOND
    shared_rate_limit: ClassVar[bool] = True  # the limit is the key's, whatever carriers use it
    accounts_requests: ClassVar[bool] = True  # one fetch_batch may make several requests

    def __init__(self, config: AdapterConfig) -> None:
        if not config.token:
            raise InvalidValue("the 17track adapter needs the API key",
                               hint=f"name the environment variable holding it with {param('token_env')}")
        self.base = (config.url or DEFAULT_URL).rstrip("/")
        self.timeout = config.timeout
        self.carrier_code = config.options.get("carrier")
        self.headers = {"User-Agent": config.user_agent, "Accept": "application/json",
                        "Content-Type": "application/json", "17token": config.token}
        self.calls = config.calls or Calls()

    @staticmethod
    def parse_options(raw: Mapping[str, str]) -> dict[str, Any]:
        """`carrier=NNNN`: 17TRACK's carrier code (otherwise 17TRACK detects the carrier)."""
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key != "carrier":
                raise ValueError(f"unknown 17track option {key!r} (known: carrier)")
            if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 7):
                raise ValueError(f"option carrier must be 17TRACK's numeric carrier code (got {value[:20]!r})")
            out[key] = int(value)
        return out

    # -- requests -------------------------------------------------------------------------------

    def _post(self, action: str, items: list[dict], kind: str) -> tuple[list[dict], list[dict]]:
        """POST one action; return (accepted, rejected). RateLimited/FetchFailed fail the request."""
        if not 1 <= len(items) <= MAX_NUMBERS:
            raise FetchFailed(f"17TRACK {action}: {len(items)} numbers in one request (at most {MAX_NUMBERS})")
        body = json.dumps(items).encode()
        with self.calls.request(kind, len(items)) as call:
            doc = transport.json_body(transport.post(f"{self.base}/track/v2.4/{action}", self.headers, body,
                                                     self.timeout))
            if doc is None:
                raise FetchFailed(f"17TRACK {action}: HTTP 404")
            accepted, rejected = _answer(doc, action)
            if action == "register":
                call.registered = len(accepted)
        return accepted, rejected

    def _register(self, refs: Sequence[ShipmentRef]) -> tuple[set[str], dict[str, ShipmentResult]]:
        """Register numbers; return (now registered, {code: result} for those that will not be asked)."""
        items = [{"number": r.code, **({"carrier": self.carrier_code} if self.carrier_code else {})} for r in refs]
        accepted, rejected = self._post("register", items, "register")
        done = {_number(a) for a in accepted}
        settled: dict[str, ShipmentResult] = {}
        for r in rejected:
            number, code, message = _rejection(r)
            if code == ALREADY_REGISTERED:
                done.add(number)
            elif code == CARRIER_NOT_DETECTED:
                settled[number] = ShipmentResult()  # no news yet; registered on a later poll
            else:
                settled[number] = ShipmentResult(error=f"17TRACK register {code}: {message}")
        return done, settled

    def fetch_batch(self, shipments: Sequence[ShipmentRef]) -> dict[str, ShipmentResult]:
        results: dict[str, ShipmentResult] = {}
        registered = {r.code for r in shipments if r.registered}
        new = [r for r in shipments if not r.registered]
        if new:
            done, settled = self._register(new)
            registered |= done
            results.update(settled)
        ask = [r for r in shipments if r.code not in results]
        again: list[ShipmentRef] = []
        if ask:
            again = self._track(ask, results, registered)
        if again:  # 17TRACK did not know them after all: register, then ask once more
            done, settled = self._register(again)
            registered |= done
            results.update(settled)
            retry = [r for r in again if r.code not in results]
            if retry:
                for r in self._track(retry, results, registered):
                    results[r.code] = ShipmentResult(error="17TRACK -18019902: not registered after registering")
        for code, result in list(results.items()):
            if code in registered and not result.registered:
                results[code] = ShipmentResult(result.events, result.error, True, result.stale)
        return results

    def _track(self, refs: Sequence[ShipmentRef], results: dict[str, ShipmentResult],
               registered: set[str]) -> list[ShipmentRef]:
        """gettrackinfo for `refs`, filling `results`; return the refs 17TRACK says are not registered."""
        by_code = {r.code: r for r in refs}
        accepted, rejected = self._post("gettrackinfo", [{"number": r.code} for r in refs], "track")
        for item in accepted:
            number = _number(item)
            if number in by_code:
                registered.add(number)
                results[number] = parse_track_info(item.get("track_info"))
        unregistered = []
        for r in rejected:
            number, code, message = _rejection(r)
            if number not in by_code:
                continue
            if code == NOT_REGISTERED:
                registered.discard(number)
                unregistered.append(by_code[number])
            elif code == CARRIER_NOT_DETECTED:
                results[number] = ShipmentResult()
            else:
                results[number] = ShipmentResult(error=f"17TRACK gettrackinfo {code}: {message}")
        return unregistered

    def stop_batch(self, shipments: Sequence[ShipmentRef]) -> None:
        """stoptrack: 17TRACK stops its own updates (and their quota) for terminal or stale numbers."""
        # A rejected number (never registered, already stopped) has nothing left to stop either way.
        self._post("stoptrack", [{"number": r.code} for r in shipments], "stop")


def _answer(doc: Any, action: str) -> tuple[list[dict], list[dict]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("code"), int) or isinstance(doc.get("code"), bool):
        raise FetchFailed(f"invalid body: 17TRACK {action} answer is not the documented shape")
    if doc["code"] != 0:
        data = doc.get("data")
        errors = data.get("errors") if isinstance(data, dict) else None
        message = ""
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = str(errors[0].get("message") or "")[:200]
        raise FetchFailed(f"17TRACK {action} answered code {doc['code']}" + (f": {message}" if message else ""))
    data = doc.get("data")
    if not isinstance(data, dict):
        raise FetchFailed(f"invalid body: 17TRACK {action} answer has no data")
    accepted, rejected = data.get("accepted") or [], data.get("rejected") or []
    if not isinstance(accepted, list) or not isinstance(rejected, list) \
            or not all(isinstance(x, dict) for x in accepted + rejected):
        raise FetchFailed(f"invalid body: 17TRACK {action} accepted/rejected are not lists of objects")
    return accepted, rejected


def _number(item: Mapping) -> str:
    number = item.get("number")
    return number if isinstance(number, str) else ""


def _rejection(item: Mapping) -> tuple[str, int | None, str]:
    error = item.get("error") if isinstance(item.get("error"), dict) else {}
    code = error.get("code")
    message = error.get("message")
    return (_number(item), code if isinstance(code, int) and not isinstance(code, bool) else None,
            clip(message if isinstance(message, str) else "", 200) or "rejected")


def parse_track_info(info: Any) -> ShipmentResult:
    """Return the events and state of one accepted gettrackinfo item (FetchFailed for a bad shape)."""
    if info is None:
        return ShipmentResult()
    if not isinstance(info, dict):
        raise FetchFailed("invalid body: track_info is not an object")
    latest = info.get("latest_status") if isinstance(info.get("latest_status"), dict) else {}
    main = latest.get("status")
    if main == "NotFound":
        return ShipmentResult()
    tracking = info.get("tracking") if isinstance(info.get("tracking"), dict) else {}
    providers = tracking.get("providers") or []
    if not isinstance(providers, list):
        raise FetchFailed("invalid body: tracking.providers is not a list")
    events: dict[str, CarrierEvent] = {}
    for provider in providers:
        raw_events = provider.get("events") if isinstance(provider, dict) else None
        if not isinstance(raw_events, list):
            continue
        for e in raw_events:
            if not isinstance(e, dict):
                raise FetchFailed("invalid body: an event is not an object")
            when = parse_time(e.get("time_iso"), "time_iso")
            description = e.get("description") if isinstance(e.get("description"), str) else None
            location = e.get("location") if isinstance(e.get("location"), str) else None
            key = event_key(f"{e.get('time_iso')}|{description or ''}")
            raw = e.get("sub_status") or e.get("stage") or "event"
            events.setdefault(key, CarrierEvent(key, when, event_status(e), clip(str(raw), 200) or "event",
                                                clip(description, MAX_DESCRIPTION), clip(location, MAX_LOCATION)))
    out = list(events.values())
    status = STATUS.get(main) if isinstance(main, str) else None
    if status and out:
        # The shipment's status is 17TRACK's latest_status: it is the newest event's.
        newest = max(out, key=lambda ev: ev.occurred_at)
        out[out.index(newest)] = CarrierEvent(newest.key, newest.occurred_at, status, newest.raw_status,
                                              newest.description, newest.location)
    elif status:
        out.append(CarrierEvent(f"17track-latest:{main}", datetime.now(timezone.utc), status, str(main)))
    return ShipmentResult(out, stale=main == "Expired")
