"""karrio's HTTP requests made through trackctl's client while a karrio adapter asks for tracking.

karrio's providers send their requests with karrio's own helpers: `lib.request` on urllib (a
new connection per request, no body cap, no deadline beyond the socket's), and `exec_async` /
`exec_parrallel`, which start an asyncio loop and a thread (or a thread pool) for every call,
even for one tracking number. Under a poll of thousands of shipments that costs more CPU than
the carrier's answer, and it escapes the rules every other carrier request follows.

So, once per process, karrio's `urlopen` and its two concurrency helpers are wrapped: while an
`Exchange` is current (a context variable set by the adapter for one tracking request), each
HTTP request karrio makes goes through trackctl/carriers/transport.py (the pooled keep-alive
client with its 1 MiB cap, hard deadline and wording of failures), paced by the carrier's rate
limit and accounted for exactly as the carrier's server receives it; the helpers then run their
work in the calling thread, in order. Outside an exchange karrio behaves as shipped. karrio's
request builders, its providers' authentication (OAuth tokens, logins) and its parsers are
untouched: only the wire changes hands.
"""

from __future__ import annotations

import contextvars
import http.client
import importlib
import io
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import transport
from .base import Calls, FetchFailed, RateLimited, parse_retry_after

_current: contextvars.ContextVar["Exchange | None"] = contextvars.ContextVar("trackctl_karrio_exchange", default=None)
_lock = threading.Lock()
_originals: dict[str, Any] = {}
HELPERS = ("exec_async", "exec_parrallel")


@dataclass
class Sent:
    """One HTTP request of an exchange: a tracking request (it names the numbers) or another (auth)."""

    track: bool
    status: int | None  # None: no answer (timeout, refused, body over the cap ...)
    latency_ms: float


class Exchange:
    """The HTTP requests karrio makes for one tracking request of one adapter."""

    def __init__(self, provider: str, codes: list[str], timeout: float, calls: Calls | None,
                 mend: Callable[[bytes], bytes] | None = None) -> None:
        self.provider = provider
        self.mend = mend  # applied to tracking answers before karrio reads them (a parser's blind spot)
        self.codes = codes
        self.timeout = timeout
        self.calls = calls
        self.sent: list[Sent] = []
        self.track_status: int | None = None  # the HTTP status of the last tracking request

    def __enter__(self) -> "Exchange":
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)

    def send(self, req) -> "_Answer":
        """Make one of karrio's urllib requests through trackctl's client; answer as urlopen would."""
        url, method, body = req.full_url, req.get_method(), req.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, (bytes, bytearray)):
            raise FetchFailed(f"karrio {self.provider}: a request body trackctl cannot send")
        headers = dict(req.header_items())
        seen = url + (bytes(body).decode("utf-8", "replace") if body else "")
        track = any(code in seen for code in self.codes)  # auth requests never carry the numbers
        if self.calls is not None:
            self.calls.pace()
        started = time.monotonic()
        try:
            answer = transport.request(method, url, headers, self.timeout, body=bytes(body) if body else None)
        except FetchFailed as exc:
            self.sent.append(Sent(track, None, (time.monotonic() - started) * 1000.0))
            raise FetchFailed(f"karrio {self.provider}: {exc}") from None
        self.sent.append(Sent(track, answer.status, (time.monotonic() - started) * 1000.0))
        if track:
            self.track_status = answer.status
        if answer.status == 429:
            raise RateLimited(parse_retry_after(answer.headers.get("Retry-After")))
        if 200 <= answer.status < 300:
            return _Answer(answer, url, self.mend if track else None)
        raise urllib.error.HTTPError(url, answer.status, http.client.responses.get(answer.status, "error"),
                                     answer.headers, io.BytesIO(answer.body))  # type: ignore[arg-type]

    def record(self, failed: bool) -> None:
        """Account for every request sent, as the carrier's server received them.

        429: rate_limited. No answer or 5xx: failed. The last request fails with the exchange
        (its answer was an error karrio reported, or could not be read); the others are ok.
        """
        if self.calls is None:
            return
        for i, sent in enumerate(self.sent):
            if sent.status == 429:
                outcome = "rate_limited"
            elif sent.status is None or sent.status >= 500 or (failed and i == len(self.sent) - 1):
                outcome = "failed"
            else:
                outcome = "ok"
            self.calls.record("track" if sent.track else "auth", outcome, len(self.codes) if sent.track else 0, 0,
                              sent.latency_ms)


class _Answer:
    """What karrio reads of a urlopen answer: status, headers, url, read(), a context manager."""

    def __init__(self, answer: transport.Response, url: str, mend: Callable[[bytes], bytes] | None = None) -> None:
        self.status = self.code = answer.status
        self.headers = answer.headers
        self.url = url
        self._body = mend(answer.body) if mend is not None else answer.body

    def read(self, *_: Any) -> bytes:
        return self._body

    def getcode(self) -> int:
        return self.status

    def info(self):
        return self.headers

    def __enter__(self) -> "_Answer":
        return self

    def __exit__(self, *exc) -> None:
        pass


def install(*modules) -> None:
    """Wrap karrio's urlopen and concurrency helpers (once), and the helpers `modules` imported by name."""
    with _lock:
        helpers = importlib.import_module("karrio.core.utils.helpers")
        if not _originals:
            utils = importlib.import_module("karrio.core.utils")
            for name in HELPERS:
                _originals[name] = getattr(helpers, name)
            _originals["urlopen"] = helpers.urlopen
            helpers.urlopen = _urlopen
            if hasattr(helpers, "_urlopen_with_span"):
                _originals["_urlopen_with_span"] = helpers._urlopen_with_span
                helpers._urlopen_with_span = _urlopen_with_span
            modules = (helpers, utils, *modules)
        for module in modules:
            for name in HELPERS:
                if getattr(module, name, None) is _originals[name]:
                    setattr(module, name, _WRAPPED[name])


def _urlopen(req, *args, **kwargs):
    exchange = _current.get()
    if exchange is None:
        return _originals["urlopen"](req, *args, **kwargs)
    return exchange.send(req)


def _urlopen_with_span(req, timeout=None):
    exchange = _current.get()
    if exchange is None:
        return _originals["_urlopen_with_span"](req, timeout=timeout)
    return exchange.send(req)


def _exec_async(action, sequence):
    if _current.get() is None:
        return _originals["exec_async"](action, sequence)
    return [action(item) for item in sequence or []]


def _exec_parrallel(function, sequence, max_workers=None):
    if _current.get() is None:
        return _originals["exec_parrallel"](function, sequence, max_workers=max_workers)
    results = []
    for item in sequence or []:
        try:
            results.append(function(item))
        except (FetchFailed, RateLimited):
            raise
        except Exception as exc:  # as karrio's helper does: the failure takes the result's place
            results.append(exc)
    return results


_WRAPPED = {"exec_async": _exec_async, "exec_parrallel": _exec_parrallel}
