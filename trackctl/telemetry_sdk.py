"""The OpenTelemetry SDK side of trackctl's traces (trackctl/telemetry.py): imported only once
tracing is on, so a command without OTEL_* variables never loads any of it.

`Tracing` holds one traced process's provider, exporter and root span, and names the SQL spans of
opentelemetry-instrumentation-psycopg after their sql/queries block; `Span` is the child span
telemetry.span() gives; `WatchedExporter` remembers a failed export for the one warning line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .telemetry import DEFAULT_SERVICE_NAME, EXPORT_TIMEOUT, FLUSH_TIMEOUT, SCHEDULE_DELAY_MS

KINDS = {"internal", "client", "server", "producer", "consumer"}


class Tracing:
    """The SDK objects of one traced process (imported only when tracing is on)."""

    def __init__(self, command: str) -> None:
        silence_sdk_logs()
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
        self.exporter = WatchedExporter(OTLPSpanExporter(timeout=EXPORT_TIMEOUT), self)
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

    def span(self, name: str, attributes: Mapping[str, Any] | None, kind: str) -> "Span":
        return Span(self, name, clean(attributes), kind)

    def set_current(self, attributes: Mapping[str, Any]) -> None:
        current = self._trace.get_current_span()
        if current.is_recording():
            current.set_attributes(clean(attributes))

    def annotate_root(self, attributes: Mapping[str, Any]) -> None:
        self.root.set_attributes(clean(attributes))

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


class Span:
    """A child span as a context manager, with the small interface span() promises."""

    __slots__ = ("_tracing", "_name", "_attributes", "_kind", "_cm", "span")

    def __init__(self, tracing: Tracing, name: str, attributes: dict, kind: str) -> None:
        self._tracing, self._name, self._attributes, self._kind = tracing, name, attributes, kind
        self._cm = None
        self.span = None

    def __enter__(self) -> "Span":
        trace = self._tracing._trace
        kind = getattr(trace.SpanKind, (self._kind if self._kind in KINDS else "internal").upper())
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
        self.span.set_attributes(clean(attributes))

    def fail(self, error_type: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR))


class WatchedExporter:
    """The OTLP exporter, remembering whether an export failed (for the one warning line)."""

    def __init__(self, inner, tracing: Tracing) -> None:
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


def clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def silence_sdk_logs() -> None:
    """Keep the SDK's own warnings and tracebacks off stderr: finish() says the one line there is."""
    import logging

    for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
