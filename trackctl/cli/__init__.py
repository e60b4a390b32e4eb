"""The trackctl command line, one module per job: `app` (the typer app, its root options and the
command registration), `boundary` (running the app: every failure becomes one line and an exit
code), `output` (tables, plain, json, jsonl, csv), `logsetup` (text or JSON stderr lines), `jobs`
(what cron-able commands share), and one module per command group.

Importing this package costs nothing: typer is imported by `app`, so `trackctl.cli.output` and
`trackctl.cli.logsetup` serve the lean `trackctl assign` path (trackctl/entry.py) as well.
"""

from __future__ import annotations


def main() -> None:
    """Run the typer app (the console script, trackctl.entry, calls it for all but the plain assign)."""
    from .boundary import main as run

    run()
