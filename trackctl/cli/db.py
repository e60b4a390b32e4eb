"""trackctl db: migrations and the embedded server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value, say, settings

db_app = typer.Typer(help="Schema migrations and the embedded PostgreSQL server.\n\nExample: trackctl db migrate", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def migrate_cmd(ctx: typer.Context) -> None:
    """Apply pending migrations from sql/ in order, each in its own transaction.

    Example: trackctl db migrate
    """
    from ..db import migrate

    with connection(ctx, check_schema=False) as conn:
        done = migrate(conn)
    if done:
        for m in done:
            say(f"applied {m.name}")
    else:
        say("schema is up to date")


@db_app.command("status")
def status_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """Show applied and pending migrations (edited ones too).

    Example: trackctl db status --format json
    """
    from ..db import migration_status
    from .output import emit

    with connection(ctx, check_schema=False) as conn:
        states = migration_status(conn)
    emit(states, ["version", "name", "state", "applied_at"], fmt_value(fmt))


@db_app.command("schema")
def schema_cmd(
    ctx: typer.Context,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE (atomically) instead of stdout."),
) -> None:
    """Print the database's schema as SQL (tables, indexes, functions, triggers), as pg_dump shows it.

    Example: trackctl db schema | less

    Example: trackctl db schema --output sql/schema.sql   # after a new migration, in a checkout
    """
    import os
    import sys
    import tempfile

    from ..schema import dump_schema

    with connection(ctx) as conn:
        text = dump_schema(conn)
    if output is None:
        sys.stdout.write(text)
        return
    target = output.resolve()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    say(f"wrote {output}")


@db_app.command("stop")
def stop_cmd(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server (it is started again by the next command).

    Example: trackctl db stop
    """
    from ..embedded import stop

    s = settings(ctx)
    if not s.embedded:
        say("a database URL is configured: trackctl does not manage that server")
        return
    say("stopped the embedded server" if stop(s.home) else "the embedded server is not running")
