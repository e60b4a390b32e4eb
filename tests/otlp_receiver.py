"""A real OTLP/HTTP trace receiver on 127.0.0.1 that decodes what it gets with opentelemetry-proto.

    with OtlpReceiver() as otlp:
        ... run trackctl with OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url ...
        otlp.spans()        # every span received, decoded, with its resource attributes

`mode` makes it misbehave the ways a collector does: "ok" answers 200, "refuse" answers 503 to
everything, "hang" accepts the connection and never answers (until the receiver stops).
`closed_port()` gives a port nothing listens on: a collector that is down.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)


@dataclass(frozen=True)
class Span:
    trace_id: str  # hex, as in a traceparent header
    span_id: str
    parent_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict
    resource: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int


def _value(any_value):
    field = any_value.WhichOneof("value")
    if field is None:
        return None
    value = getattr(any_value, field)
    if field == "array_value":
        return [_value(v) for v in value.values]
    if field == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.values}
    return value


def attributes(pairs) -> dict:
    return {kv.key: _value(kv.value) for kv in pairs}


def closed_port() -> int:
    """Return a port on 127.0.0.1 that refuses connections (bound once, then freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OtlpReceiver:
    def __init__(self, mode: str = "ok") -> None:
        if mode not in ("ok", "refuse", "hang"):
            raise ValueError(mode)
        self.mode = mode
        self.bodies: list[bytes] = []  # raw request bodies, as they came (for the secret scan)
        self.paths: list[str] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.mode == "hang":
                    receiver.stopping.wait()
                    return
                if receiver.mode == "refuse":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.bodies.append(body)
                    receiver.paths.append(self.path)
                    receiver.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[Span]:
        out = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind,
                                        attributes(s.attributes), resource, s.status.code,
                                        s.start_time_unix_nano, s.end_time_unix_nano))
        return out
