"""A run builds only the command it names (start-up cost), with the same options and help as the whole app."""

from __future__ import annotations

import re

import pytest
import typer
import typer.main

from trackctl.cli import app, app_for


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
        assert "trackctl.cli" in modules, proc.stderr[-2000:]  # the measurement itself works
        assert not {m for m in modules if m == "rich" or m.startswith("rich.")}, args
