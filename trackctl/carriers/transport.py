"""Carrier requests through trackctl's one HTTP client (trackctl/http_client.py).

`get` makes one GET with the carrier's timeout (a hard deadline for the whole request), the
1 MiB body cap and keep-alive connections shared by every request of the process to the same
host; `json_body` reads a carrier's answer the way CARRIERS.md says (404: no news; 429: rate
limited with Retry-After; 5xx and other statuses: failed). Transport failures become
FetchFailed with the client's one wording ("host name not found: HOST", "timed out after 10 s").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import telemetry
from ..http_client import Response, TransportError, shared
from .base import MAX_BODY, FetchFailed, RateLimited, parse_retry_after

__all__ = ["Response", "get", "json_body"]


def get(url: str, headers: Mapping[str, str], timeout: float, max_body: int = MAX_BODY) -> Response:
    """Return the response to GET `url`, or raise FetchFailed (timeout, connection error, body too big)."""
    if not url.lower().startswith(("http://", "https://")):
        raise FetchFailed(f"not an http(s) URL: {url.split(':', 1)[0][:20]}://")
    telemetry.set_attributes(telemetry.http_attributes("GET", url))  # on the carrier request's span
    try:
        response = shared().request("GET", url, headers=headers, timeout=timeout, max_body=max_body)
    except TransportError as exc:
        raise FetchFailed(str(exc)) from None
    telemetry.set_attributes({"http.response.status_code": response.status})
    return response


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
