"""The embedded PostgreSQL under TRACKCTL_HOME: started on demand, shared, stopped by `trackctl db stop`.

Each start costs a second or two, so this module stays small. Every server started here is
stopped by the fixture's finalizer, whatever the test did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Run, scratch_dir, trackctl_command
from trackctl.embedded import pgdata_dir, read_postmaster

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(tmp_path):
    """Run trackctl with no database URL and a fresh TRACKCTL_HOME (short, so the socket path fits)."""
    home = Path(tempfile.mkdtemp(prefix="tc-emb-", dir=scratch_dir()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env.pop("XDG_RUNTIME_DIR", None)  # as under cron: no warning about it may reach the user
    env["TRACKCTL_HOME"] = str(home)

    def run(*args: str, timeout: float = 120) -> Run:
        proc = subprocess.run(trackctl_command() + list(args), capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=timeout)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    run.home = home
    run.env = env
    run.cwd = tmp_path
    yield run
    run("db", "stop")
    if read_postmaster(pgdata_dir(home)) is None:  # never delete the files of a server still running
        shutil.rmtree(home, ignore_errors=True)


def server_starts(home: Path) -> int:
    """How many times the server in `home` was started, from its own log."""
    log = pgdata_dir(home) / "log"
    return log.read_text(errors="replace").count("LOG:  starting PostgreSQL") if log.exists() else 0


def test_first_command_starts_the_embedded_server_migrates_and_later_ones_reuse_it(embedded):
    r = embedded("pool", "list")
    assert r.returncode == 0, r
    assert r.stdout == "default\tuuid\t200\t0\t0\n"
    assert r.stderr == ""
    first = read_postmaster(pgdata_dir(embedded.home))
    assert first is not None and first.status == "ready"

    r = embedded("db", "status", "--format", "json")
    assert r.returncode == 0, r
    assert {s["state"] for s in json.loads(r.stdout)} == {"applied"}
    assert embedded("carrier", "add", "correios").returncode == 0
    assert embedded("refill").returncode == 0
    code = embedded("assign", "42", "correios")
    assert code.returncode == 0 and code.stderr == "", code
    assert embedded("assign", "42", "correios").stdout == code.stdout

    assert read_postmaster(pgdata_dir(embedded.home)).pid == first.pid
    assert server_starts(embedded.home) == 1


def test_two_processes_starting_at_once_on_a_fresh_home_both_succeed(embedded):
    bin_dir = str(Path(trackctl_command()[0]).parent)
    env = {**embedded.env, "PATH": f"{bin_dir}:{embedded.env.get('PATH', '/usr/bin:/bin')}"}
    script = "echo ready; read go; trackctl pool list"
    procs = [subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=embedded.cwd) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline() == "ready\n"
        for p in procs:  # both are released together, before either has touched the home directory
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert results == [(0, "default\tuuid\t200\t0\t0\n", "")] * 2, results
    assert server_starts(embedded.home) == 1  # one initdb and one start, not two
    log = (pgdata_dir(embedded.home) / "log").read_text(errors="replace")
    assert "FATAL" not in log and "already exists" not in log


def test_db_stop_stops_the_server_and_the_next_command_starts_it_again(embedded):
    assert embedded("pool", "create", "express", "--target", "5").returncode == 0
    first = read_postmaster(pgdata_dir(embedded.home))

    r = embedded("db", "stop")
    assert r.returncode == 0, r
    assert r.stderr == "trackctl: stopped the embedded server\n"
    assert read_postmaster(pgdata_dir(embedded.home)) is None
    r = embedded("db", "stop")
    assert r.returncode == 0, r
    assert r.stderr == "trackctl: the embedded server is not running\n"

    r = embedded("pool", "list")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["default\tuuid\t200\t0\t0", "express\tuuid\t5\t0\t0"]  # data kept
    second = read_postmaster(pgdata_dir(embedded.home))
    assert second is not None and second.pid != first.pid
    assert server_starts(embedded.home) == 2


def test_a_crashed_server_whose_pid_now_names_another_process_is_started_again(embedded):
    import signal
    import time

    assert embedded("pool", "create", "express", "--target", "5").returncode == 0
    pgdata = pgdata_dir(embedded.home)
    first = read_postmaster(pgdata)
    os.kill(first.pid, signal.SIGKILL)  # a crash: postmaster.pid and the socket's lock file stay behind
    deadline = time.monotonic() + 30
    while pid_exists(first.pid) and time.monotonic() < deadline:  # until it is reaped
        time.sleep(0.05)
    squatter = subprocess.Popen(["sleep", "300"])  # after a reboot the old pid may be anyone's
    try:
        for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
            lines = lock.read_text().splitlines()
            lock.write_text("\n".join([str(squatter.pid)] + lines[1:]) + "\n")
        assert read_postmaster(pgdata) is None  # a live pid that is not a postgres is no server

        r = embedded("db", "stop")
        assert r.returncode == 0 and r.stderr == "trackctl: the embedded server is not running\n", r
        r = embedded("pool", "list")
        assert r.returncode == 0, f"{r}\n--- server log\n" + (pgdata / "log").read_text(errors="replace")[-3000:]
        assert r.stdout.splitlines() == ["default\tuuid\t200\t0\t0", "express\tuuid\t5\t0\t0"]  # data kept
        assert read_postmaster(pgdata).pid not in (first.pid, squatter.pid)
    finally:
        squatter.kill()
        squatter.wait()


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
