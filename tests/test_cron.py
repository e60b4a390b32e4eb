"""The schedule: the repository's crontab, `trackctl cron print|install|uninstall`, checked with croniter."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from croniter import croniter

from trackctl import cron
from trackctl.names import parse_duration
from trackctl.runs import list_runs

REPO_CRONTAB = Path(__file__).resolve().parent.parent / "crontab"
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
FAKE_CRONTAB = """#!/bin/sh
# A file-backed stand-in for crontab(1): -l prints the file, - replaces it from stdin.
store="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$store" ]; then cat "$store"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$store.new" && mv "$store.new" "$store" ;;
  *) echo "fake crontab: unsupported $*" >&2; exit 2 ;;
esac
"""


def entries(text: str) -> list[str]:
    """Return the job lines of a crontab; fail on anything that is neither job, comment, blank nor env."""
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ENV_LINE.match(line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a cron entry: {line!r}"
        schedule = " ".join(fields[:5])
        assert croniter.is_valid(schedule), f"invalid schedule in {line!r}"
        croniter(schedule).get_next()
        assert "%" not in line.replace(r"\%", ""), f"unescaped % in {line!r}"
        jobs.append(line)
    return jobs


def test_the_repository_crontab_is_the_schedule_rendered_from_the_jobs_table():
    assert REPO_CRONTAB.read_text() == cron.render_repository_file(), \
        "crontab drifted from trackctl/cron.py: regenerate it with cron.render_repository_file()"


def test_every_line_of_the_repository_crontab_is_valid_for_cron():
    lines = entries(REPO_CRONTAB.read_text())
    assert len(lines) == len(cron.JOBS)
    for j, line in zip(cron.JOBS, lines):
        assert line.startswith(j.schedule + " ") and " ".join(j.args) in line


def test_the_schedule_has_the_five_operations_each_stopped_before_its_next_run():
    commands = [" ".join(j.args) for j in cron.JOBS]
    for wanted in ("refill", "poll --budget", "notify --budget", "outbox prune --older-than 30d"):
        assert any(c.startswith(wanted) for c in commands), wanted
    assert any(j.name == "sweep-stale" for j in cron.JOBS)
    for j in cron.JOBS:
        # The interval the health check assumes is the one cron really keeps.
        it = croniter(j.schedule, 0)
        first, second = it.get_next(), it.get_next()
        assert second - first == j.interval, j.name
        assert j.limit + parse_duration(cron.KILL_AFTER) < j.interval, j.name
        if "--budget" in j.args:
            assert parse_duration(j.args[j.args.index("--budget") + 1]) < j.limit, j.name


def test_the_installation_is_planned_by_the_library_without_the_cli(tmp_path):
    """trackctl.cron plans the lines (executable, variables, log file) and returns its warnings
    rather than printing them; cli/cron.py only shows them."""
    from trackctl.config import Settings
    from trackctl.errors import UsageError

    home = tmp_path / "home"
    conf = Settings(database_url=None, home=home)
    inst, warnings = cron.plan_installation(conf, home_given=True, env_file=None, log_file=None, syslog=False,
                                            environ={}, dotenv=None)
    assert Path(inst.trackctl[0]).is_absolute() and os.access(inst.trackctl[0], os.X_OK), inst.trackctl
    assert ("TRACKCTL_HOME", str(home.resolve())) in inst.environment
    assert ("TRACKCTL_LOG_FORMAT", "json") in inst.environment
    assert inst.log_file == str((home / "cron.log").resolve())
    assert all(isinstance(w, str) for w in warnings)
    env_file = tmp_path / "env"
    env_file.write_text("X=1\n")
    env_file.chmod(0o644)  # readable by others: a warning, returned
    inst, warnings = cron.plan_installation(conf, home_given=True, env_file=None, log_file=tmp_path / "c.log",
                                            syslog=False, environ={"TRACKCTL_ENV_FILE": str(env_file)}, dotenv=None)
    assert ("TRACKCTL_ENV_FILE", str(env_file.resolve())) in inst.environment
    assert inst.log_file == str((tmp_path / "c.log").resolve())
    assert any("chmod 600" in w for w in warnings), warnings
    with pytest.raises(UsageError) as both:
        cron.plan_installation(conf, home_given=True, env_file=None, log_file=tmp_path / "c.log", syslog=True,
                               environ={}, dotenv=None)
    assert str(both.value) == "give log_file or syslog, not both" and both.value.fields == ("log_file", "syslog")


def test_cron_print_names_the_flags_of_conflicting_log_destinations(cli, tmp_path):
    r = cli("cron", "print", "--log-file", str(tmp_path / "c.log"), "--syslog")
    assert r.returncode == 2 and "give --log-file or --syslog, not both" in r.stderr and r.stdout == "", r


def test_cron_print_renders_valid_lines_with_absolute_paths_and_the_database(cli, db_url):
    r = cli("cron", "print")
    assert r.returncode == 0, r
    lines = entries(r.stdout)
    assert len(lines) == len(cron.JOBS)
    for line in lines:
        words = shlex.split(line.split(None, 5)[5].replace(r"\%", "%"))
        executable = next(w for w in words if w.endswith("trackctl") or w == "-m")
        assert os.path.isabs(executable) or executable == "-m", line
        assert "TRACKCTL_DATABASE_URL=" + db_url in shlex.join(words) or f"TRACKCTL_DATABASE_URL={db_url}" in words
        assert "TRACKCTL_LOG_FORMAT=json" in words
        assert "2>>" in line
    assert r.stdout.startswith(cron.BEGIN) and r.stdout.rstrip().endswith(cron.END)


def test_cron_print_on_the_embedded_database_sets_trackctl_home(cli, tmp_path):
    env = {k: v for k, v in cli.env.items() if k != "TRACKCTL_DATABASE_URL"}
    proc = subprocess.run(_trackctl("cron", "print"), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"TRACKCTL_HOME={tmp_path / 'home'}" in proc.stdout
    # an empty URL is the embedded server's: a ~/.env with a URL cannot take the line elsewhere
    assert proc.stdout.count("TRACKCTL_DATABASE_URL=''") == len(cron.JOBS)
    assert "TRACKCTL_DATABASE_URL=postgresql" not in proc.stdout
    entries(proc.stdout)


def test_cron_print_never_prints_a_password(cli, db_url, tmp_path):
    url = db_url + " password=s3cr3t-pw"
    r = cli("cron", "print", env_extra={"TRACKCTL_DATABASE_URL": url})
    assert r.returncode == 2, r
    assert "s3cr3t-pw" not in r.stdout + r.stderr and "--env-file" in r.stderr
    env_file = tmp_path / "trackctl.env"
    env_file.write_text(f"TRACKCTL_DATABASE_URL='{url}'\n")
    env_file.chmod(0o600)
    r = cli("cron", "print", "--env-file", str(env_file), env_extra={"TRACKCTL_DATABASE_URL": url})
    assert r.returncode == 0, r
    assert "s3cr3t-pw" not in r.stdout + r.stderr
    assert f"TRACKCTL_ENV_FILE={env_file}" in r.stdout
    entries(r.stdout)


def test_cron_print_points_at_a_dotenv_file_that_holds_the_password(cli, db_url, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"TRACKCTL_DATABASE_URL='{db_url} password=s3cr3t-pw'\n")
    dotenv.chmod(0o600)
    env = {k: v for k, v in cli.env.items() if k != "TRACKCTL_DATABASE_URL"}
    proc = subprocess.run(_trackctl("cron", "print"), env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr
    assert f"TRACKCTL_ENV_FILE={dotenv}" in proc.stdout and "TRACKCTL_DATABASE_URL" not in proc.stdout
    assert proc.stderr == ""  # mode 0600: no warning


def test_cron_print_with_syslog_pipes_the_logs_to_logger(cli):
    r = cli("cron", "print", "--syslog")
    assert r.returncode == 0, r
    for line in entries(r.stdout):
        assert "2>&1 >/dev/null | " in line and "logger -t trackctl-" in line


def test_a_rendered_cron_command_runs_and_records_its_run(cli, conn, tmp_path):
    r = cli("cron", "print", "--log-file", str(tmp_path / "logs" / "cron.log"))
    refill_line = next(line for line in entries(r.stdout) if line.split(None, 5)[5].rstrip().endswith("refill")
                       or " refill >" in line)
    (tmp_path / "logs").mkdir()
    command = refill_line.split(None, 5)[5]
    proc = subprocess.run(["/bin/sh", "-c", command], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""  # data thrown away, logs in the file
    [run] = list_runs(conn)
    assert (run.job, run.outcome) == ("refill", "ok")
    log = (tmp_path / "logs" / "cron.log").read_text()
    assert run.id in log and '"level":"info"' in log


# --- every printed line reaches the database it was printed for (issue 11.2) ------------------
#
# Each line is run as cron runs it: `env -i` with only HOME, PATH=/usr/bin:/bin and SHELL=/bin/sh,
# /bin/sh -c, in HOME, where a decoy ~/.env names a database that does not exist. It reached the
# right database when a `refill` run is recorded there.

DECOY = "TRACKCTL_DATABASE_URL=postgresql://decoy@127.0.0.1:1/nowhere?connect_timeout=2\n"


def run_as_cron(line: str, home: Path) -> subprocess.CompletedProcess:
    command = line.split(None, 5)[5].replace(r"\%", "%")
    return subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "SHELL=/bin/sh", "/bin/sh", "-c", command],
                          capture_output=True, text=True, cwd=home, timeout=300)


def refill_line(crontab: str) -> str:
    return next(line for line in entries(crontab) if " refill >" in line or line.rstrip().endswith(" refill"))


def runs_of(env: dict, cwd: Path) -> list[dict]:
    import json

    proc = subprocess.run(_trackctl("runs", "--job", "refill", "--format", "json"), env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def cron_home(tmp_path):
    home = tmp_path / "cronhome"
    home.mkdir()
    (home / ".env").write_text(DECOY)
    yield home
    default = home / ".local" / "share" / "trackctl"  # where a line without its home would have gone
    if default.exists():
        subprocess.run(_trackctl("--home", str(default), "db", "stop"), capture_output=True, timeout=120,
                       env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


def test_printed_lines_reach_the_url_database_with_and_without_env_file(cli, conn, db_url, tmp_path, cron_home):
    secret = "s3cr3t-pw-11-2"
    env_file = tmp_path / "trackctl.env"
    env_file.write_text(f"TRACKCTL_DATABASE_URL='{db_url} password={secret}'\nCORREIOS_TOKEN=tok\n")
    env_file.chmod(0o600)
    base = {k: v for k, v in cli.env.items() if k != "TRACKCTL_DATABASE_URL"}
    cases = [
        ("url in the environment", {**base, "TRACKCTL_DATABASE_URL": db_url}, []),
        ("url by --database-url", base, ["--database-url", db_url]),
        ("url in the environment, tokens in --env-file", {**base, "TRACKCTL_DATABASE_URL": db_url},
         ["--env-file", str(env_file)]),  # the file's URL is the same database, with a password
        ("url with password in the environment and in --env-file",
         {**base, "TRACKCTL_DATABASE_URL": f"{db_url} password={secret}"}, ["--env-file", str(env_file)]),
        ("url only in --env-file", base, ["--env-file", str(env_file)]),
        ("url only in TRACKCTL_ENV_FILE", {**base, "TRACKCTL_ENV_FILE": str(env_file)}, []),
    ]
    for n, (name, env, args) in enumerate(cases, start=1):
        root = [a for a in args if a.startswith("--database-url") or a == db_url]
        rest = [a for a in args if a not in root]
        printed = subprocess.run(_trackctl(*root, "cron", "print", "--log-file", str(tmp_path / "cron.log"), *rest),
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert printed.returncode == 0, (name, printed.stderr)
        assert secret not in printed.stdout + printed.stderr, name
        ran = run_as_cron(refill_line(printed.stdout), cron_home)
        assert ran.returncode == 0, (name, refill_line(printed.stdout), ran.stderr,
                                     (tmp_path / "cron.log").read_text()[-2000:])
        recorded = [r for r in list_runs(conn) if r.job == "refill"]
        assert len(recorded) == n and recorded[0].outcome == "ok", (name, recorded)
    assert not (cron_home / ".local").exists()  # no line fell back to an embedded server of its own


def test_a_password_never_goes_into_the_crontab_and_a_conflicting_env_file_is_refused(cli, db_url, tmp_path):
    secret = "s3cr3t-pw-11-2"
    tokens = tmp_path / "tokens.env"
    tokens.write_text("CORREIOS_TOKEN=tok\n")
    r = cli("cron", "print", "--env-file", str(tokens), env_extra={"TRACKCTL_DATABASE_URL": f"{db_url} password={secret}"})
    assert r.returncode == 2 and secret not in r.stdout + r.stderr and "has no TRACKCTL_DATABASE_URL line" in r.stderr, r
    other = tmp_path / "other.env"
    other.write_text("TRACKCTL_DATABASE_URL=postgresql://someone@db.example/other\n")
    r = cli("cron", "print", "--env-file", str(other))
    assert r.returncode == 2 and r.stdout == "" and "names another database than this command uses" in r.stderr, r
    assert len(r.stderr.splitlines()) == 1 or "warning" in r.stderr.splitlines()[0], r


def test_libpq_variables_that_choose_the_server_go_with_the_line_and_pgpassword_does_not(cli, db_url):
    r = cli("cron", "print", env_extra={"PGSSLMODE": "disable", "PGPASSWORD": "s3cr3t-pw-x", "PGAPPNAME": "mine"})
    assert r.returncode == 0, r
    for line in entries(r.stdout):
        assert "PGSSLMODE=disable" in line and "PGPASSWORD" not in line and "PGAPPNAME" not in line
    assert "s3cr3t-pw-x" not in r.stdout + r.stderr
    assert "PGPASSWORD is set in this shell, but cron will not have it" in r.stderr


@pytest.mark.slow
def test_printed_lines_reach_the_embedded_database_with_and_without_env_file(cli, tmp_path, cron_home, fresh_home):
    home = fresh_home  # short: the server's socket lives in it
    home.mkdir(mode=0o700)  # the printed lines append to a log in it
    env = {k: v for k, v in cli.env.items() if not k.startswith("TRACKCTL_")}
    env.pop("XDG_RUNTIME_DIR", None)
    tokens = tmp_path / "tokens.env"  # carrier tokens only: the case that lost TRACKCTL_HOME
    tokens.write_text("CORREIOS_TOKEN=tok\n")
    tokens.chmod(0o600)
    try:
        cases = [
            ("TRACKCTL_HOME", {**env, "TRACKCTL_HOME": str(home)}, [], []),
            ("TRACKCTL_HOME and --env-file", {**env, "TRACKCTL_HOME": str(home)}, [], ["--env-file", str(tokens)]),
            ("--home and --env-file", env, ["--home", str(home)], ["--env-file", str(tokens)]),
            ("TRACKCTL_HOME and TRACKCTL_ENV_FILE", {**env, "TRACKCTL_HOME": str(home), "TRACKCTL_ENV_FILE": str(tokens)},
             [], []),
        ]
        with_home = {**env, "TRACKCTL_HOME": str(home)}
        for n, (name, run_env, root, args) in enumerate(cases, start=1):
            printed = subprocess.run(_trackctl(*root, "cron", "print", *args), env=run_env, cwd=tmp_path,
                                     capture_output=True, text=True, timeout=300)
            assert printed.returncode == 0, (name, printed.stderr)
            ran = run_as_cron(refill_line(printed.stdout), cron_home)
            assert ran.returncode == 0, (name, ran.stderr, (home / "cron.log").read_text()[-2000:])
            recorded = runs_of(with_home, tmp_path)
            assert len(recorded) == n and recorded[0]["outcome"] == "ok", (name, recorded)
        assert not (cron_home / ".local").exists()  # never a new, empty embedded database
    finally:
        subprocess.run(_trackctl("db", "stop"), env={**env, "TRACKCTL_HOME": str(home)}, capture_output=True,
                       timeout=120)


# --- install / uninstall ---------------------------------------------------------------------


@pytest.fixture
def fake_crontab(tmp_path):
    script = tmp_path / "fake-crontab"
    script.write_text(FAKE_CRONTAB)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    store = tmp_path / "crontab.txt"
    return store, {"TRACKCTL_CRONTAB_CMD": str(script), "FAKE_CRONTAB_FILE": str(store)}


MINE = "MAILTO=ops@example.com\n# my backup\n0 2 * * * /usr/local/bin/backup --all\n"


def test_cron_install_twice_leaves_one_block_and_other_entries_untouched(cli, fake_crontab):
    store, env = fake_crontab
    store.write_text(MINE)
    first = cli("cron", "install", env_extra=env)
    assert first.returncode == 0, first
    after_first = store.read_text()
    second = cli("cron", "install", env_extra=env)
    assert second.returncode == 0, second
    assert "already" in second.stderr
    text = store.read_text()
    assert text == after_first
    assert text.count(cron.BEGIN) == 1 and text.count(cron.END) == 1
    assert text.startswith(MINE)
    assert len(entries(text)) == len(cron.JOBS) + 1


def test_cron_install_replaces_an_old_block_in_place_of_adding_one(cli, fake_crontab, tmp_path):
    store, env = fake_crontab
    store.write_text(MINE + cron.BEGIN + "\n*/5 * * * * old-trackctl refill\n" + cron.END + "\n")
    assert cli("cron", "install", "--log-file", str(tmp_path / "x.log"), env_extra=env).returncode == 0
    text = store.read_text()
    assert "old-trackctl" not in text and text.count(cron.BEGIN) == 1 and text.startswith(MINE)


def test_cron_install_on_an_empty_crontab_then_uninstall_removes_only_the_block(cli, fake_crontab):
    store, env = fake_crontab
    assert cli("cron", "install", env_extra=env).returncode == 0
    assert store.read_text().startswith(cron.BEGIN)
    with store.open("a") as f:
        f.write("30 1 * * * /usr/bin/true\n")
    r = cli("cron", "uninstall", env_extra=env)
    assert r.returncode == 0, r
    assert store.read_text() == "30 1 * * * /usr/bin/true\n"
    again = cli("cron", "uninstall", env_extra=env)
    assert again.returncode == 0 and "no trackctl block" in again.stderr


def test_cron_install_refuses_a_broken_block_and_leaves_the_crontab_alone(cli, fake_crontab):
    store, env = fake_crontab
    broken = MINE + cron.BEGIN + "\n* * * * * something\n"
    store.write_text(broken)
    r = cli("cron", "install", env_extra=env)
    assert r.returncode == 1 and "# END trackctl" in r.stderr, r
    assert store.read_text() == broken


def test_cron_install_reports_a_missing_crontab_program(cli):
    r = cli("cron", "install", env_extra={"TRACKCTL_CRONTAB_CMD": "/nonexistent/crontab"})
    assert r.returncode == 1 and "not found" in r.stderr and "Traceback" not in r.stderr, r


def _trackctl(*args: str) -> list[str]:
    from conftest import trackctl_command

    return trackctl_command() + list(args)
