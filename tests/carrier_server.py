"""A real HTTP carrier on 127.0.0.1 for tests and benchmarks, speaking http-json or correios.

Built on tests/local_server.py like the karrio and 17TRACK servers: HTTP/1.1 keep-alive,
connections counted.

Each code has a history (the events the carrier knows) and optionally a script of one-off
replies consumed in order (429, 5xx, hangs, garbage, huge bodies, slow trickles); `default`
applies to every request without a scripted reply. The server records every request (path,
headers, start and end times) and the highest number of requests it was answering at once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server import LocalServer

NOT_FOUND_SRO = "SRO-020: Objeto não encontrado na base de dados dos Correios."


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: the code's history in the server's shape
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    hang: float = 0.0  # seconds to sit without answering at all (ends early when the server stops)
    trickle: float = 0.0  # seconds between single bytes of the body (headers sent at once)
    size: int = 0  # pad the JSON body with whitespace up to this many bytes


@dataclass
class Seen:
    path: str
    code: str
    headers: dict
    started: float
    ended: float = 0.0


class CarrierServer(LocalServer):
    METHOD = "GET"

    def __init__(self, shape: str = "http-json", latency: float = 0.0) -> None:
        if shape not in ("http-json", "correios"):
            raise ValueError(shape)
        self.shape = shape
        self.latency = latency
        self.histories: dict[str, list[dict]] = {}
        self.scripts: dict[str, list[Reply]] = {}
        self.default: Reply | None = None
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections = 0  # TCP connections accepted (keep-alive: far fewer than requests)
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ----------------------------------------------------------------------------

    def history(self, code: str, events: list[dict]) -> None:
        with self.lock:
            self.histories[code] = list(events)

    def script(self, code: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts.setdefault(code, []).extend(replies)

    def count(self, code: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.code == code)

    def counts(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for r in self.requests:
                out[r.code] = out.get(r.code, 0) + 1
            return out

    # -- life cycle (start, __enter__, __exit__: tests/local_server.py) --------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    # -- answering ----------------------------------------------------------------------------

    def _code_of(self, path: str) -> str | None:
        parts = urllib.parse.urlsplit(path)
        segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
        if self.shape == "http-json" and len(segments) == 2 and segments[0] == "trackings":
            return segments[1]
        if (self.shape == "correios" and len(segments) == 4 and segments[:3] == ["srorastro", "v1", "objetos"]
                and urllib.parse.parse_qs(parts.query).get("resultado") == ["T"]):
            return segments[3]
        return None

    def _body(self, code: str) -> tuple[int, bytes]:
        events = self.histories.get(code)
        if self.shape == "http-json":
            if events is None:
                return 404, b'{"error": "unknown code"}'
            return 200, json.dumps({"code": code, "events": events}).encode()
        obj = {"codObjeto": code, "eventos": events} if events is not None else {"codObjeto": code, "mensagem": NOT_FOUND_SRO}
        return 200, json.dumps({"versao": "1.0.0", "quantidade": 1, "objetos": [obj]}, ensure_ascii=False).encode()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        code = self._code_of(handler.path)
        seen = Seen(handler.path, code or "", dict(handler.headers.items()), time.monotonic())
        with self.lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self.scripts.get(code or "")
            reply = scripted.pop(0) if scripted else self.default
            status, body = self._body(code) if code else (400, b"bad path")
        finished = False

        def finish() -> None:
            # The request stops counting as in flight just before its last bytes go out: once they
            # are out the client may start its next request before this thread runs again, which
            # must not look like one request too many.
            nonlocal finished
            with self.lock:
                if not finished:
                    finished = True
                    self.in_flight -= 1
                    seen.ended = time.monotonic()

        try:
            reply = reply or Reply()
            if reply.hang:
                self.stopping.wait(reply.hang)
                handler.close_connection = True  # no answer at all: the connection ends with the hang
                return
            wait = self.latency + reply.delay
            if wait:
                time.sleep(wait)
            if reply.body is not None:
                status, body = reply.status, reply.body
            elif reply.status != 200:
                status, body = reply.status, b'{"error": "scripted"}'
            if reply.size and len(body) < reply.size:
                body = body + b" " * (reply.size - len(body))
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            for k, v in reply.headers.items():
                handler.send_header(k, v)
            handler.end_headers()
            if reply.trickle:
                for i in range(len(body)):
                    if self.stopping.is_set():
                        return
                    if i == len(body) - 1:
                        finish()
                    handler.wfile.write(body[i:i + 1])
                    handler.wfile.flush()
                    time.sleep(reply.trickle)
            else:
                finish()
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            finish()


def http_json_event(ident: str, status: str, occurred_at: str, description: str | None = None,
                    location: str | None = None) -> dict:
    return {"id": ident, "status": status, "occurred_at": occurred_at, "description": description,
            "location": location}


def correios_event(codigo: str, tipo: str, created: str, description: str = "", city: str | None = "SAO PAULO",
                   uf: str | None = "SP") -> dict:
    event = {"codigo": codigo, "tipo": tipo, "dtHrCriado": created, "descricao": description}
    if city is not None or uf is not None:
        address = {k: v for k, v in (("cidade", city), ("uf", uf)) if v is not None}
        event["unidade"] = {"tipo": "Unidade de Distribuição", "endereco": address}
    return event
