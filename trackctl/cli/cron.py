"""trackctl cron: print, install and uninstall the schedule in the user's crontab."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from . import app, say, settings, warn

cron_app = typer.Typer(help="The cron schedule of trackctl's jobs, for this host.\n\nExample: trackctl cron print", no_args_is_help=True)
app.add_typer(cron_app, name="cron")

ENV_FILE_HELP = ("Dotenv file (mode 0600) holding TRACKCTL_DATABASE_URL; the jobs read it, "
                 "so the password never appears in the crontab.")
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


def _database_environment(conf, env_file: Optional[Path]) -> list[tuple[str, str]]:
    """Return the variables that point the jobs at this installation's database, secrets excluded."""
    if env_file is not None:
        path = env_file.expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"--env-file {str(env_file)!r} is not a file",
                             hint="create it with a line TRACKCTL_DATABASE_URL=postgresql://...")
        if path.stat().st_mode & 0o077:
            warn(f"{path} can be read by other users: chmod 600 {path}")
        return [("TRACKCTL_ENV_FILE", str(path))]
    if conf.embedded:
        return [("TRACKCTL_HOME", str(conf.home.resolve()))]
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(conf.database_url).get("password")
    except Exception:
        raise UsageError("the database URL is not a valid PostgreSQL connection string",
                         hint="check TRACKCTL_DATABASE_URL or --database-url") from None
    if not password:
        return [("TRACKCTL_DATABASE_URL", conf.database_url)]
    dotenv = Path(".env").resolve()
    if dotenv.is_file():
        from dotenv import dotenv_values

        if dotenv_values(dotenv).get("TRACKCTL_DATABASE_URL") == conf.database_url:
            if dotenv.stat().st_mode & 0o077:
                warn(f"{dotenv} holds a password and can be read by other users: chmod 600 {dotenv}")
            return [("TRACKCTL_ENV_FILE", str(dotenv))]
    raise UsageError("the database URL holds a password, which does not belong in a crontab",
                     hint="put TRACKCTL_DATABASE_URL=... in a file only you can read and pass --env-file FILE, "
                          "or use a URL without password and ~/.pgpass")


def installation(ctx: typer.Context, env_file: Optional[Path], log_file: Optional[Path], syslog: bool):
    from ..cron import Installation

    conf = settings(ctx)
    if syslog and log_file is not None:
        raise UsageError("give --log-file or --syslog, not both")
    env = _database_environment(conf, env_file) + [("TRACKCTL_LOG_FORMAT", "json")]
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

    A database password is never printed: with one in the URL, name a file that holds it
    (--env-file), or keep ./.env where it is (the jobs then read that file).

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
