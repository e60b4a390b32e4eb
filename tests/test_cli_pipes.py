"""Closed pipes (issue 11.5): when the reader of stdout goes away (`| head -1`, `| true`), every
command ends with exit 0 and nothing on stderr, so scripts under `set -o pipefail` keep working."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from conftest import trackctl_command
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import refill, set_target

CARRIERS = 1500  # `carrier list` then prints well over the 64 KiB a pipe holds
FREE_CODES = 4000  # and so does `pool available`


@pytest.fixture
def crowded(cli, conn, tmp_path):
    for i in range(CARRIERS):
        add_carrier(conn, f"carrier-{i:05d}")
    set_target(conn, "default", FREE_CODES)
    refill(conn)
    code = assign(conn, "piped-order", "carrier-00001").code
    (tmp_path / "orders.csv").write_text("".join(f"o{i},carrier-00002\n" for i in range(FREE_CODES // 2)))
    return cli, code, tmp_path


def piped(cli, args: list[str], reader: str, *, stdin: str | None = None, cwd=None) -> tuple[int, str, str]:
    """Run `trackctl ARGS 2>err | READER` under bash -o pipefail; return (status, reader's output, trackctl's stderr)."""
    command = " ".join(shlex.quote(a) for a in trackctl_command() + args)
    if stdin:
        command += f" < {shlex.quote(stdin)}"
    script = f"{command} 2>trackctl.err | {reader}"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True,
                          env=cli.env, cwd=cwd, timeout=120)
    err = (cwd / "trackctl.err").read_text()
    return proc.returncode, proc.stdout, err


# The outputs far larger than the 64 KiB a pipe holds: trackctl cannot have written them all
# when head exits, so every run of them meets the closed pipe. A small output races head's exit
# (a write, the flush at exit, or no error at all): those runs are repeated to meet more outcomes.
LARGE = 3


def commands(code: str) -> list[tuple[list[str], str | None]]:
    """The commands, the LARGE outputs first, each with the file it reads on stdin."""
    return [
        (["carrier", "list"], None),
        (["carrier", "list", "--format", "json"], None),
        (["pool", "available", "--pool", "default", "--limit", str(FREE_CODES)], None),
        (["assign", "--batch"], "orders.csv"),
        (["db", "status"], None),
        (["status", code], None),
        (["webhook", "deliveries"], None),
        (["runs"], None),
        (["--help"], None),
    ]


@pytest.mark.slow
def test_every_command_exits_0_silently_when_head_stops_reading(crowded):
    cli, code, work = crowded
    for n, (args, stdin) in enumerate(commands(code)):
        for _ in range(1 if n < LARGE else 3):
            status, out, err = piped(cli, args, "head -1", stdin=stdin, cwd=work)
            assert (status, err) == (0, ""), (args, status, err)
            assert len(out.splitlines()) <= 1


@pytest.mark.slow
def test_every_command_exits_0_silently_when_the_reader_is_gone_before_it_writes(crowded):
    """`| true` has exited before trackctl has even connected: the first write, or the flush at
    exit for a short output, meets a closed pipe."""
    cli, code, work = crowded
    for args, stdin in commands(code):
        status, _, err = piped(cli, args, "true", stdin=stdin, cwd=work)
        assert (status, err) == (0, ""), (args, status, err)


def test_the_lean_single_assign_exits_0_silently_into_a_closed_pipe(cli, conn, tmp_path):
    add_carrier(conn, "correios", 3)
    refill(conn)
    status, _, err = piped(cli, ["assign", "42", "correios"], "true", cwd=tmp_path)
    assert (status, err) == (0, "")
    assert conn.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id = '42'").fetchone()[0] == 1


def test_an_error_keeps_its_exit_code_when_stdout_is_closed_too(cli, conn, tmp_path):
    status, _, err = piped(cli, ["assign", "42", "nope"], "true", cwd=tmp_path)
    assert status == 1 and err.startswith("trackctl: error: unknown carrier"), (status, err)


@pytest.mark.parametrize("command", [["assign", "--batch"], ["track", "--batch"]])
def test_a_batch_with_stdin_closed_is_a_usage_error(cli, conn, command):
    # `trackctl assign --batch <&-` (no file descriptor 0 at all): one line and exit 2, not an
    # "unexpected AttributeError".
    line = " ".join(shlex.quote(a) for a in trackctl_command() + command) + " <&-"
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=cli.env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("trackctl: error: --batch reads lines from stdin, which is closed "
                           "(pipe the lines in, or use --input FILE)\n")
    assert proc.stdout == ""
