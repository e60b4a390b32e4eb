"""A real webhook receiver on 127.0.0.1 that checks every request with the `standardwebhooks` package.

The endpoint is an independent Standard Webhooks implementation's view of trackctl: it verifies
the signature (and timestamp tolerance) of each POST with `standardwebhooks.Webhook`, records
what it received and what it answered, and answers according to a plan so tests can make it
fail, hang or disappear:

    with WebhookEndpoint(secret, plan=fail_times(2)) as hook:
        ... trackctl webhook add hook.url --secret secret ...
        hook.acknowledged()  # event ids answered with a 2xx

Used by tests/test_notify.py, tests/test_webhooks.py and bench/bench_outbox.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# A plan maps (event id, how many times this id was received, including this one) to the HTTP
# status to answer, or to ("hang", seconds) to sleep that long before answering 200.
Plan = Callable[[str, int], object]


def always(status: int = 200) -> Plan:
    return lambda event_id, nth: status


def fail_times(n: int, status: int = 500) -> Plan:
    """Answer `status` to the first n attempts of each event, then 200."""
    return lambda event_id, nth: status if nth <= n else 200


def hang_first(seconds: float) -> Plan:
    """Hang (no answer for `seconds`) on the first attempt of each event, then answer 200."""
    return lambda event_id, nth: ("hang", seconds) if nth == 1 else 200


@dataclass
class Received:
    event_id: str
    body: dict
    headers: dict
    verified: bool
    error: str | None
    status: int | None = None  # what the endpoint answered (None: it hung and the client left)
    started: float = 0.0
    finished: float | None = None  # set once, when the answer is settled


@dataclass
class WebhookEndpoint:
    secret: str
    plan: Plan = field(default_factory=always)
    latency: float = 0.0  # seconds before every answer
    extra_secrets: tuple[str, ...] = ()  # other secrets each signature set must also verify with
    port: int = 0  # 0: any free port
    verify: bool = True  # False: accept without checking (the benchmark's endpoint, to spare CPU)

    def __post_init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.in_progress: Counter[str] = Counter()
        self.overlaps = 0  # a request for an event id arrived while another for it was in progress
        self.cut_short = 0  # requests whose body ended before its Content-Length (the sender died)
        self.max_concurrent = 0
        self._concurrent = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY the second waits for the
            # client's delayed ACK (40 ms), which no real web server makes its clients pay.
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                endpoint._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/trackctl"

    def __enter__(self) -> "WebhookEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        if len(raw) < length:
            # The sender went away mid-body (a process killed while sending): no request arrived,
            # as any HTTP server sees it; counted apart, never as a delivery or an unverified one.
            with self.lock:
                self.cut_short += 1
            request.close_connection = True
            return
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified, error = True, None
        for secret in (self.secret, *self.extra_secrets) if self.verify else ():
            try:
                Webhook(secret).verify(raw, headers)
            except WebhookVerificationError as exc:
                verified, error = False, str(exc)
        try:
            body = json.loads(raw)
        except ValueError:
            body, verified, error = {}, False, "body is not JSON"
        event_id = headers.get("webhook-id", "")
        item = Received(event_id, body, headers, verified, error, started=time.monotonic())
        with self.lock:
            self.counts[event_id] += 1
            nth = self.counts[event_id]
            if self.in_progress[event_id]:
                self.overlaps += 1
            self.in_progress[event_id] += 1
            self._concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self._concurrent)
            self.received.append(item)
        def settle(status: int | None) -> None:
            self._settle(item, status)

        try:
            answer = self.plan(event_id, nth) if verified else 401
            if self.latency:
                time.sleep(self.latency)
            if isinstance(answer, tuple):
                time.sleep(answer[1])
                answer = 200
            payload = b"{}" if 200 <= answer < 300 else b'{"error":"planned failure"}'
            try:
                request.send_response(answer)
                request.send_header("Content-Type", "application/json")
                request.send_header("Content-Length", str(len(payload)))
                request.end_headers()
                # Settled just before the answer's last bytes go out: once they are out, the
                # client may record the outcome and send its next request before this thread
                # runs again, which must neither look like an unacknowledged success nor like
                # one request too many in flight.
                settle(answer)
                request.wfile.write(payload)
                request.wfile.flush()
            except OSError:
                with self.lock:
                    item.status = None  # the answer never reached the client
                request.close_connection = True  # the client gave up waiting
        finally:
            settle(None)

    def _settle(self, item: "Received", status: int | None) -> None:
        with self.lock:
            if item.finished is None:
                item.finished = time.monotonic()
                item.status = status
                self.in_progress[item.event_id] -= 1
                self._concurrent -= 1

    # --- what happened ----------------------------------------------------------------------

    def acknowledged(self) -> list[str]:
        """Event ids the endpoint answered with a 2xx, in arrival order (repeats included)."""
        with self.lock:
            return [r.event_id for r in self.received if r.status is not None and 200 <= r.status < 300]

    def unverified(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if not r.verified]

    def attempts(self, event_id: str) -> int:
        with self.lock:
            return self.counts[event_id]


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (nor closes)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.accepted = 0
        self.held: list = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/never"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.held.append(client)

    def __enter__(self) -> "BlackHole":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        with self.lock:
            for client in self.held:
                client.close()


# A host name under the reserved .invalid TLD (RFC 2606): it never resolves, and the resolver
# says so at once without the network.
UNRESOLVABLE_URL = "http://hooks.trackctl-test.invalid/never"
