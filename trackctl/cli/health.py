"""trackctl health: exit 0 when all is well, 1 with one line per problem."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..errors import TrackctlError
from . import Format, app, connection


@app.command("health")
def health_cmd(
    ctx: typer.Context,
    fmt: Optional[Format] = typer.Option(None, "--format", help="plain (one line per problem) or json."),
) -> None:
    """Check the database and pools; exit 1 with one line per problem.

    Example (monitoring): trackctl health || page-someone
    """
    from ..health import Problem, run_checks

    try:
        with connection(ctx, check_schema=False) as conn:
            problems = run_checks(conn)
    except TrackctlError as exc:
        problems = [Problem("database", str(exc))]
    if fmt in (Format.json, Format.jsonl):
        doc = {"healthy": not problems, "problems": [{"check": p.check, "message": p.message} for p in problems]}
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        for p in problems:
            sys.stdout.write(f"{p.check}: {p.message}\n")
    raise typer.Exit(1 if problems else 0)
