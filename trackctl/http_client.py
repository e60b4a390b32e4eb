"""The one HTTP client of trackctl (carrier adapters and webhook deliveries), on urllib3.

- Pooling and keep-alive: one `urllib3.PoolManager` per client, so one pool per scheme, host
  and port, kept for the client's life; `shared()` is the process's client for carriers, so a
  poll run reuses each carrier's connections across its requests.
- Timeouts: a short connect timeout (at most CONNECT_TIMEOUT) and the request's own timeout for
  reads, plus a hard deadline for the whole request: the socket timeout only bounds each read,
  so a server that sends a byte every second could otherwise hold a request for ever. The
  watchdog of trackctl/deadline.py shuts the socket when the deadline passes, whatever phase the
  request is in (connect, headers, body).
- Bodies are capped (`max_body`): over the cap a request fails, or with `cut_body=True` the
  answer is kept and the rest dropped along with the connection.
- One wording for every transport failure (`TransportError`), the same in poll and in
  deliveries: "host name not found: HOST", "connection refused", "timed out after 10 s" ...
- A host whose name did not resolve fails at once for DNS_NEGATIVE_TTL seconds, without asking
  the resolver again.
- `abort()` ends every request in flight at once and refuses new ones (Ctrl-C in notify).

urllib3 (rather than httpx) because it is already a dependency of much of the ecosystem, costs
less to import than httpx with httpcore, h11 and anyio, is thread-safe with a synchronous API
that suits trackctl's worker threads, and lets the connection class be replaced, which is how
the deadline reaches each request's socket (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError,
                                ProtocolError, ReadTimeoutError, SSLError)

from . import __version__
from .deadline import Watchdog

MAX_BODY = 1024 * 1024  # a carrier body above 1 MiB is a failed request
CONNECT_TIMEOUT = 3.0  # seconds: far shorter than a read, so an unreachable host costs little
DNS_NEGATIVE_TTL = 30.0  # seconds a host name that did not resolve fails at once
POOL_SIZE = 64  # idle keep-alive connections kept per host (more may be open at once; the extra close)
READ_CHUNK = 64 * 1024
USER_AGENT = f"trackctl/{__version__}"

# trackctl reports every outcome itself; urllib3's own warnings (a full pool discarding a
# connection, headers it could not parse, with a traceback) are not for trackctl's users.
logging.getLogger("urllib3").setLevel(logging.ERROR)


class TransportError(Exception):
    """No usable HTTP answer: timeout, connection error, unreadable answer or body over the cap.

    `kind` is one of: timeout, dns, refused, tls, connection, body, url, aborted. The message is
    the one wording trackctl shows for it, and never contains the URL's path or query.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive (urllib3's HTTPHeaderDict)
    body: bytes
    cut: bool = False  # the body was longer than max_body and only its start was read


# --- the deadline reaches the socket -------------------------------------------------------------

class _Request(threading.local):
    """What the connection classes need to know about the request their thread is making."""

    client: "HttpClient | None" = None
    deadline: float = 0.0
    tickets: list

    def __init__(self) -> None:
        self.tickets = []


_current = _Request()


def _arm(conn: object) -> None:
    """Put the connection under the current request's deadline (once per request); refuse if aborted."""
    client = _current.client
    if client is None:
        return
    if client.aborted:
        raise TransportError("abandoned: the run was stopped", "aborted")
    if not any(c is conn for c, _ in _current.tickets):
        _current.tickets.append((conn, client._watchdog.watch(conn, _current.deadline)))


class _Watched:
    watched_sock: socket.socket | None = None

    def connect(self) -> None:
        _arm(self)
        super().connect()  # type: ignore[misc]
        # http.client lets go of `sock` once a closing answer begins; the watchdog keeps a hold.
        self.watched_sock = self.sock  # type: ignore[attr-defined]

    def request(self, *args, **kwargs) -> None:
        _arm(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# --- the client ----------------------------------------------------------------------------------

class HttpClient:
    """Thread-safe HTTP client with keep-alive pools per host, a hard deadline per request and a body cap."""

    def __init__(self, *, pool_size: int = POOL_SIZE, connect_timeout: float = CONNECT_TIMEOUT,
                 user_agent: str = USER_AGENT) -> None:
        self.connect_timeout = connect_timeout
        self.user_agent = user_agent
        self.aborted = False
        self._watchdog = Watchdog("http-deadline")
        self._manager = urllib3.PoolManager(num_pools=256, maxsize=pool_size, block=False, retries=False)
        self._manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self._unresolved: dict[str, float] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes | None = None,
                timeout: float = 10.0, max_body: int = MAX_BODY, cut_body: bool = False) -> Response:
        """Return the answer to one request, whatever its status; raise TransportError when there is none."""
        if self.aborted:
            raise TransportError("abandoned: the run was stopped", "aborted")
        host = _host_of(url)
        with self._lock:
            until = self._unresolved.get(host)
        if until is not None and until > time.monotonic():
            raise TransportError(f"host name not found: {host}", "dns")
        sent = {"User-Agent": self.user_agent, **(headers or {})}
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                return self._once(method, url, sent, body, timeout, deadline, max_body, cut_body)
            except _Stale:
                if attempt == 2 or time.monotonic() >= deadline:
                    raise TransportError("connection closed by the server", "connection") from None
            except TransportError as exc:
                if exc.kind == "dns":
                    with self._lock:
                        self._unresolved[host] = time.monotonic() + DNS_NEGATIVE_TTL
                raise
        raise AssertionError("not reached")

    def _once(self, method: str, url: str, headers: dict, body: bytes | None, timeout: float, deadline: float,
              max_body: int, cut_body: bool) -> Response:
        _current.client, _current.deadline, _current.tickets = self, deadline, []
        fired = False
        response = None
        try:
            left = max(deadline - time.monotonic(), 0.001)
            limits = urllib3.Timeout(connect=min(self.connect_timeout, left), read=left)
            response = self._manager.request(method, url, body=body, headers=headers, timeout=limits,
                                             preload_content=False, redirect=False, retries=False)
            data, cut = _read_body(response, max_body, cut_body)
            if self._release():
                raise self._cut_short(timeout)
            if cut:
                _discard(response)  # the rest of the body is not wanted: nor is the connection
            else:
                response.release_conn()
            return Response(response.status, response.headers, data, cut)
        except TransportError:
            if response is not None:
                _discard(response)
            raise
        except (HTTPError, OSError, http.client.HTTPException, ValueError) as exc:
            fired = self._release() or fired
            if response is not None:
                _discard(response)
            if fired or self.aborted:
                raise self._cut_short(timeout) from None
            if _is_stale(exc, response):
                raise _Stale() from None
            raise _translate(exc, url, timeout) from None
        finally:
            self._release()
            _current.client = None

    def _cut_short(self, timeout: float) -> TransportError:
        if self.aborted:
            return TransportError("abandoned: the run was stopped", "aborted")
        return TransportError(f"timed out after {timeout:g} s", "timeout")

    def _release(self) -> bool:
        """Stop watching this request's connections; return True if its deadline (or an abort) had fired."""
        fired = False
        for _, ticket in _current.tickets:
            fired = self._watchdog.release(ticket) or fired
        _current.tickets = []
        return fired

    def abort(self) -> None:
        """End every request in flight now (their sockets are shut) and refuse new ones."""
        self.aborted = True
        self._watchdog.fire_all()

    def close(self) -> None:
        self._watchdog.close()
        self._manager.clear()


class _Stale(Exception):
    """A kept-alive connection the server had closed: the request is made once more, on a new one."""


def _is_stale(exc: BaseException, response) -> bool:
    # Only before any answer: a connection reset or closed while the request was being sent.
    if response is not None or not isinstance(exc, ProtocolError):
        return False
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(cause, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))


def _read_body(response, max_body: int, cut_body: bool) -> tuple[bytes, bool]:
    length = response.headers.get("Content-Length")
    if not cut_body and length is not None and length.strip().isdigit() and int(length) > max_body:
        raise TransportError(f"response body of {int(length)} bytes is over the {max_body // 1024} KiB limit", "body")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(READ_CHUNK, max_body + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > max_body:
            if cut_body:
                return b"".join(chunks) + chunk[: max_body - (size - len(chunk))], True
            raise TransportError(f"response body is over the {max_body // 1024} KiB limit", "body")
        chunks.append(chunk)


def _discard(response) -> None:
    try:
        conn = getattr(response, "connection", None)
        if conn is not None:
            conn.close()
        response.release_conn()
    except Exception:
        pass


def _host_of(url: str) -> str:
    try:
        return (urllib3.util.parse_url(url).host or "").lower()
    except ValueError:
        return ""


def _translate(exc: BaseException, url: str, timeout: float) -> TransportError:
    """Return the one wording of a transport failure."""
    if isinstance(exc, NameResolutionError) or isinstance(getattr(exc, "__cause__", None), socket.gaierror) \
            or isinstance(exc, socket.gaierror):
        return TransportError(f"host name not found: {_host_of(url)}", "dns")
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        return TransportError(f"timed out connecting after {min(timeout, CONNECT_TIMEOUT):g} s", "timeout")
    if isinstance(exc, (ReadTimeoutError, TimeoutError, socket.timeout)):
        return TransportError(f"timed out after {timeout:g} s", "timeout")
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ProtocolError) and len(exc.args) > 1:
        cause = exc.args[1]
    for candidate in (exc, cause):
        if isinstance(candidate, ConnectionRefusedError):
            return TransportError("connection refused", "refused")
        if isinstance(candidate, (ssl.SSLError, SSLError)):
            reason = getattr(candidate, "reason", None) or str(candidate).split(":")[0][:80] or "handshake failed"
            return TransportError(f"TLS: {reason}", "tls")
        if isinstance(candidate, ConnectionResetError):
            return TransportError("connection reset by the server", "connection")
        if isinstance(candidate, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
            return TransportError("connection closed by the server", "connection")
        if isinstance(candidate, (TimeoutError, socket.timeout)):
            return TransportError(f"timed out after {timeout:g} s", "timeout")
    if isinstance(exc, NewConnectionError) and "refused" in str(exc).lower():
        return TransportError("connection refused", "refused")
    if isinstance(exc, (urllib3.exceptions.LocationValueError, urllib3.exceptions.URLSchemeUnknown)):
        return TransportError("invalid URL", "url")
    detail = cause if isinstance(cause, BaseException) and not isinstance(exc, NewConnectionError) else exc
    text = (str(detail).strip().splitlines() or [""])[0]
    if "Failed to establish a new connection: " in text:
        text = text.split("Failed to establish a new connection: ", 1)[1]
    return TransportError(f"connection error: {text[:120] or type(detail).__name__}", "connection")


_shared: HttpClient | None = None
_shared_lock = threading.Lock()


def shared() -> HttpClient:
    """Return the process's client for carrier requests (created on first use, kept for the process)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HttpClient()
        return _shared
