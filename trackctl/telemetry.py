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
_tracing = None  # the _Tracing of this process while tracing is on
_warning: str | None = None  # the one line finish() hands back


def start(command: str | None) -> None:
    """Open the root span of this command when the environment asks for traces; else do nothing.

    Never raises: a tracing set-up that fails leaves tracing off and one warning for finish().
    """
    global _tracing, _warning
    if _tracing is not None or not wanted():
        return
    try:
        _tracing = _Tracing(command or "trackctl")
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


_KINDS = {"internal", "client", "server", "producer", "consumer"}


class _Tracing:
    """The SDK objects of one traced process (imported only when tracing is on)."""

    def __init__(self, command: str) -> None:
        _silence_sdk_logs()
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self.failed: str | None = None
        self._context, self._trace = context, trace
        self._propagator = TraceContextTextMapPropagator()
        self._query_names: dict[str, str] | None = None
        resource = Resource.create({"service.version": __version__})
        if not os.environ.get("OTEL_SERVICE_NAME", "").strip() and \
                str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
        # No atexit hook of the SDK's own (it would wait up to 30 s): finish() flushes with a bound.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.exporter = _WatchedExporter(OTLPSpanExporter(timeout=EXPORT_TIMEOUT), self)
        self.processor = BatchSpanProcessor(self.exporter, schedule_delay_millis=SCHEDULE_DELAY_MS,
                                            export_timeout_millis=EXPORT_TIMEOUT * 1000)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("trackctl", __version__)
        self._instrument_psycopg()
        self.root = self.tracer.start_span(f"trackctl {command}", kind=trace.SpanKind.INTERNAL,
                                           attributes={"trackctl.command": command, "process.pid": os.getpid()})
        self.root_context = trace.set_span_in_context(self.root)
        self._token = context.attach(self.root_context)

    # -- spans ------------------------------------------------------------------------------------

    def _parent(self):
        """The context a new span starts from: the current one, or the root's in a bare thread."""
        if self._trace.get_current_span().get_span_context().is_valid:
            return None
        return self.root_context

    def span(self, name: str, attributes: Mapping[str, Any] | None, kind: str) -> "_Span":
        return _Span(self, name, _clean(attributes), kind)

    def set_current(self, attributes: Mapping[str, Any]) -> None:
        current = self._trace.get_current_span()
        if current.is_recording():
            current.set_attributes(_clean(attributes))

    def annotate_root(self, attributes: Mapping[str, Any]) -> None:
        self.root.set_attributes(_clean(attributes))

    def inject(self, headers: dict[str, str]) -> None:
        self._propagator.inject(headers, context=self._parent())

    def bind(self, function: Callable) -> Callable:
        captured = self._context.get_current() if self._parent() is None else self.root_context
        context = self._context

        def bound(*args: Any, **kwargs: Any) -> Any:
            token = context.attach(captured)
            try:
                return function(*args, **kwargs)
            finally:
                context.detach(token)

        return bound

    # -- SQL ----------------------------------------------------------------------------------------

    def query_names(self) -> dict[str, str]:
        """{statement text: area.name} of every sql/queries file, read once."""
        if self._query_names is None:
            from . import queries

            names: dict[str, str] = {}
            folder = queries.queries_dir()
            for path in sorted(folder.glob("*.sql")) if folder.is_dir() else ():
                try:
                    texts = queries.parse(path.read_text(encoding="utf-8"), str(path))
                except (OSError, ValueError):
                    continue
                names.update({text: f"{path.stem}.{name}" for name, text in texts.items()})
            self._query_names = names
        return self._query_names

    def _instrument_psycopg(self) -> None:
        """Trace every statement (no parameters, no SQL comments), named by its sql/queries name."""
        from opentelemetry.instrumentation import psycopg as instrumentation

        names = self.query_names
        tracer_class = instrumentation.CursorTracer
        if not getattr(tracer_class, "_trackctl_named", False):
            plain = tracer_class.get_operation_name

            def operation_name(tracer, cursor, args):
                statement = args[0] if args else None
                named = names().get(statement) if isinstance(statement, str) else None
                return named or plain(tracer, cursor, args)

            tracer_class.get_operation_name = operation_name
            tracer_class._trackctl_named = True
        instrumentation.PsycopgInstrumentor().instrument(
            tracer_provider=self.provider, enable_commenter=False, capture_parameters=False,
            skip_dep_check=True)

    # -- the end ------------------------------------------------------------------------------------

    def finish(self, exit_code: object) -> None:
        from opentelemetry.trace import Status, StatusCode

        code = exit_code if isinstance(exit_code, int) else (0 if exit_code is None else 1)
        self.root.set_attribute("process.exit.code", code)
        if code != 0:
            self.root.set_status(Status(StatusCode.ERROR, f"exit {code}"))
        self.root.end()
        try:
            self._context.detach(self._token)
        except Exception:
            pass
        # The SDK's shutdown waits for the last export for as long as the exporter lets it (its
        # own bound is 30 s): it runs in a daemon thread that is waited for FLUSH_TIMEOUT at most,
        # so a collector that never answers cannot hold the process at exit either.
        import threading

        closing = threading.Thread(target=self.processor.shutdown, name="trackctl-trace-flush", daemon=True)
        closing.start()
        closing.join(FLUSH_TIMEOUT)
        if closing.is_alive() and not self.failed:
            self.failed = f"no answer within {FLUSH_TIMEOUT:g} s"


class _Span:
    """A child span as a context manager, with the small interface span() promises."""

    __slots__ = ("_tracing", "_name", "_attributes", "_kind", "_cm", "span")

    def __init__(self, tracing: _Tracing, name: str, attributes: dict, kind: str) -> None:
        self._tracing, self._name, self._attributes, self._kind = tracing, name, attributes, kind
        self._cm = None
        self.span = None

    def __enter__(self) -> "_Span":
        trace = self._tracing._trace
        kind = getattr(trace.SpanKind, (self._kind if self._kind in _KINDS else "internal").upper())
        # Exceptions are recorded by type only: a message can quote a URL or a token back.
        self._cm = self._tracing.tracer.start_as_current_span(
            self._name, context=self._tracing._parent(), kind=kind, attributes=self._attributes,
            record_exception=False, set_status_on_exception=False)
        self.span = self._cm.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.span is not None:
            self.fail(exc_type.__name__)
        self._cm.__exit__(exc_type, exc, tb)

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self.span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes(_clean(attributes))

    def fail(self, error_type: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR))


class _WatchedExporter:
    """The OTLP exporter, remembering whether an export failed (for the one warning line)."""

    def __init__(self, inner, tracing: _Tracing) -> None:
        self._inner, self._tracing = inner, tracing

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self._inner.export(spans)
        except Exception as exc:
            result, reason = SpanExportResult.FAILURE, type(exc).__name__
        else:
            reason = "the collector refused them or could not be reached"
        if result != SpanExportResult.SUCCESS and not self._tracing.failed:
            self._tracing.failed = reason
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def _silence_sdk_logs() -> None:
    """Keep the SDK's own warnings and tracebacks off stderr: finish() says the one line there is."""
    import logging

    for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
