"""Which adapters exist: the built-in ones and those installed under the `trackctl.carriers` entry point group."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidValue, TrackctlError
from .base import Adapter, AdapterConfig, parse_options_none

ENTRY_POINT_GROUP = "trackctl.carriers"
# Built-in names win over entry points of the same name, so a package cannot replace them.
BUILTIN = {
    "simulator": ("trackctl.carriers.simulator", "SimulatorAdapter"),
    "http-json": ("trackctl.carriers.http_json", "HttpJsonAdapter"),
    "correios": ("trackctl.carriers.correios", "CorreiosAdapter"),
    "17track": ("trackctl.carriers.track17", "Track17Adapter"),
}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def adapter_names() -> list[str]:
    """Return the names of every adapter this installation knows, built-in first (karrio:<provider> aside)."""
    return list(BUILTIN) + ["karrio:<provider>"] + sorted(_entry_points())


def load_adapter(name: str) -> Any:
    """Return the adapter class (or factory) called `name`, or raise InvalidValue naming the known ones."""
    if name in BUILTIN:
        module, attr = BUILTIN[name]
        return getattr(importlib.import_module(module), attr)
    if name.startswith("karrio:"):
        from .karrio_adapter import adapter_class

        try:
            return adapter_class(name.removeprefix("karrio:"))
        except LookupError as exc:
            raise InvalidValue(str(exc), hint="karrio carriers need the carriers extra: pip install 'trackctl[carriers]'") from None
        except ValueError as exc:
            raise InvalidValue(str(exc), hint="see 'trackctl carrier adapters'") from None
    found = _entry_points().get(name)
    if found is None:
        raise InvalidValue(f"unknown adapter {name[:40]!r} (known: {', '.join(adapter_names())})",
                           hint=f"third-party adapters register under the '{ENTRY_POINT_GROUP}' entry point group")
    try:
        return found.load()
    except Exception as exc:  # a broken third-party package must not look like a trackctl bug
        raise InvalidValue(f"adapter {name!r} ({found.value}) failed to load: {type(exc).__name__}: {exc}",
                           hint="reinstall or fix the package that provides it") from exc


def requires_url(adapter_class: Any) -> bool:
    return bool(getattr(adapter_class, "requires_url", False))


def requires_token(adapter_class: Any) -> bool:
    return bool(getattr(adapter_class, "requires_token", False))


def parse_options(name: str, adapter_class: Any, raw: Mapping[str, str]) -> dict[str, Any]:
    """Return the adapter's typed options from `--option KEY=VALUE` pairs, or raise InvalidValue."""
    parser = getattr(adapter_class, "parse_options", None) or parse_options_none
    try:
        parsed = parser(dict(raw))
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"adapter {name}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidValue(f"adapter {name}: parse_options must return a dict")
    return parsed


def build_adapter(name: str, config: AdapterConfig) -> Adapter:
    """Return a ready adapter object for one carrier, or raise InvalidValue."""
    adapter_class = load_adapter(name)
    try:
        adapter = adapter_class(config)
    except TrackctlError as exc:  # a built-in adapter's own words, naming the settings it lacks
        raise exc.within(f"carrier {config.carrier}: adapter {name}: ") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"carrier {config.carrier}: adapter {name}: {exc}") from exc
    if not callable(getattr(adapter, "fetch", None)) and not callable(getattr(adapter, "fetch_batch", None)):
        raise InvalidValue(f"adapter {name!r} has no fetch(shipment) or fetch_batch(shipments) method")
    return adapter


def adapter_rows() -> list[dict]:
    """Every adapter installed: built-in, entry points, and each tracking-capable karrio provider."""
    rows = [{"adapter": name, "package": "trackctl", "required": [], "optional": []} for name in BUILTIN]
    for name, ep in sorted(_entry_points().items()):
        rows.append({"adapter": name, "package": getattr(ep.dist, "name", None) or ep.value, "required": [],
                     "optional": []})
    from .karrio_adapter import installed, tracking_providers

    if installed("karrio"):
        rows.extend(tracking_providers())
    return rows
