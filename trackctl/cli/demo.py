"""trackctl demo: watch the whole system work for under a minute on the embedded database."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .app import FORMAT_HELP, Format, app, connection, fmt_value, say, settings

SUMMARY = ["orders", "new_codes", "refilled", "delivered", "polled", "events", "webhooks", "cycles", "complete",
           "seconds"]


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    orders: int = typer.Option(300, "--orders", min=1, max=5_000, help="How many demo orders to assign."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before writing demo data to a configured database."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Run everything once: simulator carrier, refill, assign, poll and notify until delivered.

    The simulator moves each parcel one status further every second; poll and notify cycles run
    (and are recorded like cron's runs) until every demo shipment is delivered and its webhooks
    have reached a receiver the demo runs on 127.0.0.1. On a terminal the dashboard is shown as
    it goes; a summary ends it. The demo uses its own carrier, pool and subscriber only: your
    subscribers get none of its events and your deliveries are left alone.

    Example: pip install . && trackctl demo
    """
    import sys

    from ..demo import run_demo
    from .output import emit_one
    from .jobs import interactive, start_job

    if not settings(ctx).embedded and not yes:
        if not sys.stdin.isatty():
            raise UsageError("the demo writes demo data to the configured database",
                             hint="pass --yes to confirm, or unset TRACKCTL_DATABASE_URL to use the embedded one")
        typer.confirm("The demo writes a demo carrier, demo orders and their events to the configured database. "
                      "Go on?", abort=True, err=True)
    start_job(ctx)
    with connection(ctx) as conn:
        if interactive():
            summary = _live(conn, orders)
        else:
            summary = run_demo(conn, orders)
    emit_one(summary, SUMMARY, fmt_value(fmt))
    if not summary.complete:
        say(f"demo: stopped after {summary.seconds:.0f} s with {summary.delivered} of {summary.orders} "
            "shipments delivered (a busy machine); run it again to follow new ones")
    say("next: 'trackctl status' (dashboard), 'trackctl runs', 'trackctl metrics', 'trackctl cron print'")


def _live(conn, orders: int):
    """Run the demo with the dashboard refreshed on stderr after every cycle."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from ..dashboard import snapshot
    from ..demo import run_demo
    from .dashboard import renderable

    console = Console(stderr=True)
    with Live(Text("demo: preparing the carrier, refilling, assigning ..."), console=console,
              auto_refresh=False, transient=False) as live:
        def on_cycle(c) -> None:
            head = Text(f"demo cycle {c.number}: {c.delivered}/{c.shipments} delivered, {c.polled} carrier "
                        f"requests, {c.events} events, {c.webhooks} webhooks received, {c.seconds:.0f} s",
                        style="bold")
            live.update(Group(head, renderable(snapshot(conn))), refresh=True)

        return run_demo(conn, orders, on_cycle=on_cycle)
