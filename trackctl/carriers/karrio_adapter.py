"""`karrio:<provider>`: any carrier the karrio SDK can track (DHL, UPS, FedEx, USPS, ...), CARRIERS.md.

karrio (LGPL-3.0, one `karrio-<provider>` package per carrier) already speaks those APIs; this
adapter builds the provider's mapper and proxy from the carrier's settings, has karrio build each
tracking request and read its answer, and maps karrio's tracking details onto trackctl's events.
The HTTP in between goes through trackctl's own client (karrio_transport.py). Secret settings come from environment variables named with
`--credential SETTING=ENVVAR` (read when polling, never stored or printed), plain ones from
`--option SETTING=VALUE`; `--url BASE` replaces the provider's server URL (scheme, host, port)
and keeps its paths. Importing karrio costs most of a second, so nothing here imports it until
an adapter object is made (only `trackctl poll` does) or a carrier is added (to check the
provider's required settings). karrio's loguru output is switched off before it can print.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from .base import AdapterConfig, CarrierEvent, FetchFailed, RateLimited, ShipmentRef, ShipmentResult, clip

PREFIX = "karrio:"
# karrio's TrackerStatus names -> trackctl statuses (CARRIERS.md); anything else is kept raw.
STATUS = {
    "pending": "pending",
    "in_transit": "in_transit",
    "out_for_delivery": "out_for_delivery",
    "delivered": "delivered",
    "delivery_failed": "failed_attempt",
    "ready_for_pickup": "available_for_pickup",
    "on_hold": "in_transit",
    "delivery_delayed": "in_transit",
    "picked_up": "in_transit",
    "return_to_sender": "returned",
    "cancelled": "cancelled",
}
# Settings every karrio Settings class has, none of them the provider's own.
BASE_SETTINGS = {"id", "test_mode", "carrier_id", "account_country_code", "metadata", "config", "language"}
NOT_FOUND_WORDS = ("not found", "cannot be found", "no shipment", "no result", "not_found", "notfound",
                   "invalid tracking", "no tracking", "no pin history")
_import_lock = threading.Lock()


def _wrap_root(body: bytes) -> bytes:
    """Put an XML answer under a wrapper element, unless it is one already."""
    text = body.lstrip()
    if text.startswith(b"<?xml"):
        text = text[text.find(b"?>") + 2:].lstrip()
    return b"<wrapper>" + text + b"</wrapper>" if text.startswith(b"<tracking-detail") else body


# Providers whose tracking request takes several numbers, and how many (their APIs' limits):
# FedEx Track API 30 per request, GLS Track and Trace 10 (karrio joins them into one request).
BATCH = {"fedex": 30, "gls": 10}

# Tracking answers mended before karrio reads them. karrio's canadapost parser looks for
# <tracking-detail> below the document's root (its tests wrap the answer); Canada Post's API
# answers one pin with <tracking-detail> as the root, which karrio would read as no details.
MENDS = {"canadapost": _wrap_root}


def package_name(provider: str) -> str:
    return "karrio-" + provider.replace("_", "-")


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_package(provider: str) -> str | None:
    """The package to install for `provider`, or None when karrio and its provider are installed."""
    if not installed("karrio"):
        return f"karrio and {package_name(provider)} (pip install 'trackctl[carriers]')"
    try:
        spec = importlib.util.find_spec(f"karrio.mappers.{provider}")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"{package_name(provider)} (pip install {package_name(provider)})"
    return None


def quiet_karrio() -> Any:
    """Import karrio with its log output switched off; return `karrio.lib`."""
    with _import_lock:
        logger_module = importlib.import_module("karrio.core.utils.logger")  # configures loguru on import
        from loguru import logger

        logger.remove()
        logger.disable("karrio")
        # jstruct (karrio's models) warns through the standard logging about fields it does not
        # know, with their values: an OAuth answer's access token, for one.
        logging.getLogger("jstruct").setLevel(logging.CRITICAL + 1)
        try:
            return importlib.import_module("karrio.lib")
        finally:
            logger.remove()  # whatever the import added
            del logger_module


def provider_modules(provider: str) -> Any:
    quiet_karrio()
    return importlib.import_module(f"karrio.mappers.{provider}")


def settings_fields(provider: str) -> tuple[list[str], list[str]]:
    """Return (required, optional) setting names of a provider's karrio Settings class."""
    import attr

    settings_class = provider_modules(provider).Settings
    required, optional = [], []
    for f in attr.fields(settings_class):
        if f.name in BASE_SETTINGS or f.name.startswith("_"):
            continue
        (required if f.default is attr.NOTHING else optional).append(f.name)
    return required, optional


def tracking_providers() -> list[dict]:
    """Every installed karrio provider that can track, with its required and optional settings."""
    import pkgutil

    quiet_karrio()
    mappers = importlib.import_module("karrio.mappers")
    out = []
    for info in sorted(pkgutil.iter_modules(mappers.__path__), key=lambda m: m.name):
        try:
            module = provider_modules(info.name)
            proxy = getattr(module, "Proxy", None)
            if proxy is None or "get_tracking" not in vars(proxy):
                continue
            required, optional = settings_fields(info.name)
        except Exception:  # a broken provider package: not listed
            continue
        out.append({"adapter": PREFIX + info.name, "package": package_name(info.name),
                    "required": required, "optional": optional})
    return out


def adapter_class(provider: str) -> type:
    """The adapter class for `karrio:<provider>`; raise ValueError naming the package when missing."""
    if not provider or not provider.replace("_", "").isalnum() or not provider.islower():
        raise ValueError(f"invalid karrio provider name {provider[:40]!r}")
    missing = missing_package(provider)
    if missing:
        raise LookupError(f"the karrio provider {provider} is not installed: install {missing}")
    return type(f"Karrio_{provider}", (KarrioAdapter,), {"provider": provider, "max_batch": BATCH.get(provider, 1)})


class KarrioAdapter:
    """One karrio provider's tracking: one number per request, or up to `max_batch` (BATCH).

    Its HTTP goes through trackctl's client (karrio_transport.py), which paces and records each
    request karrio makes, token requests included: `accounts_requests`.
    """

    provider: ClassVar[str] = ""
    requires_url: ClassVar[bool] = False
    accounts_requests: ClassVar[bool] = True
    max_batch: ClassVar[int] = 1

    @staticmethod
    def parse_options(raw: Mapping[str, str]) -> dict[str, Any]:
        """Non-secret provider settings, as strings ('true'/'false' become booleans)."""
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not key.replace("_", "").isalnum() or not key.islower():
                raise ValueError(f"invalid provider setting name {key[:40]!r}")
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
        return out

    @classmethod
    def check_settings(cls, options: Mapping[str, Any], credentials: Mapping[str, str], url: str | None) -> None:
        required, optional = settings_fields(cls.provider)
        known = set(required) | set(optional)
        unknown = sorted((set(options) | set(credentials)) - known - BASE_SETTINGS)
        if unknown:
            raise ValueError(f"provider {cls.provider} has no setting {', '.join(unknown)} "
                             f"(settings: {', '.join(required + optional)})")
        missing = [name for name in required if name not in options and name not in credentials]
        if missing:
            from ..errors import param  # the error names fields; the CLI shows them as flags

            raise ValueError(f"provider {cls.provider} needs {', '.join(missing)}: give secrets with "
                             f"{param('credentials')} SETTING=ENVVAR and the others with "
                             f"{param('options')} SETTING=VALUE")

    def __init__(self, config: AdapterConfig) -> None:
        from . import karrio_transport

        lib = quiet_karrio()
        module = provider_modules(self.provider)
        settings_class = module.Settings
        if config.url:
            parts = urllib.parse.urlsplit(config.url)
            base = f"{parts.scheme}://{parts.netloc}"

            def server_url(_self, _base=base):
                original = urllib.parse.urlsplit(type(_self).__mro__[1].server_url.fget(_self))
                return _base + original.path.rstrip("/")

            settings_class = type(settings_class.__name__, (settings_class,), {"server_url": property(server_url)})
        values = {**dict(config.options), **dict(config.credentials)}
        try:
            settings = settings_class(**values)
        except TypeError as exc:
            raise ValueError(f"provider {self.provider}: {exc}") from None
        # One mapper and proxy per carrier and run, shared by its workers, on settings that carry
        # a cache (karrio keeps OAuth tokens there) and a tracer that keeps nothing (karrio's
        # would hold every request and answer of the run). Built from the provider's module, as
        # karrio's gateway does, without karrio's registry, which imports every installed provider.
        settings.cache, settings.tracer, settings.system_config = lib.Cache(), _untraced(lib), lib.SystemConfig()
        self.mapper, self.proxy = module.Mapper(settings), module.Proxy(settings)
        self.timeout = config.timeout
        self.calls = config.calls
        self._transport = karrio_transport
        karrio_transport.install(importlib.import_module(f"karrio.mappers.{self.provider}.proxy"))
        from karrio.core.errors import ParsedMessagesError
        from karrio.core.models import TrackingRequest

        self._request_class, self._parsed_error = TrackingRequest, ParsedMessagesError

    def _ask(self, codes: list[str]) -> tuple[list, list, int | None]:
        """One tracking request through karrio's builder, trackctl's HTTP client and karrio's parser.

        Returns (details, messages, HTTP status of the tracking request); raises FetchFailed (no
        usable answer) or RateLimited (429). Every HTTP request made is paced and accounted for.
        """
        exchange = self._transport.Exchange(self.provider, codes, self.timeout, self.calls, MENDS.get(self.provider))
        failed = True
        try:
            with exchange:
                try:
                    request = self.mapper.create_tracking_request(self._request_class(tracking_numbers=codes))
                    answer = self.proxy.get_tracking(request)
                    details, messages = self.mapper.parse_tracking_response(answer)
                except (FetchFailed, RateLimited):
                    raise
                except self._parsed_error as exc:  # karrio's own reading of an error answer (a login refused)
                    details, messages = [], list(exc.messages or [])
                except Exception as exc:  # karrio could not build, send or read it: one failed request
                    if (exchange.track_status or 0) >= 500:  # an error page karrio could not read
                        raise FetchFailed(f"karrio {self.provider}: HTTP {exchange.track_status} from the carrier") from None
                    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                    raise FetchFailed(f"karrio {self.provider}: {type(exc).__name__}"
                                      + (f": {text}" if text else "")) from None
            status = exchange.track_status
            if status is not None and status >= 500:
                said = _texts(messages)
                raise FetchFailed(f"karrio {self.provider}: HTTP {status} from the carrier"
                                  + (f": {said}" if said else ""))
            failed = not details and self._failure(messages, status) is not None
            return list(details or []), list(messages or []), status
        finally:
            exchange.record(failed)

    def fetch(self, shipment: ShipmentRef) -> list[CarrierEvent]:
        details, messages, status = self._ask([shipment.code])
        detail = next((d for d in details if str(getattr(d, "tracking_number", "")) == shipment.code), None)
        if detail is None and details:
            detail = details[0]
        if detail is None:
            failure = self._failure(messages, status)
            if failure is not None:
                raise FetchFailed(failure)
            return []
        return self.events_of(detail, shipment.code)

    def fetch_batch(self, shipments: list[ShipmentRef]) -> dict[str, ShipmentResult]:
        """Providers whose one tracking request takes several numbers (BATCH): one request for all."""
        codes = [s.code for s in shipments]
        details, messages, status = self._ask(codes)
        found = {}
        for d in details:
            for name in (getattr(d, "tracking_number", None), (getattr(d, "meta", None) or {}).get("requested")):
                if name:
                    found.setdefault(str(name), d)
        general = [m for m in messages if not (getattr(m, "details", None) or {}).get("tracking_number")]
        out = {}
        for code in codes:
            if code in found:
                out[code] = ShipmentResult(self.events_of(found[code], code))
                continue
            own = [m for m in messages if (getattr(m, "details", None) or {}).get("tracking_number") == code]
            failure = self._failure(own or general, status)
            out[code] = ShipmentResult(error=failure) if failure else ShipmentResult()
        return out

    def _failure(self, messages, status: int | None) -> str | None:
        """No details: None when the answer was a 404 or says 'not found' (no news) or nothing; else the failure."""
        if status == 404:
            return None
        texts = []
        for m in messages or []:
            code, text = str(getattr(m, "code", "") or ""), str(getattr(m, "message", "") or "")
            if code == "404" or any(w in f"{code} {text}".lower() for w in NOT_FOUND_WORDS):
                return None
            texts.append(f"{code} {text}".strip())
        return f"karrio {self.provider}: " + "; ".join(texts)[:400] if texts else None

    def events_of(self, detail, code: str) -> list[CarrierEvent]:
        events = []
        for e in getattr(detail, "events", None) or []:
            when = _event_time(e)
            if when is None:
                continue
            raw = str(getattr(e, "status", None) or getattr(e, "code", None) or "unknown")
            description = getattr(e, "description", None)
            events.append(CarrierEvent(
                key=f"{getattr(e, 'code', '') or ''}|{when.isoformat()}|{description or ''}",
                occurred_at=when, status=STATUS.get(getattr(e, "status", None) or ""),
                raw_status=clip(raw, 200) or "unknown", description=description,
                location=getattr(e, "location", None)))
        overall = STATUS.get(str(getattr(detail, "status", "") or ""))
        if overall and events:
            # The shipment's status is karrio's overall status: it is the newest event's.
            newest = max(range(len(events)), key=lambda i: events[i].occurred_at)
            e = events[newest]
            events[newest] = CarrierEvent(e.key, e.occurred_at, overall, e.raw_status, e.description, e.location)
        return events


def _event_time(event) -> datetime | None:
    """The event's time: its ISO timestamp, else date + time; without an offset it is taken as UTC."""
    stamp = getattr(event, "timestamp", None)
    candidates = [stamp] if stamp else []
    date, time_ = getattr(event, "date", None), getattr(event, "time", None)
    if date:
        candidates.append(f"{date}T{_hhmm(time_)}" if time_ else str(date))
    for value in candidates:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            continue
        return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
    return None


def _hhmm(value: str) -> str:
    value = str(value).strip()
    for fmt in ("%H:%M:%S", "%H:%M", "%I:%M %p", "%I:%M:%S %p"):
        try:
            return datetime.strptime(value, fmt).strftime("%H:%M:%S")
        except ValueError:
            continue
    return "00:00:00"


def _texts(messages) -> str:
    return "; ".join(f"{getattr(m, 'code', '') or ''} {getattr(m, 'message', '') or ''}".strip()
                     for m in messages or [])[:400]


def _untraced(lib):
    """A karrio Tracer that records nothing (karrio's keeps every request and answer)."""

    class Untraced(lib.Tracer):
        def trace(self, data, key, metadata=None, format=None):  # noqa: A002 (karrio's signature)
            return data

    return Untraced()
