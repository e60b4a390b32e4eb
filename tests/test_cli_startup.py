"""Start-up cost: the plain `assign ORDER CARRIER` runs without typer (trackctl.entry), and any other
run builds only the command it names, with the same options and help as the whole app."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
import typer.main

from trackctl.cli.app import app, app_for
from trackctl.entry import AssignCall, RefillCall, plain_assign, plain_refill


def names(typer_app) -> set[str]:
    return {c.name for c in typer_app.registered_commands} | {g.name for g in typer_app.registered_groups}


@pytest.mark.parametrize("argv, expected", [
    (["assign", "42", "correios"], {"assign"}),
    (["--database-url", "postgresql:///x", "--home", "/tmp/h", "--debug", "assign", "42", "correios"], {"assign"}),
    (["--log-format", "json", "assign", "--batch"], {"assign"}),
    (["--database-url=postgresql:///x", "pool", "list"], {"pool"}),
    (["--home", "assign", "refill"], {"refill"}),  # the value of --home is not the command
])
def test_the_named_command_is_built_alone(argv, expected):
    assert names(app_for(argv)) == expected


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h", "assign"], ["--version"], ["no-such-command"], ["--database-url", "x"], ["--", "assign"],
])
def test_help_version_and_unknown_commands_get_the_whole_app(argv):
    assert app_for(argv) is app


def test_the_single_command_app_has_the_same_root_and_command_options_as_the_whole_app():
    def options(typer_app, command: str) -> tuple[list, list]:
        group = typer.main.get_command(typer_app)
        return ([p.opts for p in group.params], [(p.name, p.opts, p.required) for p in group.commands[command].params])

    assert options(app_for(["assign"]), "assign") == options(app, "assign")


def _every_command(group, path=("trackctl",)):
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if hasattr(command, "commands"):
            yield from _every_command(command, path + (name,))


def test_every_command_and_group_help_shows_an_example():
    import typer.main

    root = typer.main.get_command(app)
    helps = [(("trackctl",), root)] + list(_every_command(root))
    assert len(helps) > 30
    missing = []
    for path, command in helps:
        with command.make_context(" ".join(path), [], resilient_parsing=True) as ctx:
            text = command.get_help(ctx)
        if "Example" not in text and not re.search(r"^ +(\S+=\$\()?trackctl ", text, re.M):
            missing.append(" ".join(path))
    assert missing == [], f"--help without an example: {missing}"


def test_rich_is_never_imported_when_output_goes_to_a_pipe(cli, stocked):
    """The commands scripts call most write plain text in a pipe: rich's import cost stays out."""
    import subprocess
    import sys

    from conftest import trackctl_command

    command = trackctl_command()
    if len(command) == 1:  # the console script: run it under this interpreter with -X importtime
        command = [sys.executable, "-X", "importtime", command[0]]
    else:
        command = [sys.executable, "-X", "importtime", *command[1:]]
    runs = [(["assign", "42", "correios"], None), (["assign", "--batch"], "43,correios\n"),
            (["pool", "list"], None), (["status", "--order", "42"], None), (["health"], None),
            (["carrier", "list"], None), (["pool", "set", "nope", "--target", "1"], None)]
    for args, stdin in runs:
        proc = subprocess.run(command + args, input=stdin, capture_output=True, text=True, env=cli.env, timeout=60)
        modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "trackctl.console" in modules, proc.stderr[-2000:]  # the measurement itself works
        assert not {m for m in modules if m == "rich" or m.startswith("rich.")}, args


# -- the lean single assign (issue 14.2) -------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["assign", "42", "correios"], AssignCall("42", "correios")),
    (["assign", "42", "3", "--parcel", "2"], AssignCall("42", "3", parcel=2)),
    (["assign", "--parcel=999", "42", "correios"], AssignCall("42", "correios", parcel=999)),
    (["assign", "42", "correios", "--next-parcel", "--format", "jsonl"],
     AssignCall("42", "correios", next_parcel=True, fmt="jsonl")),
    (["--database-url", "postgresql:///x", "--home=/tmp/h", "--debug", "--log-format", "JSON", "assign", "a b", "c",
      "--format=csv"],
     AssignCall("a b", "c", fmt="csv", database_url="postgresql:///x", home="/tmp/h", debug=True, log_format="json")),
    (["--home", "assign", "assign", "42", "correios"], AssignCall("42", "correios", home="assign")),
    (["assign", "--batch"], AssignCall(None, None, batch=True)),
    (["--debug", "assign", "--format", "jsonl", "--batch"], AssignCall(None, None, batch=True, fmt="jsonl", debug=True)),
])
def test_the_plain_single_assign_is_read_by_the_lean_path(argv, expected):
    assert plain_assign(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["assign"], ["assign", "42"], ["assign", "42", "correios", "extra"], ["assign", "--batch", "42"],
    ["assign", "--batch", "--batch"], ["assign", "--batch", "--input", "f"], ["assign", "--batch", "--parcel", "2"],
    ["assign", "--batch", "--input-format", "csv"], ["assign", "--batch", "--next-parcel"],
    ["assign", "42", "correios", "--help"], ["-h", "assign", "42", "correios"], ["--version", "assign", "1", "c"],
    ["assign", "42", "correios", "--parcel", "0"], ["assign", "42", "correios", "--parcel", "abc"],
    ["assign", "42", "correios", "--parcel", "1000"], ["assign", "42", "correios", "--parcel"],
    ["assign", "42", "correios", "--parcel", "1", "--parcel", "2"], ["assign", "42", "correios", "--format", "xml"],
    ["assign", "42", "correios", "--format", "CSV"], ["assign", "42", "correios", "--parcel", "2", "--next-parcel"],
    ["assign", "-5", "correios"], ["assign", "--", "42", "correios"], ["assign", "42", "correios", "--input", "f"],
    ["--log-format", "xml", "assign", "42", "correios"], ["--home", "a", "--home", "b", "assign", "42", "c"],
    ["--database-url=", "assign", "42", "c"], ["--debug", "--debug", "assign", "42", "c"],
    ["pool", "list"], ["status", "assign", "42"], ["--no-such-option", "assign", "42", "c"],
])
def test_anything_else_goes_to_the_typer_app(argv):
    assert plain_assign(argv) is None


def test_shell_completion_goes_to_the_typer_app(monkeypatch):
    monkeypatch.setenv("_TRACKCTL_COMPLETE", "bash_complete")
    assert plain_assign(["assign", "42", "correios"]) is None


# typer and what it brings (its vendored click is typer._click); typing_extensions is psycopg's own.
HEAVY = ("typer", "click", "rich", "pydantic", "pydantic_core", "annotated_types", "shellingham")


def _imported(proc) -> set[str]:
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [
    ["assign", "42", "correios"],
    ["assign", "43", "3", "--parcel", "2", "--format", "jsonl"],
    ["--debug", "assign", "44", "correios", "--next-parcel", "--format", "csv"],
])
def test_the_plain_assign_imports_no_typer_click_rich_or_pydantic(cli, stocked, args):
    """python -X importtime lists every module a run imports: the lean path imports none of the
    command-line frameworks, and still claims its code."""
    from conftest import trackctl_command

    command = trackctl_command()
    runner = [sys.executable, "-X", "importtime", *(command[1:] if command[0] == sys.executable else command)]
    proc = subprocess.run(runner + args, capture_output=True, text=True, env=cli.env, timeout=60)
    modules = _imported(proc)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"trackctl.entry", "trackctl.assign", "psycopg"} <= modules, sorted(modules)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy
    assert proc.stdout.strip(), proc.stderr[-2000:]
    (row,) = stocked.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id = %s", (args[args.index("assign") + 1],)).fetchone()
    assert row == 1


def test_commands_other_than_the_plain_assign_still_build_the_typer_app(cli, stocked):
    from conftest import trackctl_command

    command = trackctl_command()
    runner = [sys.executable, "-X", "importtime", *(command[1:] if command[0] == sys.executable else command)]
    proc = subprocess.run(runner + ["assign", "42", "correios", "--parcel", "0"], capture_output=True, text=True,
                          env=cli.env, timeout=60)
    assert proc.returncode == 2 and "'--parcel'" in proc.stderr, proc.stderr[-2000:]
    assert "typer" in _imported(proc)


# The same command lines through the lean path and through the typer app must give the same
# stdout, stderr and exit code.
SAME_ON_BOTH_PATHS = [
    ["assign", "50", "correios"],
    ["assign", "50", "correios"],  # again: the same code back
    ["assign", "50", "3", "--format", "jsonl"],
    ["assign", "50", "correios", "--parcel", "2", "--format", "csv"],
    ["assign", "52", "nope"],  # unknown carrier: exit 1, one line naming the known ones
    ["assign", "x" * 65, "correios"],  # order id too long: exit 2
    ["assign", " 53", "correios"],  # leading space
    ["--database-url", "postgresql://u:secret@127.0.0.1:1/none", "assign", "54", "correios"],  # exit 4, no password
    ["--database-url", "postgresql://u@h:port/x", "assign", "54", "correios"],  # bad port: exit 2
    ["--log-format", "json", "assign", "55", "nope"],  # the error as one JSON record
]


def test_the_lean_path_and_the_typer_app_answer_alike(cli, stocked):
    import json

    from conftest import trackctl_command

    typer_app = [sys.executable, "-c", "import sys; from trackctl.cli import main; sys.argv[0] = 'trackctl'; main()"]
    lean = trackctl_command()
    for args in SAME_ON_BOTH_PATHS:
        got = []
        for command in (typer_app, lean):
            proc = subprocess.run(command + args, capture_output=True, text=True, env=cli.env, timeout=60)
            err = proc.stderr
            if args[:2] == ["--log-format", "json"]:
                err = [{k: v for k, v in json.loads(line).items() if k not in ("ts", "time", "timestamp", "pid")}
                       for line in err.splitlines()]
            got.append((proc.returncode, proc.stdout, err))
        assert got[0] == got[1], (args, got)
        assert "secret" not in got[1][2]
    codes = [subprocess.run(lean + a, capture_output=True, env=cli.env, timeout=60).returncode
             for a in (["assign", "52", "nope"], ["assign", "x" * 65, "correios"])]
    assert codes == [1, 2]


# `assign --batch` from a pipe takes the lean path too (issue 14: its start-up is part of every
# batch's time): the same input must give the same answers, stderr and exit code on both.
BATCH_ON_BOTH_PATHS = [
    (["assign", "--batch"], "60,correios\n61,3\n60,correios\n"),
    (["assign", "--batch", "--format", "jsonl"], "62,correios\n"),
    (["assign", "--batch"], '"6,3",correios\n64,nope\n\n,correios\n65,correios,1000\n66,correios\n'),  # exit 3
    (["assign", "--batch"], ""),  # a warning: no input lines
    (["--database-url", "postgresql://u:secret@127.0.0.1:1/none", "assign", "--batch"], "67,correios\n"),  # exit 4
]


def test_the_batch_answers_alike_on_both_paths(cli, stocked):
    from conftest import trackctl_command

    typer_app = [sys.executable, "-c", "import sys; from trackctl.cli import main; sys.argv[0] = 'trackctl'; main()"]
    lean = [sys.executable, "-X", "importtime", *(trackctl_command()[1:] if trackctl_command()[0] == sys.executable
                                                  else trackctl_command())]
    codes = []
    for args, lines in BATCH_ON_BOTH_PATHS:
        got = []
        for command in (typer_app, lean):
            proc = subprocess.run(command + args, input=lines, capture_output=True, text=True, env=cli.env, timeout=60)
            # (the first run claims, the second finds: "new" is the one field that may differ)
            got.append((proc.returncode, proc.stdout.replace('"new":true', '"new":false'),
                        [e for e in proc.stderr.splitlines() if not e.startswith("import time:")]))
            if command is lean:
                heavy = sorted(m for m in _imported(proc) if m.split(".")[0] in HEAVY)
                assert heavy == [], (args, heavy)
        assert got[0] == got[1], (args, got)
        assert "secret" not in str(got[1][2])
        codes.append(got[1][0])
    assert codes == [0, 0, 3, 0, 4]


# -- the lean refill (cron runs it every few minutes; issue 14's row 5 times it as a process) ------

@pytest.mark.parametrize("argv, expected", [
    (["refill"], RefillCall()),
    (["refill", "--pool", "default", "--format", "csv"], RefillCall("default", "csv")),
    (["--log-format", "JSON", "--debug", "refill", "--format=jsonl", "--pool=p1"],
     RefillCall("p1", "jsonl", debug=True, log_format="json")),
    (["--database-url", "postgresql:///x", "refill", "--format", "table"], RefillCall(fmt="table", database_url="postgresql:///x")),
])
def test_a_plain_refill_off_a_terminal_is_read_by_the_lean_path(argv, expected):
    assert plain_refill(argv) == expected


@pytest.mark.parametrize("argv", [
    ["refill", "--help"], ["refill", "--pool"], ["refill", "--pool", "-x"], ["refill", "--pool", "a", "--pool", "b"],
    ["refill", "--format", "CSV"], ["refill", "--format", "xml"], ["refill", "extra"], ["refill", "--target", "3"],
    ["--version", "refill"], ["pool", "refill"], ["--log-format", "xml", "refill"],
])
def test_any_other_refill_goes_to_the_typer_app(argv):
    assert plain_refill(argv) is None


def test_a_refill_on_a_terminal_goes_to_the_typer_app_for_its_progress_bar(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert plain_refill(["refill"]) is None


# The same refills on both paths: the same stdout, stderr and exit code, the lean one without typer.
REFILL_ON_BOTH_PATHS = [
    ["refill"],
    ["refill", "--pool", "default", "--format", "csv"],
    ["refill", "--format", "json"],
    ["refill", "--pool", "nope"],  # unknown pool
    ["--log-format", "json", "refill", "--pool", "nope"],  # the error as one JSON record
    ["--database-url", "postgresql://u:secret@127.0.0.1:1/none", "refill"],  # exit 4, no password
]


def test_the_refill_answers_alike_on_both_paths(cli, stocked):
    import json

    from conftest import trackctl_command

    typer_app = [sys.executable, "-c", "import sys; from trackctl.cli import main; sys.argv[0] = 'trackctl'; main()"]
    lean = [sys.executable, "-X", "importtime", *(trackctl_command()[1:] if trackctl_command()[0] == sys.executable
                                                  else trackctl_command())]
    codes = []
    for args in REFILL_ON_BOTH_PATHS:
        got = []
        for command in (typer_app, lean):
            # Each run starts from the same state: the default pool with no free code.
            stocked.execute("DELETE FROM sequencing.tracking WHERE order_id IS NULL")
            proc = subprocess.run(command + args, capture_output=True, text=True, env=cli.env, timeout=60)
            # (what differs between two runs: the run's id and how long it took)
            err = [re.sub(r"\[run [0-9a-f]+\]", "[run]", re.sub(r" (in|after) [0-9.]+ s\b", r" \1 s", e))
                   for e in proc.stderr.splitlines() if not e.startswith("import time:")]
            if args[:2] == ["--log-format", "json"]:
                err = [{k: v for k, v in json.loads(line).items()
                        if k not in ("ts", "time", "timestamp", "pid", "run_id", "seconds")} for line in err]
            got.append((proc.returncode, proc.stdout, err))
            if command is lean:
                modules = _imported(proc)
                assert "trackctl.entry" in modules, proc.stderr[-2000:]
                heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
                assert heavy == [], (args, heavy)
        assert got[0] == got[1], (args, got)
        assert "secret" not in str(got[1][2])
        codes.append(got[1][0])
    assert codes[:3] == [0, 0, 0] and codes[5] == 4, codes
    assert got[0][1] == "" and codes[3] == codes[4] != 0, got
    free = stocked.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id IS NULL").fetchone()[0]
    assert free == 0  # the last runs wrote nothing; the first ones each wrote a full pool (checked next)
    runs = stocked.execute("SELECT outcome, counts->>'generated' FROM sequencing.run WHERE job = 'refill' "
                           "ORDER BY started_at").fetchall()
    assert [r for r in runs if r[0] == "ok"][:6] == [("ok", "200")] * 6, runs
