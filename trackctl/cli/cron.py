"""trackctl cron: print, install and uninstall the schedule in the user's crontab."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, say, settings, warn

cron_app = typer.Typer(help="The cron schedule of trackctl's jobs, for this host.\n\nExample: trackctl cron print", no_args_is_help=True)
app.add_typer(cron_app, name="cron")

# The options `cron print` and `cron install` share (both plan the same lines).
EnvFile = Annotated[Optional[Path], typer.Option(
    "--env-file", help="Dotenv file (mode 0600) the jobs read first, e.g. with TRACKCTL_DATABASE_URL (so its password "
                       "never appears in the crontab) or carrier tokens; default $TRACKCTL_ENV_FILE.")]
LogFile = Annotated[Optional[Path], typer.Option(
    "--log-file", help="Where the jobs' log lines go (default: cron.log in the trackctl home directory).")]
Syslog = Annotated[bool, typer.Option(
    "--syslog", help="Send the jobs' log lines to syslog/journald through logger(1) instead of a file.")]


def installation(ctx: typer.Context, env_file: Optional[Path], log_file: Optional[Path], syslog: bool):
    """Plan the jobs' lines for this host (trackctl.cron.plan_installation) and show its warnings."""
    from ..config import ENV_HOME
    from ..cron import plan_installation

    home_given = bool(ctx.find_root().params.get("home") or os.environ.get(ENV_HOME))
    inst, warnings = plan_installation(settings(ctx), home_given=home_given, env_file=env_file, log_file=log_file,
                                       syslog=syslog, environ=os.environ)
    for message in warnings:
        warn(message)
    return inst


@cron_app.command("print")
def print_cmd(ctx: typer.Context, env_file: EnvFile = None, log_file: LogFile = None, syslog: Syslog = False) -> None:
    """Print the crontab block for this host: absolute paths, environment, log destination.

    Each line names the database it runs against (the embedded home, or the URL), so cron's bare
    environment reaches the same one as this shell. A database password is never printed: with
    one in the URL, name a file that holds it (--env-file), or keep ./.env where it is (the jobs
    then read that file).

    Example: trackctl cron print --env-file /etc/trackctl/env
    """
    from ..cron import render_block

    sys.stdout.write(render_block(installation(ctx, env_file, log_file, syslog)))


@cron_app.command("install")
def install_cmd(ctx: typer.Context, env_file: EnvFile = None, log_file: LogFile = None, syslog: Syslog = False) -> None:
    """Add the block to your crontab, or replace it; your other entries are left as they are.

    Running it again changes nothing ($TRACKCTL_CRONTAB_CMD names another crontab program).

    Example: trackctl cron install
    """
    from ..cron import install, render_block

    inst = installation(ctx, env_file, log_file, syslog)
    changed = install(render_block(inst), log_file=inst.log_file)
    where = f"logs in {inst.log_file}" if inst.log_file else "logs to syslog"
    say(("installed the trackctl block in your crontab" if changed else "the crontab already has this block")
        + f" ({where}; see it with 'crontab -l')")


@cron_app.command("uninstall")
def uninstall_cmd() -> None:
    """Remove the trackctl block from your crontab; other entries are left as they are.

    Example: trackctl cron uninstall
    """
    from ..cron import uninstall

    say("removed the trackctl block from your crontab" if uninstall() else "your crontab has no trackctl block")
