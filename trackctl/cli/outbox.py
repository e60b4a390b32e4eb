"""trackctl outbox: retention of the outbox."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value

outbox_app = typer.Typer(help="The outbox of events (retention).\n\nExample: trackctl outbox prune --older-than 30d", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option("30d", "--older-than", metavar="DURATION", help="Only events older than this."),
    include_dead: bool = typer.Option(False, "--include-dead",
                                      help="Also remove events whose delivery is dead (they can no longer be replayed)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Delete old events that every subscriber and consumer group is done with.

    An event stays while a delivery of it is pending (or dead, unless --include-dead) and while a
    consumer group has not been handed it or has not acknowledged it.

    Example (cron): 23 3 * * * trackctl outbox prune --older-than 30d
    """
    from datetime import timedelta

    from .. import jobs
    from ..names import parse_duration
    from .output import emit_one
    from .jobs import start_job

    age = timedelta(seconds=parse_duration(older_than))
    start_job(ctx)
    with connection(ctx) as conn:
        result = jobs.outbox_prune(conn, age, include_dead=include_dead)
    emit_one({"removed": result.data}, ["removed"], fmt_value(fmt))
    result.raise_problem()
