"""Which stderr lines this run writes (text or JSON records), and setting up logging to match.

Chosen once per run, from `--log-format` or TRACKCTL_LOG_FORMAT, by the typer app's root options
or by the lean assign path (trackctl/entry.py). Readers ask `log_format()`; nothing imports the
state itself. Standard library only at import: `trackctl assign` reads it on every start.
"""

from __future__ import annotations

import contextlib
import os

ENV = "TRACKCTL_LOG_FORMAT"
_format = "text"
_chosen = False  # False until the root options and the environment were read


def log_format() -> str:
    """Return `text` or `json`: the format chosen for this run (text until one is chosen)."""
    return _format


def effective_format() -> str:
    """Return the chosen format, or, before the root options were read (a bad root option), the
    environment's."""
    return _format if _chosen else os.environ.get(ENV, "").strip().lower()


def set_log_format(value: str | None, conf) -> None:
    """Choose text or json stderr lines for this run (`value` from --log-format or the environment)."""
    global _format, _chosen
    value = (value or "text").strip().lower()
    if value not in ("text", "json"):
        from ..errors import UsageError

        raise UsageError(f"unknown log format {value[:20]!r} in TRACKCTL_LOG_FORMAT", hint="use text or json")
    _format, _chosen = value, True
    if value == "json":  # text logging is set up lazily, by the commands that log
        setup_logging(conf)


def setup_logging(conf=None) -> None:
    """Send log records to stderr in the chosen format; the database password is never shown."""
    from ..logs import configure, register_secret

    if conf is not None and conf.database_url:
        from psycopg.conninfo import conninfo_to_dict

        with contextlib.suppress(Exception):
            register_secret(conninfo_to_dict(conf.database_url).get("password"))
    configure(_format, debug=bool(conf and conf.debug))
