"""The part every scripted test server shares: a keep-alive threading server on 127.0.0.1 that
counts the connections it accepted and hands each request of one method to `owner._handle`."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer:
    """Subclasses set METHOD ("GET", "POST") or METHODS and define `_handle(handler)`; they set
    `self.lock`, `self.connections = 0` and `self._server = None` in their __init__."""

    METHOD = "GET"
    QUEUE = 256

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive
            # Headers and body go out in two writes: with Nagle's algorithm on, the body of an
            # answer on a kept-alive connection waits for the client's delayed ACK (40 ms here).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def log_message(self, *args) -> None:
                pass

        for method in getattr(self, "METHODS", (self.METHOD,)):
            setattr(Handler, f"do_{method}", lambda handler: owner._handle(handler))

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = self.QUEUE

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
