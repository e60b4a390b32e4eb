"""trackctl cron: print, install and uninstall the schedule in the user's crontab."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .app import app, say, settings, warn

cron_app = typer.Typer(help="The cron schedule of trackctl's jobs, for this host.\n\nExample: trackctl cron print", no_args_is_help=True)
app.add_typer(cron_app, name="cron")

ENV_FILE_HELP = ("Dotenv file (mode 0600) the jobs read first, e.g. with TRACKCTL_DATABASE_URL (so its password "
                 "never appears in the crontab) or carrier tokens; default $TRACKCTL_ENV_FILE.")
LOG_FILE_HELP = "Where the jobs' log lines go (default: cron.log in the trackctl home directory)."
SYSLOG_HELP = "Send the jobs' log lines to syslog/journald through logger(1) instead of a file."


def trackctl_executable() -> tuple[str, ...]:
    """Return the absolute command that runs this trackctl."""
    beside = Path(sys.executable).with_name("trackctl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside),)
    found = shutil.which("trackctl")
    if found:
        return (str(Path(found).resolve()),)
    return (sys.executable, "-m", "trackctl")


def installation(ctx: typer.Context, env_file: Optional[Path], log_file: Optional[Path], syslog: bool):
    from ..config import ENV_FILE, ENV_HOME
    from ..cron import Installation, database_environment

    conf = settings(ctx)
    if syslog and log_file is not None:
        raise UsageError("give --log-file or --syslog, not both")
    if env_file is None and os.environ.get(ENV_FILE):  # this shell reads one already: so do the lines
        env_file = Path(os.environ[ENV_FILE])
    home_given = bool(ctx.find_root().params.get("home") or os.environ.get(ENV_HOME))
    planned = database_environment(database_url=conf.database_url, home=conf.home, home_given=home_given,
                                   env_file=env_file, environ=os.environ, dotenv=Path(".env"))
    for message in planned.warnings:
        warn(message)
    env = list(planned.variables) + [("TRACKCTL_LOG_FORMAT", "json")]
    timeout = shutil.which("timeout")
    if timeout is None:
        warn("coreutils 'timeout' is not installed: the jobs' hard time limits are left out")
    log = None if syslog else str((log_file or conf.home / "cron.log").expanduser().resolve())
    return Installation(trackctl=trackctl_executable(), timeout=timeout, environment=tuple(env), log_file=log,
                        logger=shutil.which("logger") or "logger")


@cron_app.command("print")
def print_cmd(
    ctx: typer.Context,
    env_file: Optional[Path] = typer.Option(None, "--env-file", help=ENV_FILE_HELP),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help=LOG_FILE_HELP),
    syslog: bool = typer.Option(False, "--syslog", help=SYSLOG_HELP),
) -> None:
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
def install_cmd(
    ctx: typer.Context,
    env_file: Optional[Path] = typer.Option(None, "--env-file", help=ENV_FILE_HELP),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help=LOG_FILE_HELP),
    syslog: bool = typer.Option(False, "--syslog", help=SYSLOG_HELP),
) -> None:
    """Add the block to your crontab, or replace it; your other entries are left as they are.

    Running it again changes nothing ($TRACKCTL_CRONTAB_CMD names another crontab program).

    Example: trackctl cron install
    """
    from ..cron import install, render_block

    inst = installation(ctx, env_file, log_file, syslog)
    if inst.log_file:
        Path(inst.log_file).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = install(render_block(inst))
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
