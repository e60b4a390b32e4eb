"""The correios adapter: the Correios SRO tracking API (`/srorastro/v1/objetos/{code}?resultado=T`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from .base import MAX_DESCRIPTION, MAX_LOCATION, CarrierEvent, FetchFailed, clip, event_key, event_objects
from .http_json import JsonGetAdapter, iso_time

DEFAULT_URL = "https://api.correios.com.br"
# Brazil has had no daylight saving time since 2019, so -03:00 is right for every current date;
# it is used only where the tz database (system zoneinfo or the tzdata package) is missing.
BRASILIA_FALLBACK = timezone(timedelta(hours=-3), "-03")

_DELIVERED_GROUP = ("BDE", "BDI", "BDR")
# (codigo, tipo) -> status. Anything else keeps its raw value CODIGO-TIPO and moves nothing.
STATUS_MAP: dict[tuple[str, str], str] = {
    ("PO", "01"): "in_transit",
    ("PO", "09"): "in_transit",
    ("RO", "01"): "in_transit",
    ("DO", "01"): "in_transit",
    ("OEC", "01"): "out_for_delivery",
    **{(c, "01"): "delivered" for c in _DELIVERED_GROUP},
    **{(c, "23"): "returned" for c in _DELIVERED_GROUP},
    **{(c, t): "failed_attempt" for c in _DELIVERED_GROUP for t in ("02", "03", "04", "06", "07")},
    **{("LDI", t): "available_for_pickup" for t in ("01", "02", "03", "14")},
}


@functools.lru_cache(maxsize=1)
def brasilia() -> tzinfo:
    """Return America/Sao_Paulo, or a fixed -03:00 where no tz database is installed."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Sao_Paulo")
    except Exception:  # ZoneInfoNotFoundError, or no zoneinfo support at all
        return BRASILIA_FALLBACK


class CorreiosAdapter(JsonGetAdapter):
    """Correios SRO rastro: events newest first, local Brasília times, codigo + tipo statuses."""

    name = "correios"
    requires_url = False
    default_url = DEFAULT_URL
    path = "/srorastro/v1/objetos/{code}?resultado=T"

    def parse(self, doc: Any, code: str) -> list[CarrierEvent]:
        return parse_objects(doc, code)


def _tipo(value: Any) -> str:
    if isinstance(value, bool):
        raise FetchFailed("invalid body: event tipo is not text")
    if isinstance(value, int):
        return f"{value:02d}"
    if not isinstance(value, str) or not value.strip():
        raise FetchFailed("invalid body: event tipo is missing")
    text = value.strip()
    return text.zfill(2) if text.isdigit() else text.upper()


def parse_local_time(value: Any) -> datetime:
    """Return dtHrCriado (Brasília local time without offset) as an aware datetime."""
    when = iso_time(value, "event dtHrCriado", "a timestamp")
    return when.replace(tzinfo=brasilia()) if when.tzinfo is None else when


def _location(event: Mapping) -> str | None:
    unit = event.get("unidade")
    if unit is None:
        return None
    if not isinstance(unit, dict):
        raise FetchFailed("invalid body: event unidade is not an object")
    address = unit.get("endereco")
    if not isinstance(address, dict):
        return None
    city, state = address.get("cidade"), address.get("uf")
    parts = [p.strip() for p in (city, state) if isinstance(p, str) and p.strip()]
    return clip("/".join(parts), MAX_LOCATION) if parts else None


def parse_objects(doc: Any, code: str) -> list[CarrierEvent]:
    """Return the events of an SRO body; any departure from the shape raises FetchFailed."""
    if not isinstance(doc, dict):
        raise FetchFailed("invalid body: not a JSON object")
    objects = doc.get("objetos")
    if not isinstance(objects, list):
        raise FetchFailed("invalid body: 'objetos' is missing or not a list")
    candidates = [o for o in objects if isinstance(o, dict)]
    if len(candidates) != len(objects):
        raise FetchFailed("invalid body: an entry of 'objetos' is not an object")
    if not candidates:
        return []
    matching = [o for o in candidates if isinstance(o.get("codObjeto"), str)
                and o["codObjeto"].strip().upper() == code.upper()]
    if matching:
        obj = matching[0]
    elif len(candidates) == 1 and candidates[0].get("codObjeto") is None:
        obj = candidates[0]
    else:
        raise FetchFailed("invalid body: the response is for another object")
    events = obj.get("eventos")
    if events is None:
        if "mensagem" in obj:
            return []  # e.g. "SRO-020: Objeto não encontrado na base de dados dos Correios."
        raise FetchFailed("invalid body: the object has neither 'eventos' nor 'mensagem'")
    if not isinstance(events, list):
        raise FetchFailed("invalid body: 'eventos' is not a list")
    out: dict[str, CarrierEvent] = {}
    for event in event_objects(events):
        codigo = event.get("codigo")
        if not isinstance(codigo, str) or not codigo.strip() or len(codigo) > 20:
            raise FetchFailed("invalid body: an event has no codigo")
        codigo = codigo.strip().upper()
        tipo = _tipo(event.get("tipo"))
        if len(tipo) > 20:
            raise FetchFailed("invalid body: event tipo is too long")
        created = event.get("dtHrCriado")
        occurred = parse_local_time(created)
        key = event_key(f"{codigo}|{tipo}|{created.strip()}")
        if key in out:
            continue
        description = event.get("descricao")
        if description is not None and not isinstance(description, str):
            raise FetchFailed("invalid body: event descricao is not a string")
        out[key] = CarrierEvent(
            key=key,
            occurred_at=occurred,
            status=STATUS_MAP.get((codigo, tipo)),
            raw_status=f"{codigo}-{tipo}",
            description=clip(description, MAX_DESCRIPTION),
            location=_location(event),
        )
    return list(out.values())
