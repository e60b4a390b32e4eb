"""Rendering the dashboard (trackctl/dashboard.py) for `trackctl status` with no argument.

Terminal: rich tables, refreshed in place with --watch (rich Live). Pipes: plain lines
`section<TAB>fields...`, or json / jsonl for scripts (with --watch, one document per refresh).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from ..dashboard import Dashboard

NOT_YET = "n/a"  # no value: nothing measured yet (no undelivered event, no due delivery)


def as_json(d: Dashboard) -> dict[str, Any]:
    """Return the dashboard as a JSON-ready document."""
    return {
        "at": d.at,
        "pools": [{"name": p.name, "kind": p.kind, "target": p.target, "free": p.free, "assigned": p.assigned}
                  for p in d.pools],
        "shipments": [{"carrier": s.carrier, "status": s.status, "count": s.count} for s in d.shipments],
        "overdue_polls": d.overdue_polls,
        "outbox": {"pending": d.outbox.pending, "oldest_seconds": d.outbox.oldest_seconds,
                   "lag_seconds": d.outbox.lag_seconds},
        "dead_deliveries": d.dead_deliveries,
        "jobs": [{"job": j.job, "outcome": j.outcome, "started_at": j.started_at, "seconds": j.seconds,
                  "last_ok_at": j.last_ok_at, "counts": j.counts, "error": j.error} for j in d.jobs],
        # Sections a partly migrated database lacked were named here; db.connect refuses such a
        # database now, so the list is always empty. Kept for scripts that read the key.
        "unavailable": [],
    }


def _text(value: Any) -> str:
    if value is None:
        return NOT_YET
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def plain_lines(d: Dashboard) -> list[str]:
    """Return the dashboard as `section<TAB>fields` lines, easy to grep and cut."""
    from ..runs import counts_text

    lines = [f"pool\t{p.name}\t{p.kind}\t{p.target}\t{p.free}\t{p.assigned}" for p in d.pools]
    lines += [f"shipments\t{s.carrier}\t{s.status}\t{s.count}" for s in d.shipments]
    lines.append(f"overdue_polls\t{_text(d.overdue_polls)}")
    lines.append(f"outbox\t{d.outbox.pending}\t{_text(d.outbox.oldest_seconds)}\t{_text(d.outbox.lag_seconds)}")
    lines.append(f"dead_deliveries\t{_text(d.dead_deliveries)}")
    for j in d.jobs:
        started = j.started_at.isoformat(timespec="seconds") if j.started_at else ""
        last_ok = j.last_ok_at.isoformat(timespec="seconds") if j.last_ok_at else ""
        lines.append(f"job\t{j.job}\t{j.outcome}\t{started}\t{'' if j.seconds is None else j.seconds}\t{last_ok}"
                     f"\t{counts_text(j.counts)}")
    return lines


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


OUTCOME_STYLE = {"ok": "green", "running": "cyan", "skipped": "yellow", "partial": "yellow", "failed": "bold red",
                 "died": "bold red",
                 "never": "dim"}


def renderable(d: Dashboard):
    """Return a rich renderable of the whole dashboard."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ..runs import counts_text

    pools = Table(title="Pools", title_justify="left", header_style="bold", expand=False)
    for c in ("pool", "kind", "target", "free", "assigned"):
        pools.add_column(c, justify="left" if c in ("pool", "kind") else "right")
    for p in d.pools:
        low = p.target and p.free < p.target / 4
        pools.add_row(p.name, p.kind, str(p.target), Text(str(p.free), style="bold red" if low else ""),
                      str(p.assigned))

    statuses = sorted({s.status for s in d.shipments}, key=[s.status for s in d.shipments].index)
    shipments = Table(title="Shipments", title_justify="left", header_style="bold")
    shipments.add_column("carrier")
    for s in statuses:
        shipments.add_column(s, justify="right")
    by_carrier: dict[str, dict[str, int]] = {}
    for s in d.shipments:
        by_carrier.setdefault(s.carrier, {})[s.status] = s.count
    for carrier, counts in by_carrier.items():
        shipments.add_row(carrier, *(str(counts.get(s, "")) for s in statuses))
    if not d.shipments:
        shipments.add_row("(none yet)")

    queues = Table(title="Queues", title_justify="left", header_style="bold")
    queues.add_column("what")
    queues.add_column("now", justify="right")
    queues.add_row("overdue polls", _text(d.overdue_polls))
    queues.add_row("outbox backlog", str(d.outbox.pending))
    queues.add_row("oldest undelivered", "-" if d.outbox.oldest_seconds is None else f"{d.outbox.oldest_seconds:.0f}s")
    queues.add_row("notify lag", "-" if d.outbox.lag_seconds is None else f"{d.outbox.lag_seconds:.0f}s")
    queues.add_row("dead deliveries", _text(d.dead_deliveries))

    jobs = Table(title="Jobs (last run)", title_justify="left", header_style="bold")
    for c in ("job", "outcome", "started", "seconds", "last ok", "counts"):
        jobs.add_column(c, justify="right" if c == "seconds" else "left")
    for j in d.jobs:
        jobs.add_row(j.job, Text(j.outcome, style=OUTCOME_STYLE.get(j.outcome, "")), _ago(j.started_at, d.at),
                     "" if j.seconds is None else f"{j.seconds:.2f}", _ago(j.last_ok_at, d.at),
                     counts_text(j.counts) or (j.error or ""))

    footer = Text(f"at {d.at.isoformat(timespec='seconds')}", style="dim")
    return Group(pools, shipments, queues, jobs, footer)


def show(d: Dashboard, fmt: str) -> None:
    """Write one dashboard to stdout in `fmt` (table, plain, json, jsonl; csv is plain here)."""
    from .output import json_line

    if fmt == "table":
        from rich.console import Console

        Console(file=sys.stdout).print(renderable(d))
    elif fmt == "json":
        import json

        from .output import _json_default

        sys.stdout.write(json.dumps(as_json(d), default=_json_default, ensure_ascii=False, indent=2) + "\n")
    elif fmt == "jsonl":
        sys.stdout.write(json_line(as_json(d)) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in plain_lines(d)))
    sys.stdout.flush()


def watch(conn, fmt: str, interval: float) -> None:
    """Refresh the dashboard every `interval` seconds until Ctrl-C: live on a terminal, appended in a pipe.

    Ctrl-C is how a watch ends: exit 0. SIGTERM ends it too, with exit 143 (trackctl/interrupts.py).
    """
    import signal

    from .. import interrupts
    from ..dashboard import snapshot

    interrupts.install()
    with interrupts.cooperative() as stop:
        if fmt == "table":
            from rich.console import Console
            from rich.live import Live

            with Live(renderable(snapshot(conn)), console=Console(file=sys.stdout), auto_refresh=False,
                      screen=False) as live:
                while not stop.wait(interval):
                    live.update(renderable(snapshot(conn)), refresh=True)
        else:
            while True:
                show(snapshot(conn), fmt)
                if stop.wait(interval):
                    break
    if stop.signum not in (None, signal.SIGINT):
        raise stop.interrupted()
