"""The cron schedule: which jobs run how often within which time limit, and the crontab text for them.

`JOBS` is the one source: the repository's `crontab` file, `trackctl cron print|install` and the
health check of every job's last successful run all read it (tests/test_cron.py checks that the
file matches). Each job has a soft budget where the command has one (`--budget`, it stops taking
new work) and a hard limit (`timeout`, SIGTERM then SIGKILL) below its interval, so runs never
pile up. Several hosts may install the same schedule: refill takes a per-pool advisory lock,
poll and notify share their work by row claims, the prunes are plain idempotent DELETEs.

The installed block carries no environment lines (SHELL=..., VAR=...): cron applies those to
every later line of the user's crontab too. Each command sets its own variables instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .config import ENV_DATABASE_URL, ENV_FILE, ENV_HOME
from .errors import TrackctlError, UsageError, param

ENV_CRONTAB_CMD = "TRACKCTL_CRONTAB_CMD"  # e.g. a file-backed stand-in for `crontab` in tests
BEGIN = "# BEGIN trackctl (managed by 'trackctl cron install'; replaced on reinstall, removed by 'trackctl cron uninstall')"
END = "# END trackctl"
KILL_AFTER = "5s"  # SIGKILL this long after the SIGTERM of the hard limit


@dataclass(frozen=True)
class CronJob:
    name: str  # the job name its runs are recorded under
    schedule: str  # five cron fields
    interval: int  # seconds between two runs, for the health check
    limit: int  # hard time limit in seconds (timeout), below the interval
    args: tuple[str, ...]  # trackctl arguments
    purpose: str

    @property
    def command(self) -> str:
        return "trackctl " + " ".join(self.args)


# poll and notify: a 30 s budget leaves room for the last request's own timeout (10 s by default)
# and for storing its answer before the 50 s hard limit, itself below the 60 s interval.
JOBS: tuple[CronJob, ...] = (
    CronJob("refill", "*/5 * * * *", 300, 240, ("refill",),
            "keep every pool topped up to its target (a pool another host is filling is skipped)"),
    CronJob("poll", "* * * * *", 60, 50, ("poll", "--budget", "30s"),
            "refresh due shipments from their carriers; hosts share the due rows by claims"),
    CronJob("notify", "* * * * *", 60, 50, ("notify", "--budget", "30s"),
            "deliver outbox events to webhook subscribers; hosts share the rows by claims"),
    CronJob("sweep-stale", "7 * * * *", 3600, 900, ("sweep-stale",),
            "flag shipments with no news for too long and stop polling them"),
    CronJob("outbox-prune", "23 3 * * *", 86400, 1800, ("outbox", "prune", "--older-than", "30d"),
            "delete delivered outbox rows older than 30 days"),
    CronJob("runs-prune", "43 3 * * *", 86400, 600, ("runs", "prune", "--older-than", "90d"),
            "delete run records older than 90 days"),
)


def job(name: str) -> CronJob | None:
    return next((j for j in JOBS if j.name == name), None)


@dataclass(frozen=True)
class Installation:
    """How the commands run on this host."""
    trackctl: tuple[str, ...] = ("trackctl",)  # the absolute path once rendered for a host
    timeout: str | None = "timeout"  # path of coreutils timeout, None where there is none
    environment: tuple[tuple[str, str], ...] = field(default=(("TRACKCTL_LOG_FORMAT", "json"),))
    log_file: str | None = "$HOME/trackctl-cron.log"  # None: stderr goes to syslog through logger
    logger: str = "logger"


# --- which database the lines reach ----------------------------------------------------------
#
# cron runs a line with a bare environment (HOME, LOGNAME, PATH=/usr/bin:/bin, SHELL=/bin/sh) in
# the user's home directory, where a ~/.env may exist. Each line therefore names its database
# itself, in the variables it sets before the command (they win over the env file and ./.env,
# which never override a variable that is set):
#   - embedded: TRACKCTL_HOME=<absolute home> and an empty TRACKCTL_DATABASE_URL (empty means
#     "the embedded server", and keeps a URL in ~/.env from taking over);
#   - a URL without password: TRACKCTL_DATABASE_URL=<url>, unless it comes from the env file;
#   - a URL with a password: never in the line; TRACKCTL_ENV_FILE=<file> names the file that
#     holds it (--env-file, or ./.env when that is where the URL came from), else refused;
#   - the libpq variables of this shell that choose a server (PGHOST, PGPORT, PGSERVICE, ...),
#     PGPASSWORD excepted, so that a URL that leaves them out reaches the same server.
# --env-file FILE makes the lines read FILE first (TRACKCTL_ENV_FILE), as this shell would with
# TRACKCTL_ENV_FILE=FILE set: a URL or home given here wins over the file's, and a URL in the
# file is used when none is given here. A file that names another database than this shell uses
# is refused rather than guessed at.

# libpq's connection variables that pick the server, database, user or TLS files (never secrets)
LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSFILE", "PGSERVICE",
                   "PGSERVICEFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGTARGETSESSIONATTRS")


@dataclass(frozen=True)
class CronEnvironment:
    """The variables a crontab line sets so that it reaches the intended database, and warnings."""
    variables: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()
    target: str = ""  # the database, as a person reads it (never a password)


def _conninfo(url: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(url)
    except Exception:
        raise UsageError("the database URL is not a valid PostgreSQL connection string",
                         hint=f"check TRACKCTL_DATABASE_URL or {param('database_url')}") from None


def _same_database(url: str) -> dict:
    """The parts of a connection string that choose the database (all but the password)."""
    return {k: v for k, v in _conninfo(url).items() if k != "password"}


def _private(path: Path, what: str) -> list[str]:
    if path.stat().st_mode & 0o077:
        return [f"{path} {what}can be read by other users: chmod 600 {path}"]
    return []


def database_environment(*, database_url: str | None, home: Path, home_given: bool, env_file: Path | None,
                         environ: Mapping[str, str], dotenv: Path | None = None) -> CronEnvironment:
    """Return the variables that make a crontab line reach the database this shell uses.

    `database_url` and `home` are this run's settings (`home_given`: from --home or TRACKCTL_HOME,
    not the default); `env_file` is --env-file; `dotenv` the ./.env this run read, if any.
    Raises UsageError when no line could reach that database without a password in the crontab.
    """
    from dotenv import dotenv_values

    variables: list[tuple[str, str]] = []
    warnings: list[str] = []
    from_file: dict = {}
    if env_file is not None:
        env_file = env_file.expanduser().resolve()
        if not env_file.is_file():
            raise UsageError(f"{param('env_file')} {str(env_file)!r} is not a file",
                             hint="create it (mode 0600), e.g. with a line TRACKCTL_DATABASE_URL=postgresql://...")
        from_file = dotenv_values(env_file)
        warnings += _private(env_file, "")
        variables.append((ENV_FILE, str(env_file)))
    file_url = from_file.get(ENV_DATABASE_URL) or None
    if database_url and file_url and _same_database(database_url) != _same_database(file_url):
        raise UsageError(f"{env_file} names another database than this command uses",
                         hint=f"print for the file's database with 'TRACKCTL_ENV_FILE={env_file} trackctl cron print', "
                              f"or make its {ENV_DATABASE_URL} line match")
    url = database_url or file_url
    if url is None:
        if not home_given and from_file.get(ENV_HOME):
            home = Path(from_file[ENV_HOME])
        home = home.expanduser().resolve()
        variables += [(ENV_HOME, str(home)), (ENV_DATABASE_URL, "")]
        return CronEnvironment(tuple(variables), tuple(warnings), f"the embedded server in {home}")

    from .db import describe_target

    info = _conninfo(url)
    if file_url:
        pass  # the URL is the env file's (or names the same database): the line reads it from there
    elif not info.get("password"):
        variables.append((ENV_DATABASE_URL, url))
    elif env_file is None and dotenv is not None and dotenv.is_file() \
            and (dotenv_values(dotenv).get(ENV_DATABASE_URL) or None) \
            and _conninfo(dotenv_values(dotenv)[ENV_DATABASE_URL]) == info:
        dotenv = dotenv.resolve()
        warnings += _private(dotenv, "holds a password and ")
        variables.append((ENV_FILE, str(dotenv)))
    else:
        where = f"{env_file} has no {ENV_DATABASE_URL} line" if env_file else "no file holds it"
        raise UsageError(f"the database URL holds a password, which does not belong in a crontab, and {where}",
                         hint=f"put {ENV_DATABASE_URL}=... in a file only you can read and pass "
                              f"{param('env_file')} FILE, "
                              "or use a URL without password and ~/.pgpass")
    for name in LIBPQ_VARIABLES:
        if environ.get(name) and name not in from_file:
            variables.append((name, environ[name]))
    if environ.get("PGPASSWORD") and not info.get("password") and not (file_url and _conninfo(file_url).get("password")) \
            and "PGPASSWORD" not in from_file:
        warnings.append("PGPASSWORD is set in this shell, but cron will not have it: put the password in "
                        "~/.pgpass (or PGPASSWORD=... in the env file the lines read)")
    return CronEnvironment(tuple(variables), tuple(warnings), describe_target(url))


def trackctl_executable() -> tuple[str, ...]:
    """Return the absolute command that runs this trackctl (cron's PATH does not find a virtualenv's)."""
    beside = Path(sys.executable).with_name("trackctl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside),)
    found = shutil.which("trackctl")
    if found:
        return (str(Path(found).resolve()),)
    return (sys.executable, "-m", "trackctl")


def plan_installation(conf, *, home_given: bool, env_file: Path | None, log_file: Path | None, syslog: bool,
                      environ: Mapping[str, str], dotenv: Path | None = Path(".env")) -> tuple[Installation, tuple[str, ...]]:
    """Return how the jobs run on this host (absolute paths, variables, log destination) and the
    warnings to show about it.

    `conf` is this run's settings; `home_given`: the home came from --home or TRACKCTL_HOME;
    `env_file`, `log_file`, `syslog` the options of `cron print|install`. An env file this shell
    reads already (TRACKCTL_ENV_FILE) is the lines' env file too unless another is given.
    """
    if syslog and log_file is not None:
        raise UsageError(f"give {param('log_file')} or {param('syslog')}, not both")
    if env_file is None and environ.get(ENV_FILE):
        env_file = Path(environ[ENV_FILE])
    planned = database_environment(database_url=conf.database_url, home=conf.home, home_given=home_given,
                                   env_file=env_file, environ=environ, dotenv=dotenv)
    warnings = list(planned.warnings)
    timeout = shutil.which("timeout")
    if timeout is None:
        warnings.append("coreutils 'timeout' is not installed: the jobs' hard time limits are left out")
    log = None if syslog else str((log_file or conf.home / "cron.log").expanduser().resolve())
    inst = Installation(trackctl=trackctl_executable(), timeout=timeout,
                        environment=planned.variables + (("TRACKCTL_LOG_FORMAT", "json"),), log_file=log,
                        logger=shutil.which("logger") or "logger")
    return inst, tuple(warnings)


def _cron_escape(text: str) -> str:
    # In a crontab command an unescaped % ends the command and starts its standard input.
    return text.replace("%", r"\%")


def _quote(value: str) -> str:
    # $HOME stays expandable in the generic file; everything else is quoted for sh.
    if value.startswith("$HOME/") and shlex.quote(value[6:]) == value[6:]:
        return value
    return shlex.quote(value)


def command_line(j: CronJob, inst: Installation) -> str:
    """Return the crontab line of one job for one installation."""
    env = " ".join(f"{k}={_quote(v)}" for k, v in inst.environment)
    limit = f"{shlex.quote(inst.timeout)} -k {KILL_AFTER} {j.limit}s " if inst.timeout else ""
    run = limit + " ".join([shlex.quote(a) for a in inst.trackctl] + [shlex.quote(a) for a in j.args])
    if inst.log_file:
        # stdout carries data (pool tables and the like) which nobody reads under cron; stderr
        # carries the log lines.
        redirect = f">/dev/null 2>>{_quote(inst.log_file)}"
    else:
        redirect = f"2>&1 >/dev/null | {shlex.quote(inst.logger)} -t trackctl-{j.name}"
    parts = [j.schedule] + ([env] if env else []) + [run, redirect]
    return _cron_escape(" ".join(parts))


def render_block(inst: Installation, jobs: tuple[CronJob, ...] = JOBS) -> str:
    """Return the marked block `trackctl cron install` puts into a user's crontab."""
    lines = [BEGIN]
    for j in jobs:
        lines.append(f"# {j.name}, every {_every(j.interval)}, stopped after {j.limit} s: {j.purpose}")
        lines.append(command_line(j, inst))
    lines.append(END)
    return "\n".join(lines) + "\n"


def render_repository_file(jobs: tuple[CronJob, ...] = JOBS) -> str:
    """Return the text of the repository's `crontab` (the schedule in its generic form)."""
    inst = Installation(environment=())
    lines = [
        "# trackctl schedule (Vixie cron / cronie). Every job is safe to run on several hosts at once",
        "# against one database. `trackctl cron print` renders it for this host (absolute paths, the",
        "# installation's environment and log file) and `trackctl cron install` adds it to your crontab.",
        "# Generated from trackctl/cron.py; tests/test_cron.py keeps the two equal.",
        "SHELL=/bin/sh",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "TRACKCTL_LOG_FORMAT=json",
    ]
    for j in jobs:
        lines += ["", f"# {j.name}: {j.purpose}.", f"# Every {_every(j.interval)}; stopped after {j.limit} s.",
                  command_line(j, inst)]
    return "\n".join(lines) + "\n"


def _every(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"


# --- the user's crontab ----------------------------------------------------------------------


def strip_block(text: str) -> str:
    """Return a crontab without trackctl's block (every copy of it), other lines untouched."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not inside and stripped.startswith("# BEGIN trackctl"):
            inside = True
            continue
        if inside:
            if stripped == END:
                inside = False
            continue
        out.append(line)
    if inside:
        raise TrackctlError("the crontab has a '# BEGIN trackctl' line without its '# END trackctl'",
                            hint="fix it with 'crontab -e', then run the command again")
    return "".join(out)


def with_block(text: str, block: str) -> str:
    """Return a crontab with trackctl's block replaced (or appended), other lines untouched."""
    rest = strip_block(text)
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block


def crontab_command() -> list[str]:
    """Return the crontab program to use: $TRACKCTL_CRONTAB_CMD, else `crontab`."""
    raw = os.environ.get(ENV_CRONTAB_CMD) or "crontab"
    cmd = shlex.split(raw)
    if not cmd:
        raise UsageError(f"{ENV_CRONTAB_CMD} is empty")
    return cmd


def read_crontab() -> str:
    """Return the user's crontab ('' when there is none)."""
    cmd = crontab_command()
    try:
        proc = subprocess.run([*cmd, "-l"], capture_output=True, timeout=30)
    except FileNotFoundError as exc:
        raise TrackctlError(f"cannot run {cmd[0]!r}: not found",
                            hint="install cron (cronie), or use the systemd timers in docs/OPERATIONS.md") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        if "no crontab" in message.lower():
            return ""
        raise TrackctlError(f"'{' '.join(cmd)} -l' failed: {message.splitlines()[0] if message else proc.returncode}")
    return proc.stdout.decode()


def write_crontab(text: str) -> None:
    """Replace the user's crontab with `text`."""
    cmd = crontab_command()
    try:
        proc = subprocess.run([*cmd, "-"], input=text.encode(), capture_output=True, timeout=30)
    except FileNotFoundError as exc:
        raise TrackctlError(f"cannot run {cmd[0]!r}: not found") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise TrackctlError(f"'{' '.join(cmd)} -' refused the new crontab: "
                            f"{message.splitlines()[0] if message else proc.returncode}",
                            hint="your crontab was left as it was")


def install(block: str, log_file: str | None = None) -> bool:
    """Put the block into the user's crontab (and make the directory of its `log_file`); return
    False when it was already there, unchanged."""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = read_crontab()
    new = with_block(current, block)
    if new == current:
        return False
    write_crontab(new)
    return True


def uninstall() -> bool:
    """Remove the block from the user's crontab; return False when there was none."""
    current = read_crontab()
    new = strip_block(current)
    if new == current:
        return False
    write_crontab(new)
    return True
