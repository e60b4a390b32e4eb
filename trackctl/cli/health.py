"""trackctl health: exit 0 when all is well, 1 with one line per problem."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..errors import TrackctlError
from .app import Format, app, connection, say


@app.command("health")
def health_cmd(
    ctx: typer.Context,
    fmt: Optional[Format] = typer.Option(
        None, "--format", show_default=False,
        help="plain (check: problem, one line each; the default in a pipe), table (the default on a terminal), "
             "csv (check,message), json or jsonl (one document: healthy, problems, skipped)."),
) -> None:
    """Check everything that needs a person; exit 0 when healthy, 1 with one line per problem.

    Checks: database reachable and migrated, pools above a quarter of their target, every cron
    job's last successful run recent enough, overdue polls, outbox backlog age, dead deliveries.

    Example (monitoring): trackctl health || page-someone
    """
    from ..health import HealthReport, Problem, health_report
    from .output import default_format, emit

    try:
        with connection(ctx, check_schema=False) as conn:
            report = health_report(conn)
    except TrackctlError as exc:
        from ..console import flag

        report = HealthReport([Problem("database", exc.render(flag))], [])
    problems = report.problems
    chosen = fmt.value if fmt else default_format()
    if chosen in ("json", "jsonl"):
        doc = {"healthy": not problems, "problems": [{"check": p.check, "message": p.message} for p in problems],
               "skipped": [{"check": p.check, "reason": p.message} for p in report.skipped]}
        sys.stdout.write(json.dumps(doc, indent=2 if chosen == "json" else None) + "\n")
    elif chosen in ("csv", "table") and (problems or chosen == "csv"):
        emit(problems, ["check", "message"], chosen, title="health: problems" if chosen == "table" else None)
    else:
        for p in problems:
            sys.stdout.write(f"{p.check}: {p.message}\n")
    if chosen == "table" and not problems:
        say("healthy")
    if report.skipped and sys.stderr.isatty():
        for p in report.skipped:
            say(f"check {p.check} skipped: {p.message}")
    raise typer.Exit(1 if problems else 0)
