"""The `trackctl` console script: the plain `assign ORDER CARRIER`, `assign --batch` from a pipe
and `refill` in a pipe or under cron on a lean path, all else to typer.

Order systems run `trackctl assign ORDER CARRIER` once per order, so its start-up is most of its
cost. Building the typer app (typer, its vendored click, the parameter conversion machinery) costs
more than the claim itself; this path reads that one command line by hand and imports only the
library: psycopg, the settings, the claim. A batch's start-up is part of its time too (0.8 s of
CPU through typer against 0.45 s for a bare `python -c` connecting), and so is a refill's (cron
runs it every few minutes; 632 ms through typer against 397 ms here, with a full pool). Anything it does not
recognise exactly (--help, --input,
a flag it does not know, a value that needs converting or refusing, a repeated option, shell
completion, tracing asked for by OTEL_EXPORTER_OTLP_ENDPOINT) goes to the typer app unchanged, so help, errors and exit codes stay the app's own.
Both paths share `run_assign`, `run_refill`'s output (trackctl/cli/refill_io.py) and the error
boundary of trackctl.console.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from . import console
from .cli import logsetup

# Root options before the command, as the typer app declares them (trackctl/cli/app.py `root`).
_ROOT_VALUED = ("--database-url", "--home", "--log-format")
_FORMATS = ("csv", "jsonl")
_REFILL_FORMATS = ("table", "plain", "json", "jsonl", "csv")  # cli/app.py `Format`, case as typer takes it
_PARCEL_MAX = 999  # the range typer checks for --parcel (cli/assign.py), here only to fall back


@dataclass(frozen=True)
class AssignCall:
    """A plain `[root options] assign ORDER CARRIER [--parcel N | --next-parcel] [--format F]`, or
    `[root options] assign --batch [--format F]` (stdin, not a terminal; no progress bar to draw)."""

    order: str | None
    carrier: str | None
    parcel: int | None = None
    next_parcel: bool = False
    fmt: str | None = None
    batch: bool = False
    database_url: str | None = None
    home: str | None = None
    debug: bool = False
    log_format: str | None = None


def _option(arg: str, names: tuple[str, ...], rest: list[str]) -> tuple[str, str] | None:
    """(name, value) of `--name value` (taking the value from `rest`) or `--name=value`, else None."""
    name, eq, value = arg.partition("=")
    if name not in names:
        return None
    if not eq:
        if not rest:
            return None
        value = rest.pop(0)
    if not value or value.startswith("-"):
        return None  # for typer to judge
    return name, value


def _terminal(stream) -> bool:
    """True for a terminal, and for a stream that cannot say (closed, None): typer's path then judges."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return True


@dataclass(frozen=True)
class RefillCall:
    """A plain `[root options] refill [--pool NAME] [--format F]` with stderr not a terminal (the
    progress bar is the typer command's): a cron line, a script, a pipe."""

    pool: str | None = None
    fmt: str | None = None
    database_url: str | None = None
    home: str | None = None
    debug: bool = False
    log_format: str | None = None


def _command_line(argv: list[str], command: str) -> tuple[dict[str, object], list[str]] | None:
    """(root options, the arguments after `command`) when `argv` is `[root options] command ...`
    with root options the lean path reads exactly, else None (typer's to handle)."""
    if "_TRACKCTL_COMPLETE" in os.environ:  # shell completion asks the typer app
        return None
    from . import telemetry

    if telemetry.wanted():  # a traced run (issue 15) goes where the trace is started and flushed
        return None
    rest = list(argv)
    root: dict[str, object] = {}
    while rest and rest[0] != command:
        arg = rest.pop(0)
        if arg == "--debug" and "debug" not in root:
            root["debug"] = True
            continue
        found = _option(arg, _ROOT_VALUED, rest)
        if found is None:
            return None
        key = found[0][2:].replace("-", "_")
        if key in root:
            return None  # a repeated option: typer decides which one wins
        root[key] = found[1]
    if not rest:
        return None
    rest.pop(0)  # the command
    if "log_format" in root:
        root["log_format"] = str(root["log_format"]).lower()
        if root["log_format"] not in ("text", "json"):
            return None
    return root, rest


def plain_refill(argv: list[str]) -> RefillCall | None:
    """Return the call `argv` spells if it is a plain `refill` off a terminal, else None (typer's)."""
    parsed = _command_line(argv, "refill")
    if parsed is None or _terminal(sys.stderr):
        return None
    root, rest = parsed
    own: dict[str, str] = {}
    while rest:
        found = _option(rest.pop(0), ("--pool", "--format"), rest)
        if found is None or found[0][2:] in own:
            return None
        name, value = found
        if name == "--format" and value not in _REFILL_FORMATS:
            return None
        own["pool" if name == "--pool" else "fmt"] = value
    return RefillCall(**own, **root)  # type: ignore[arg-type]


def plain_assign(argv: list[str]) -> AssignCall | None:
    """Return the call `argv` spells if it is the plain single assign, else None (typer's to handle)."""
    parsed = _command_line(argv, "assign")
    if parsed is None:
        return None
    root, rest = parsed
    positional: list[str] = []
    own: dict[str, object] = {}
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        if arg == "--next-parcel" and "next_parcel" not in own:
            own["next_parcel"] = True
            continue
        if arg == "--batch" and "batch" not in own:
            own["batch"] = True
            continue
        found = _option(arg, ("--parcel", "--format"), rest)
        if found is None or found[0][2:] in own:
            return None
        name, value = found
        if name == "--parcel":
            if not (value.isascii() and value.isdigit() and len(value) <= 9 and 1 <= int(value) <= _PARCEL_MAX):
                return None
            own["parcel"] = int(value)
        elif value in _FORMATS:
            own["fmt"] = value
        else:
            return None
    if own.get("batch"):
        # The batch from a pipe: its start-up is part of every batch's time (issue 14, row 4).
        # Arguments beside --batch, a terminal on stdin (refused) or on stderr (the progress bar
        # is the typer command's) go to typer.
        if positional or "parcel" in own or own.get("next_parcel") or _terminal(sys.stdin) or _terminal(sys.stderr):
            return None
        return AssignCall(None, None, **own, **root)  # type: ignore[arg-type]
    if len(positional) != 2 or ("parcel" in own and own.get("next_parcel")):
        return None  # missing or extra arguments, or both parcel options: typer's own messages
    return AssignCall(positional[0], positional[1], **own, **root)  # type: ignore[arg-type]


def csv_field(value: str) -> str:
    # What csv.writer (QUOTE_MINIMAL, "\n" line ends) writes for a value: quoted, quotes doubled,
    # only when it holds a comma, a quote or a line feed.
    quote = "," in value or '"' in value or "\n" in value
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if quote else value


def assignment_line(fmt: str, a) -> str:
    """One assignment as its output line: a CSV row (order,carrier,code) or a JSON line.

    Built as text (not through csv.writer and a write per line): `assign --batch` writes one per
    input line, and that per-line machinery was a tenth of the batch's client CPU."""
    if fmt == "jsonl":
        from .cli.output import json_line

        return json_line({"order_id": a.order_id, "carrier": a.carrier, "code": a.code,
                          "new": a.new, "parcel": a.parcel}) + "\n"
    return f"{csv_field(a.order_id)},{csv_field(a.carrier)},{csv_field(a.code)}\n"


def run_assign(conf, order: str, carrier: str, *, parcel: int | None = None, next_parcel: bool = False,
               fmt: str | None = None) -> None:
    """Claim (or find) the code of one order and print it: the work of `trackctl assign ORDER CARRIER`."""
    from .assign import assign
    from .db import connect

    conn = connect(conf)
    try:
        result = assign(conn, order, carrier, parcel=parcel or 1, next_parcel=next_parcel)
    finally:
        conn.close()
    if result.generated_inline:
        console.warn(f"the pool for {result.carrier} had no free code to claim: generated a code inline; "
                     "run 'trackctl refill' or raise the pool's target")
    if fmt is None:
        sys.stdout.write(result.code + "\n")
    else:
        sys.stdout.write(assignment_line(fmt, result))


def run_batch(conf, fmt: str) -> None:
    """`trackctl assign --batch` from stdin: what the typer command (trackctl/cli/assign.py) does,
    without its progress bar (this path is taken only when stderr is not a terminal)."""
    from .cli.batch_io import assign_answers, assign_concluded, open_input
    from .db import connect

    console.guard_stdout()  # a reader that goes away ends the run as StdoutClosed, as under typer
    stream = open_input(None)
    with stream:
        conn = connect(conf)
        try:
            counts = assign_answers(conn, stream, "auto", fmt)
        finally:
            conn.close()
    assign_concluded(*counts)


def run_refill(conf, pool: str | None, fmt: str | None) -> None:
    """`trackctl refill` off a terminal: what the typer command (trackctl/cli/pool.py) does, without
    its progress bar. SIGINT and SIGTERM end it with its run recorded, exit 130 or 143."""
    from . import interrupts, jobs
    from .cli.refill_io import show_refill
    from .db import connect

    console.guard_stdout()
    logsetup.setup_logging(conf)
    interrupts.install()
    conn = connect(conf)
    try:
        result = jobs.refill(conn, pool)
    finally:
        conn.close()
    show_refill(result, fmt)


def _lean(call: AssignCall | RefillCall) -> int:
    try:
        from .config import load_settings

        conf = load_settings(call.database_url, call.home, call.debug)
        logsetup.set_log_format(call.log_format or os.environ.get("TRACKCTL_LOG_FORMAT"), conf)
        if isinstance(call, RefillCall):
            run_refill(conf, call.pool, call.fmt)
        elif call.batch:
            run_batch(conf, call.fmt or "csv")
        else:
            run_assign(conf, call.order, call.carrier, parcel=call.parcel, next_parcel=call.next_parcel, fmt=call.fmt)
        code = 0
    except (BrokenPipeError, console.StdoutClosed):
        console.stdout_gone()
        code = 0
    except KeyboardInterrupt:
        code = console.interrupted()
    except SystemExit as exc:  # a job stopped by SIGINT/SIGTERM (errors.Interrupted): one line, 130 or 143
        code = console.stopped(exc)
    except Exception as exc:  # the error boundary, as in trackctl.cli.boundary
        code = console.report(exc, call.debug)
    if not console.end_output():
        code = 0 if code == 0 else code
    return code


def main() -> None:
    """Console entry point (`trackctl`)."""
    argv = sys.argv[1:]
    call = plain_assign(argv) or plain_refill(argv)
    if call is None:
        from .cli import main as app_main

        app_main()
        return
    sys.exit(_lean(call))
