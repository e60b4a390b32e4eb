"""One HTTP GET with a hard deadline and a body cap, on the standard library only.

The socket timeout bounds each connect and each read; a watchdog thread (one per process,
trackctl/deadline.py) shuts the socket down when the request's total time is up, so a server
that trickles one byte at a time cannot hold a worker past the carrier's timeout. Bodies above
`max_body` bytes are refused unread.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import telemetry
from ..deadline import Watchdog, connection
from .base import MAX_BODY, FetchFailed, RateLimited, parse_retry_after

READ_CHUNK = 64 * 1024
_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def _context() -> ssl.SSLContext:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


_watchdog = Watchdog("carrier-watchdog")


def get(url: str, headers: Mapping[str, str], timeout: float, max_body: int = MAX_BODY) -> Response:
    """Return the response to GET `url`, or raise FetchFailed (timeout, connection error, body too big)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    try:
        port = parts.port
    except ValueError as exc:
        raise FetchFailed("invalid port in the carrier URL") from exc
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    telemetry.set_attributes(telemetry.http_attributes("GET", url))  # on the carrier request's span
    tls = {"context": _context()} if parts.scheme == "https" else {}
    conn = connection(parts.scheme, parts.hostname, port, timeout, **tls)
    started = time.monotonic()
    ticket = _watchdog.watch(conn, started + timeout)
    try:
        conn.request("GET", target, headers={**headers, "Connection": "close"})
        resp = conn.getresponse()
        telemetry.set_attributes({"http.response.status_code": resp.status})
        length = resp.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_body:
            raise FetchFailed(f"response body of {int(length)} bytes is over the {max_body // 1024} KiB limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = resp.read1(READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > max_body:
                raise FetchFailed(f"response body is over the {max_body // 1024} KiB limit")
            chunks.append(chunk)
        if time.monotonic() - started >= timeout:
            raise FetchFailed(f"timed out after {timeout:g} s")
        return Response(resp.status, resp.headers, b"".join(chunks))
    except FetchFailed:
        raise
    except (TimeoutError, socket.timeout) as exc:
        raise FetchFailed(f"timed out after {timeout:g} s") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() - started >= timeout:
            raise FetchFailed(f"timed out after {timeout:g} s") from exc
        raise FetchFailed(f"connection error: {_describe(exc)}") from exc
    finally:
        _watchdog.release(ticket)
        conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def json_body(resp: Response) -> Any:
    """Return the decoded JSON of a 200 response; raise RateLimited or FetchFailed otherwise.

    Returns None for 404 (the carrier does not know the code yet: no news, not a failure).
    """
    if resp.status == 404:
        return None
    if resp.status == 429:
        raise RateLimited(parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status >= 500:
        raise FetchFailed(f"HTTP {resp.status} from the carrier")
    if resp.status != 200:
        raise FetchFailed(f"unexpected HTTP {resp.status} from the carrier")
    try:
        return json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FetchFailed("invalid body: not JSON") from exc
