"""Structured logs on stderr: one line per record, text for people or JSON for journald and Loki.

Every record written while a run is recorded carries that run's id and job (see `bound`), and a
record may carry the run's counts (`extra={"counts": {...}}`). Secrets never reach the output:
URL passwords, `password=` parameters, bearer tokens, webhook secrets (`whsec_...`) and every value
passed to `register_secret` are replaced by `***` in messages and fields alike.

Nothing here is set up at import: the CLI calls `configure` for the commands that log, so
`trackctl assign` never pays for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

ENV_LOG_FORMAT = "TRACKCTL_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
ROOT = "trackctl"

# Fields bound for the current run; a plain dict rather than a ContextVar so that worker
# threads of a job (poll, notify) log with the run id too. One process runs one job at a time.
_bound: dict[str, Any] = {}
_secrets: set[str] = set()
_lock = threading.Lock()
_configured: str | None = None

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s@/]*@")
_KEYWORD_SECRET = re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]+")
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[A-Za-z0-9+/=]+")
# Record attributes that are part of every LogRecord; anything else came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def register_secret(value: str | None) -> None:
    """Never let `value` (a token, a webhook secret, a password) appear in a log line."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return `text` with passwords, tokens and registered secrets replaced by ***."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _KEYWORD_SECRET.sub(r"\1\2***", text)
    text = _BEARER.sub(lambda m: m.group(1) + " ***", text)
    text = _WEBHOOK_SECRET.sub("whsec_***", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` (run_id, job) to every record written inside the block."""
    saved = dict(_bound)
    _bound.update(fields)
    try:
        yield
    finally:
        _bound.clear()
        _bound.update(saved)


def get_logger(name: str) -> logging.Logger:
    """Return the logger `trackctl.NAME`."""
    return logging.getLogger(f"{ROOT}.{name}")


def counts_text(counts: dict[str, Any], prefix: str = "") -> str:
    """Return counts as `key=value` pairs; nested counts read `by_carrier.correios.failed=2`."""
    parts = []
    for key, value in counts.items():
        if isinstance(value, dict):
            inner = counts_text(value, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        else:
            parts.append(f"{prefix}{key}={value}")
    return " ".join(parts)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    return {**_bound, **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, job, counts, and extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        doc.update(_clean(_fields(record)))
        doc["pid"] = record.process
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exception"] = redact(f"{type(exc).__name__}: {exc}")
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """`trackctl: [warning: ]JOB: message (counts) [run ID]`, in the style of the CLI's messages."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        parts = ["trackctl:"]
        if record.levelno >= logging.ERROR:
            parts.append("error:")
        elif record.levelno >= logging.WARNING:
            parts.append("warning:")
        if fields.get("job"):
            parts.append(f"{fields['job']}:")
        parts.append(redact(record.getMessage()))
        counts = fields.get("counts")
        if counts:
            parts.append("(" + redact(counts_text(counts)) + ")")
        if fields.get("run_id"):
            parts.append(f"[run {str(fields['run_id'])[:8]}]")
        return " ".join(parts)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and pytest capture replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(fmt: str | None = None, *, debug: bool = False) -> str:
    """Send trackctl's log records to stderr in `fmt` (default $TRACKCTL_LOG_FORMAT, else text)."""
    global _configured
    fmt = (fmt or os.environ.get(ENV_LOG_FORMAT) or "text").lower()
    if fmt not in LOG_FORMATS:
        fmt = "text"
    with _lock:
        logger = logging.getLogger(ROOT)
        if _configured is None:
            handler = _StderrHandler()
            logger.addHandler(handler)
            logger.propagate = False
        handler = logger.handlers[0]
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        # psycopg's own records (e.g. "error ignored terminating <psycopg.Copy>" once the server
        # is gone) would reach stderr raw through logging's last-resort handler, next to the one
        # error line trackctl prints for the same failure: show them in trackctl's format, and
        # below ERROR only with --debug.
        driver = logging.getLogger("psycopg")
        if handler not in driver.handlers:
            driver.addHandler(handler)
        driver.propagate = False
        driver.setLevel(logging.DEBUG if debug else logging.ERROR)
        _configured = fmt
    return fmt


def configured_format() -> str | None:
    return _configured
