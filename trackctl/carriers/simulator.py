"""The simulator adapter: no HTTP, shipments advance on a clock, failures drawn from a seed.

Each shipment goes pending → in_transit → out_for_delivery → delivered, one step every `step`
after it was assigned. A fetch fails with probability `fail`, decided by (seed, code, number of
earlier polls), so a given seed always fails the same polls. `latency` makes each fetch take that
long, which lets load tests exercise the concurrency caps without a server.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from .base import AdapterConfig, CarrierEvent, FetchFailed, ShipmentRef

DEFAULTS = {"step": 60.0, "fail": 0.0, "seed": 0, "latency": 0.0}
STEPS = (
    ("pending", "Order received by the carrier", "Simulator, origin"),
    ("in_transit", "Parcel in transit", "Simulator hub"),
    ("out_for_delivery", "Out for delivery", "Simulator, destination"),
    ("delivered", "Delivered", "Simulator, destination"),
)
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _seconds(name: str, value: str) -> float:
    match = _SECONDS.match(value)
    if not match:
        raise ValueError(f"option {name} must be a duration such as 2s, 500ms or 5m (got {value[:20]!r})")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class SimulatorAdapter:
    """A carrier in-process: deterministic for a given seed."""

    requires_url: ClassVar[bool] = False

    def __init__(self, config: AdapterConfig) -> None:
        opts = {**DEFAULTS, **dict(config.options)}
        self.step = float(opts["step"])
        self.fail = float(opts["fail"])
        self.seed = int(opts["seed"])
        self.latency = float(opts["latency"])
        if self.step <= 0 or not 0 <= self.fail <= 1 or self.latency < 0:
            raise ValueError("simulator options out of range (step > 0, 0 <= fail <= 1, latency >= 0)")

    @staticmethod
    def parse_options(raw: Mapping[str, str]) -> dict[str, Any]:
        """Return typed options from `--option KEY=VALUE` pairs: step, fail, seed, latency."""
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "step":
                out[key] = _seconds(key, value)
                if out[key] <= 0:
                    raise ValueError("option step must be more than zero")
            elif key == "latency":
                out[key] = _seconds(key, value)
            elif key == "fail":
                try:
                    out[key] = float(value)
                except ValueError:
                    raise ValueError(f"option fail must be a fraction from 0 to 1 (got {value[:20]!r})") from None
                if not 0 <= out[key] <= 1:
                    raise ValueError("option fail must be a fraction from 0 to 1")
            elif key == "seed":
                if not re.fullmatch(r"-?\d{1,18}", value.strip()):
                    raise ValueError(f"option seed must be an integer (got {value[:20]!r})")
                out[key] = int(value)
            else:
                raise ValueError(f"unknown simulator option {key!r} (known: fail, latency, seed, step)")
        return out

    def fetch(self, shipment: ShipmentRef) -> list[CarrierEvent]:
        if self.latency:
            time.sleep(self.latency)
        if self.fail and random.Random(f"{self.seed}:{shipment.code}:{shipment.poll_count}").random() < self.fail:
            raise FetchFailed("simulated failure")
        return self.events_at(shipment, datetime.now(timezone.utc))

    def events_at(self, shipment: ShipmentRef, now: datetime) -> list[CarrierEvent]:
        """Return the history the simulated carrier has for a shipment at time `now`."""
        elapsed = (now - shipment.assigned_at).total_seconds()
        reached = min(len(STEPS) - 1, int(max(elapsed, 0) // self.step))
        return [
            CarrierEvent(key=f"sim-{n}", occurred_at=shipment.assigned_at + timedelta(seconds=n * self.step),
                         status=status, raw_status=status, description=description, location=location)
            for n, (status, description, location) in enumerate(STEPS[:reached + 1])
        ]
