"""trackctl's one HTTP client (trackctl/http_client.py) against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trackctl import http_client, webhooks
from trackctl.carriers.base import AdapterConfig, FetchFailed, ShipmentRef
from trackctl.carriers.http_json import HttpJsonAdapter
from trackctl.http_client import HttpClient, TransportError
from webhook_endpoint import UNRESOLVABLE_URL, BlackHole


class KeepAliveServer:
    """HTTP/1.1 with keep-alive; records the client port of every request (one port per connection)."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.user_agents: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.ports.append(self.client_address[1])
                server.user_agents.append(self.headers.get("User-Agent", ""))
                body = b'{"code": "c", "events": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "KeepAliveServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_requests_to_one_host_reuse_kept_alive_connections():
    client = HttpClient()
    try:
        with KeepAliveServer() as server:
            for i in range(30):
                assert client.request("GET", f"{server.url}/trackings/c{i}", timeout=5).status == 200
            workers = [threading.Thread(target=lambda: [client.request("POST", f"{server.url}/hook", body=b"{}",
                                                                       timeout=5) for _ in range(10)])
                       for _ in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
    finally:
        client.close()
    assert len(server.ports) == 70
    assert len(set(server.ports[:30])) == 1  # one after the other: one connection for all 30
    assert len(set(server.ports)) <= 5  # four threads at once: at most four more connections
    assert set(server.user_agents) == {f"trackctl/{http_client.__version__}"}


def test_carrier_adapters_share_the_process_pool_across_requests():
    with KeepAliveServer() as server:
        adapter = HttpJsonAdapter(AdapterConfig("acme", url=server.url, timeout=5, user_agent="trackctl/test"))
        for i in range(20):
            adapter.fetch(ShipmentRef("c", "1", "pending", None, i))
    assert len(server.ports) == 20 and len(set(server.ports)) <= 2  # at most one new connection per 10


def test_a_host_that_does_not_resolve_reads_the_same_in_poll_and_in_deliveries():
    from trackctl.lanes import post_event

    host = UNRESOLVABLE_URL.split("/")[2]
    adapter = HttpJsonAdapter(AdapterConfig("acme", url=f"http://{host}", timeout=5))
    with pytest.raises(FetchFailed) as polled:
        adapter.fetch(ShipmentRef("c", "1", "pending", None, 0))
    sub = webhooks.Subscriber(1, UNRESOLVABLE_URL, None, [0], 1, True, None, None, webhooks.generate_secret())
    client = HttpClient()
    try:
        status, delivered = post_event(client, sub, "evt_1", b"{}", 5)
    finally:
        client.close()
    assert status is None
    assert str(polled.value) == delivered == f"host name not found: {host}"


def test_a_host_that_did_not_resolve_fails_at_once_without_asking_the_resolver_again(monkeypatch):
    asked = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    client = HttpClient()
    try:
        for _ in range(5):
            with pytest.raises(TransportError) as caught:
                client.request("POST", UNRESOLVABLE_URL, body=b"{}", timeout=5)
            assert caught.value.kind == "dns"
    finally:
        client.close()
    assert len(asked) == 1


def test_connection_refused_and_timeouts_have_one_wording():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HttpClient()
    try:
        with pytest.raises(TransportError, match="^connection refused$"):
            client.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
        with BlackHole() as hole, pytest.raises(TransportError, match="^timed out after 0.5 s$"):
            client.request("GET", hole.url, timeout=0.5)
    finally:
        client.close()


def test_abort_ends_requests_in_flight_and_refuses_new_ones():
    client = HttpClient()
    failures: list[TransportError] = []

    def wait_for_answer() -> None:
        try:
            client.request("POST", hole.url, body=b"{}", timeout=600)
        except TransportError as exc:
            failures.append(exc)

    with BlackHole() as hole:
        threads = [threading.Thread(target=wait_for_answer, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        import time

        deadline = time.monotonic() + 60
        while hole.accepted < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # the requests are sent and waiting for their answers
        client.abort()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        with pytest.raises(TransportError) as refused:
            client.request("POST", hole.url, body=b"{}", timeout=600)
    client.close()
    assert [f.kind for f in failures] == ["aborted"] * 3 and refused.value.kind == "aborted"
