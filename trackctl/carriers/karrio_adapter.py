"""`karrio:<provider>`: any carrier the karrio SDK can track (DHL, UPS, FedEx, USPS, ...), CARRIERS.md.

karrio (LGPL-3.0, one `karrio-<provider>` package per carrier) already speaks those APIs; this
adapter only builds the provider's gateway from the carrier's settings and maps karrio's tracking
details onto trackctl's events. Secret settings come from environment variables named with
`--credential SETTING=ENVVAR` (read when polling, never stored or printed), plain ones from
`--option SETTING=VALUE`; `--url BASE` replaces the provider's server URL (scheme, host, port)
and keeps its paths. Importing karrio costs most of a second, so nothing here imports it until
an adapter object is made (only `trackctl poll` does) or a carrier is added (to check the
provider's required settings). karrio's loguru output is switched off before it can print.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from .base import AdapterConfig, CarrierEvent, FetchFailed, RateLimited, ShipmentRef, clip

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
NOT_FOUND_WORDS = ("not found", "no shipment", "no result", "not_found", "invalid tracking", "no tracking")
_import_lock = threading.Lock()


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
    """Import karrio with its log output switched off; return `karrio.sdk`."""
    with _import_lock:
        logger_module = importlib.import_module("karrio.core.utils.logger")  # configures loguru on import
        from loguru import logger

        logger.remove()
        logger.disable("karrio")
        try:
            return importlib.import_module("karrio.sdk")
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
    return type(f"Karrio_{provider}", (KarrioAdapter,), {"provider": provider})


class KarrioAdapter:
    """One karrio provider's tracking, one number per request (karrio makes one request per number)."""

    provider: ClassVar[str] = ""
    requires_url: ClassVar[bool] = False

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
        sdk = quiet_karrio()
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
        self.gateway = sdk.gateway[self.provider].create(settings)
        self.sdk = sdk
        self.timeout = config.timeout
        # karrio's requests carry no timeout of their own: the socket default bounds each connect
        # and read (trackctl's own HTTP always passes its timeout explicitly).
        current = socket.getdefaulttimeout()
        if current is None or current < config.timeout:
            socket.setdefaulttimeout(config.timeout)

    def fetch(self, shipment: ShipmentRef) -> list[CarrierEvent]:
        from karrio.core.models import TrackingRequest

        try:
            details, messages = self.sdk.Tracking.fetch(
                TrackingRequest(tracking_numbers=[shipment.code])).from_(self.gateway).parse()
        except Exception as exc:  # karrio's own failures are one failed request, with its message
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise FetchFailed(f"karrio {self.provider}: {type(exc).__name__}" + (f": {text}" if text else "")) from None
        detail = next((d for d in details or [] if str(getattr(d, "tracking_number", "")) == shipment.code), None)
        if detail is None and details:
            detail = details[0]
        if detail is None:
            self._judge_messages(messages)
            return []
        return self.events_of(detail, shipment.code)

    def _judge_messages(self, messages) -> None:
        """No details: a 'not found' message is no news; a 429 rate limits; anything else fails."""
        texts = []
        for m in messages or []:
            code, text = str(getattr(m, "code", "") or ""), str(getattr(m, "message", "") or "")
            if code == "429" or "too many requests" in text.lower():
                raise RateLimited(None)
            if code == "404" or any(w in text.lower() for w in NOT_FOUND_WORDS):
                return
            texts.append(f"{code} {text}".strip())
        if texts:
            raise FetchFailed(f"karrio {self.provider}: " + "; ".join(texts)[:400])

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
