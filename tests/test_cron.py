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
    assert "TRACKCTL_DATABASE_URL" not in proc.stdout
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
