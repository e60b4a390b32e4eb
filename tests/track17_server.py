"""A local 17TRACK-shaped server (Tracking API v2.4 as in ../shared/CARRIERS.md) for tests and benches.

It enforces what the real service does: the `17token` header, at most 40 numbers per request
(an over-size call is answered with an error and counted), and 3 requests per second per key
(any request that would be the 4th within one second is answered 429 and counted). It keeps
HTTP/1.1 connections open (keep-alive) and counts the TCP connections it accepted, so a bench can
show how many requests each connection carried.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server import LocalServer

ACTIONS = ("register", "gettrackinfo", "stoptrack")


@dataclass
class Call:
    action: str
    numbers: list[str]
    at: float
    status: int  # HTTP status answered


@dataclass
class Track17Server(LocalServer):
    METHOD, QUEUE = "POST", 256

    key: str = "k-17"
    per_call: int = 40
    per_second: int = 3
    window: float = 1.0
    latency: float = 0.0
    histories: dict[str, dict] = field(default_factory=dict)  # number -> track_info
    undetected: set[str] = field(default_factory=set)  # numbers whose carrier 17TRACK cannot detect
    rejected: dict[str, tuple[int, str]] = field(default_factory=dict)  # number -> gettrackinfo rejection
    registered: set[str] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    register_units: int = 0  # accepted registrations: the quota spent
    oversize: int = 0
    limited: int = 0
    connections: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._recent: deque[float] = deque()
        self._server: ThreadingHTTPServer | None = None

    # -- running ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


    # -- helpers for tests ----------------------------------------------------------------------

    def track(self, number: str, status: str, events: list[dict] | None = None) -> None:
        """Give a number a history: latest status and events (time_iso, description, location, stage, sub_status)."""
        self.histories[number] = {
            "latest_status": {"status": status, "sub_status": f"{status}_Other"},
            "tracking": {"providers": [{"events": list(events or [])}]},
        }

    def count(self, action: str) -> int:
        return sum(1 for c in self.calls if c.action == action and c.status == 200)

    def numbers_asked(self, action: str) -> int:
        return sum(len(c.numbers) for c in self.calls if c.action == action and c.status == 200)

    def max_in_window(self) -> int:
        """The most requests that arrived within any `window` seconds."""
        times = sorted(c.at for c in self.calls)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - self.window:
                j += 1
            best = max(best, i - j + 1)
        return best

    # -- answering ------------------------------------------------------------------------------

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, doc: dict, headers: dict | None = None) -> None:
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        now = time.monotonic()
        action = handler.path.rstrip("/").rsplit("/", 1)[-1] if handler.path.startswith("/track/v2.4/") else ""
        try:
            items = json.loads(raw) if raw else None
        except ValueError:
            items = None
        numbers = [i.get("number") for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        with self.lock:
            while self._recent and self._recent[0] <= now - self.window:
                self._recent.popleft()
            if handler.headers.get("17token") != self.key:
                status, doc = 401, {"code": -18010001, "data": {"errors": [{"code": -18010001, "message": "bad key"}]}}
            elif len(self._recent) >= self.per_second:
                self.limited += 1
                status, doc = 429, {"code": -18010018, "data": {"errors": [{"code": -18010018, "message": "too many"}]}}
            elif action not in ACTIONS or not isinstance(items, list) or not items:
                status, doc = 400, {"code": -18010002, "data": {"errors": [{"code": -18010002, "message": "bad request"}]}}
            elif len(items) > self.per_call:
                self.oversize += 1
                status, doc = 200, {"code": -18010013, "data": {"errors": [{"code": -18010013, "message": "over 40"}]}}
            else:
                status, doc = 200, {"code": 0, "data": self._data(action, numbers)}
            if status != 429:
                self._recent.append(now)
            self.calls.append(Call(action, numbers, now, status))
        if self.latency:
            time.sleep(self.latency)
        self._reply(handler, status, doc, {"Retry-After": "1"} if status == 429 else None)

    def _data(self, action: str, numbers: list[str]) -> dict:
        accepted, rejected = [], []

        def reject(number: str, code: int, message: str) -> None:
            rejected.append({"number": number, "error": {"code": code, "message": message}})

        for number in numbers:
            if action == "register":
                if number in self.registered:
                    reject(number, -18019901, "The tracking number is already registered.")
                elif number in self.undetected:
                    reject(number, -18019903, "The carrier cannot be detected.")
                else:
                    self.registered.add(number)
                    self.register_units += 1
                    accepted.append({"number": number, "carrier": 2151})
            elif number not in self.registered:
                reject(number, -18019902, "The tracking number is not registered.")
            elif action == "stoptrack":
                self.stopped.add(number)
                accepted.append({"number": number, "carrier": 2151})
            elif number in self.rejected:
                reject(number, *self.rejected[number])
            else:
                info = self.histories.get(number) or {"latest_status": {"status": "NotFound"}, "tracking": {"providers": []}}
                accepted.append({"number": number, "carrier": 2151, "track_info": info})
        return {"accepted": accepted, "rejected": rejected}


def event(time_iso: str, description: str, stage: str | None = None, sub_status: str | None = None,
          location: str | None = None) -> dict:
    return {"time_iso": time_iso, "description": description, "location": location, "stage": stage,
            "sub_status": sub_status}
