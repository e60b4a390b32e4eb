"""A local server answering karrio providers' documented tracking shapes (for `--url` tests and benches).

Each provider's handler is a function (method, path, query, headers, body) -> (status, body)
registered in PROVIDERS; the server counts requests and the TCP connections it accepted.
Sample bodies are written here from the providers' public API documentation.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from karrio_providers import provider_answer
from local_server import LocalServer


def dhl_universal_shipment(code: str, status_code: str = "transit", events: list[dict] | None = None) -> dict:
    """A DHL Shipment Tracking - Unified API shipment (GET /track/shipments?trackingNumber=...)."""
    events = events if events is not None else [
        {"timestamp": "2026-11-21T08:02:00", "statusCode": status_code, "status": status_code.upper(),
         "description": "Shipment is on its way", "location": {"address": {"addressLocality": "Leipzig, DE"}}},
        {"timestamp": "2026-11-20T09:15:00", "statusCode": "pre-transit", "status": "PRE-TRANSIT",
         "description": "Shipment information received", "location": {"address": {"addressLocality": "Bonn, DE"}}},
    ]
    return {"shipments": [{"id": code, "service": "parcel-de",
                           "status": {"timestamp": events[0]["timestamp"] if events else "2026-11-20T09:15:00",
                                      "statusCode": status_code, "status": status_code.upper(),
                                      "description": "Current status"},
                           "events": events}]}


def laposte_shipment(code: str, events: list[tuple[str, str, str]] | None = None) -> dict:
    """A La Poste Suivi v2 answer (GET /suivi/v2/idships/CODE): events (code, label, date) newest first."""
    events = events if events is not None else [
        ("DI1", "Votre colis est livré.", "2026-11-22T10:00:00+01:00"),
        ("ET1", "Votre colis est en cours d'acheminement.", "2026-11-21T06:30:00+01:00"),
        ("PC1", "Votre colis a été déposé.", "2026-11-20T09:00:00+01:00"),
    ]
    return {"lang": "fr_FR", "scope": "open", "returnCode": 200,
            "shipment": {"idShip": code, "holder": 4, "product": "Colissimo", "isFinal": events[0][0] == "DI1",
                         "event": [{"code": c, "label": label, "date": date} for c, label, date in events],
                         "timeline": [{"shortLabel": "Pris en charge", "status": True, "type": 1}]}}


class KarrioServer(LocalServer):
    METHODS, QUEUE = ("GET", "POST"), 512

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.shipments: dict[str, dict] = {}  # code -> body to answer
        self.failures: dict[str, tuple] = {}  # code -> (status, body[, headers]) for the requests naming it
        self.requests: list[tuple[str, dict]] = []  # (path, headers)
        self.connections = 0
        self.first: float | None = None  # when the first request came in
        self.last = 0.0  # when the last answer went out
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((handler.path, dict(handler.headers.items())))
            self.first = self.first if self.first is not None else time.monotonic()
        if self.latency:
            time.sleep(self.latency)
        content_type, extra = "application/json", {}
        scripted = next((f for code, f in self.failures.items() if code in parts.path or code.encode() in body), None)
        answer = provider_answer(self, handler.command, parts.path, handler.headers, body)
        if scripted is not None and parts.path != "/track/shipments":  # a scripted answer (status, body[, headers])
            status, doc, extra = scripted[0], scripted[1], (scripted[2] if len(scripted) > 2 else {})
        elif answer is not None:
            status, doc, content_type, extra = answer
        elif parts.path == "/track/shipments" and "trackingNumber" in query:
            code = query["trackingNumber"][0]
            if not handler.headers.get("DHL-API-Key"):
                status, doc = 401, {"status": 401, "title": "Unauthorized", "detail": "missing API key"}
            elif code in self.failures:
                status, doc = self.failures[code]
            elif code in self.shipments:
                status, doc = 200, self.shipments[code]
            else:
                status, doc = 404, {"title": "No result found", "status": 404,
                                    "detail": "No shipment with given tracking number found."}
        elif parts.path.startswith("/suivi/v2/idships/"):
            code = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
            if not handler.headers.get("X-Okapi-Key"):
                status, doc = 401, {"code": "UNAUTHORIZED", "message": "missing key"}
            elif code in self.shipments:
                status, doc = 200, self.shipments[code]
            else:
                status, doc = 404, {"lang": "fr_FR", "returnCode": 404, "idShip": code,
                                    "returnMessage": "Numéro invalide ou non trouvé"}
        else:
            status, doc = 404, {"status": 404, "title": "Not Found", "detail": "no such path"}
        body = doc if isinstance(doc, bytes) else doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
        with self.lock:
            self.last = max(self.last, time.monotonic())
