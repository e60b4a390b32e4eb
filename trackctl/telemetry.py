"""OpenTelemetry traces of trackctl's commands: off unless the standard variables ask for them.

Tracing starts only when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
set (and `OTEL_SDK_DISABLED` is not true, and `OTEL_TRACES_EXPORTER` is not `none`). While it is
off every function here is a cheap no-op and nothing of OpenTelemetry is imported, so
`trackctl assign` starts as fast as ever.

While it is on, one command is one trace:

- `start()` opens the root span (`trackctl <command>`); `record_run()` and `record_outcome()` put
  the run id, job and outcome of a recorded run on it; `finish(exit_code)` ends it and flushes.
- `span(name, attributes)` opens a child span (carrier requests, webhook deliveries). In a worker
  thread without a span of its own it hangs under the root span; `bind(fn)` carries the caller's
  span into a thread, so the SQL spans a worker makes join the trace too.
- SQL statements become spans through opentelemetry-instrumentation-psycopg, without their
  parameters. A statement loaded from `sql/queries/<area>.sql` is named `<area>.<name>`.
- `inject_headers(headers)` adds the W3C `traceparent` (and `tracestate`) of the current span.

Never in the way: the exporter's requests time out after EXPORT_TIMEOUT, the flush at exit waits
at most FLUSH_TIMEOUT, the SDK's own log lines are silenced, and `finish()` returns at most one
warning line for the CLI to print. No secret goes into a span: attributes name hosts and ports,
never URLs (a path or a query can carry a credential), and SQL parameters are never captured.

This module is the switch and the calls the rest of trackctl makes; the SDK objects of a traced
process live in trackctl/telemetry_sdk.py, imported by `start()` only when tracing is on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

EXPORT_TIMEOUT = 1.0  # seconds one export request (with the exporter's own retries) may take
FLUSH_TIMEOUT = 1.0  # seconds the flush at exit may take in all: a dead collector costs no more
SCHEDULE_DELAY_MS = 2000  # long runs send their spans every 2 s in the background
DEFAULT_SERVICE_NAME = "trackctl"

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for traces (an OTLP endpoint set, the SDK not disabled)."""
    env = os.environ if environ is None else environ
    if not any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES):
        return False
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return env.get("OTEL_TRACES_EXPORTER", "").strip().lower() != "none"


def safe_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """Return where traces go as `host:port` (never a path, a query or credentials), for messages."""
    import urllib.parse

    env = os.environ if environ is None else environ
    url = next((env[n].strip() for n in _ENDPOINT_VARIABLES if env.get(n, "").strip()), "")
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.hostname or '?'}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    except ValueError:
        return "the configured endpoint"


class _NoSpan:
    """What span() gives while tracing is off: accepts everything, does nothing."""

    __slots__ = ()

    def __enter__(self) -> "_NoSpan":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass


_NO_SPAN = _NoSpan()
_tracing = None  # the telemetry_sdk.Tracing of this process while tracing is on
_warning: str | None = None  # the one line finish() hands back


def start(command: str | None) -> None:
    """Open the root span of this command when the environment asks for traces; else do nothing.

    Never raises: a tracing set-up that fails leaves tracing off and one warning for finish().
    """
    global _tracing, _warning
    if _tracing is not None or not wanted():
        return
    try:
        from .telemetry_sdk import Tracing

        _tracing = Tracing(command or "trackctl")
    except ImportError:
        _warning = ("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed, so no traces "
                    "are sent (pip install 'trackctl[telemetry]')")
    except Exception as exc:  # a bad OTEL_* value: the command runs, untraced
        _warning = f"tracing is off: {type(exc).__name__}: {str(exc)[:200]}"


def active() -> bool:
    return _tracing is not None


def span(name: str, attributes: Mapping[str, Any] | None = None, kind: str = "internal"):
    """Return a context manager for a child span of the current one (of the root in a bare thread).

    The object it gives has set(key, value), set_attributes(mapping) and fail(error_type).
    """
    if _tracing is None:
        return _NO_SPAN
    return _tracing.span(name, attributes, kind)


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span (None values are left out)."""
    if _tracing is not None:
        _tracing.set_current(attributes)


def http_attributes(method: str, url: str) -> dict[str, Any]:
    """Return the semantic-convention attributes of a request to `url`: method, host and port only.

    The URL itself is left out: its path or query can carry a token.
    """
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {"http.request.method": method}
    return {"http.request.method": method, "server.address": parts.hostname, "server.port": port,
            "url.scheme": parts.scheme}


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent` (and `tracestate` when there is one) of the current span to `headers`."""
    if _tracing is not None:
        _tracing.inject(headers)
    return headers


def bind(function: Callable) -> Callable:
    """Return `function` running in the caller's trace context (for thread targets)."""
    if _tracing is None:
        return function
    return _tracing.bind(function)


def record_run(run_id: str, job: str) -> None:
    """Put the recorded run's id and job on the root span."""
    if _tracing is not None:
        _tracing.annotate_root({"trackctl.run.id": run_id, "trackctl.job": job})


def record_outcome(outcome: str) -> None:
    """Put how the recorded run ended (ok, failed, skipped) on the root span."""
    if _tracing is not None:
        _tracing.annotate_root({"trackctl.run.outcome": outcome})


def query_name(statement: str) -> str | None:
    """Return `<area>.<name>` of a statement loaded from sql/queries (None for any other text)."""
    if _tracing is None:
        return None
    return _tracing.query_names().get(statement)


def finish(exit_code: object) -> str | None:
    """End the root span with the exit code, flush within FLUSH_TIMEOUT; return one warning or None.

    Never raises and never waits longer than FLUSH_TIMEOUT, whatever the collector does.
    """
    global _tracing, _warning
    tracing, _tracing = _tracing, None
    if tracing is not None:
        try:
            tracing.finish(exit_code)
        except Exception as exc:
            tracing.failed = tracing.failed or f"{type(exc).__name__}"
        if tracing.failed and _warning is None:
            _warning = (f"traces not sent to {safe_endpoint()} ({tracing.failed}); "
                        "the command itself is unaffected")
    warning, _warning = _warning, None
    return warning
