"""trackctl pool and trackctl refill: pools of pre-generated codes."""

from __future__ import annotations

from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, call, connection, fmt_value, pipe_output, say

pool_app = typer.Typer(help="Pools of pre-generated tracking codes.\n\nExample: trackctl pool list", no_args_is_help=True)
app.add_typer(pool_app, name="pool")

LEVEL_COLUMNS = ["name", "kind", "target", "free", "assigned"]


@pool_app.command("create")
def create_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Lowercase pool name."),
    target: Optional[int] = typer.Option(None, "--target", show_default=False,
                                         help="Free codes refill keeps ready [default: 200; an S10 pool: at most its range]."),
    kind: str = typer.Option("uuid", "--kind", help="Kind of code: uuid, or s10 (UPU S10 from a carrier's range)."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="S10: the two service letters, e.g. AA."),
    country: Optional[str] = typer.Option(None, "--country", help="S10: the two-letter country code, e.g. BR."),
    serials: Optional[str] = typer.Option(None, "--range", metavar="FIRST-LAST",
                                          help="S10: the serial range the carrier allotted, e.g. 10000000-10999999."),
) -> None:
    """Create a pool (empty until the next refill).

    Example: trackctl pool create express --target 500

    Example: trackctl pool create correios-aa --kind s10 --prefix AA --country BR --range 10000000-10999999
    """
    from ..pools import create_pool, parse_s10_range

    s10 = None
    if prefix is not None or country is not None or serials is not None or kind == "s10":
        s10 = parse_s10_range(prefix or "", country or "", serials or "")
    pool = call(ctx, create_pool, name, target, kind, s10=s10)
    capped = " (the whole S10 range)" if target is None and s10 is not None and pool.target == s10.last - s10.first + 1 else ""
    say(f"created pool {pool.name} ({pool.kind}, target {pool.target}{capped}); "
        f"fill it with 'trackctl refill --pool {pool.name}'")


@pool_app.command("set")
def set_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pool name."),
    target: int = typer.Option(..., "--target", help="New target of free codes."),
) -> None:
    """Change a pool's target.

    Example: trackctl pool set default --target 1000
    """
    from ..pools import set_target

    pool = call(ctx, set_target, name, target)
    say(f"pool {pool.name} target is now {pool.target}")


@pool_app.command("remove")
def remove_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Pool name.")) -> None:
    """Remove a pool nobody uses: no carrier draws from it and none of its codes is assigned.

    Its free codes are deleted with it. A pool in use is refused (exit 1) and left as it was.

    Example: trackctl pool remove express
    """
    from ..pools import remove_pool

    removed = call(ctx, remove_pool, name)
    say(f"removed pool {removed.name} ({removed.free_codes} free code{'s' if removed.free_codes != 1 else ''} deleted)")


@pool_app.command("list")
def list_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List pools with their free and assigned counts.

    Example: trackctl pool list --format json
    """
    from .output import emit
    from ..pools import pool_levels

    emit(call(ctx, pool_levels), LEVEL_COLUMNS, fmt_value(fmt))


@pool_app.command("available")
def available_cmd(
    ctx: typer.Context,
    pool: Optional[str] = typer.Option(None, "--pool", help="Only this pool (default: all)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many codes."),
) -> None:
    """Print free codes, one per line, oldest first.

    Example: trackctl pool available --pool default --limit 5
    """
    import sys

    from ..pools import available_codes

    with connection(ctx) as conn, pipe_output():
        for code in available_codes(conn, pool, limit):
            sys.stdout.write(code + "\n")


@app.command("refill")
def refill_cmd(
    ctx: typer.Context,
    pool: Optional[str] = typer.Option(None, "--pool", help="Only this pool (default: every pool)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Top every pool up to its target: nothing when the target is free, else exactly the shortfall.

    Safe to run on several hosts at once: a pool another refill is filling is skipped.

    Example (cron): */5 * * * * trackctl refill
    """
    from .. import jobs
    from .jobs import progress, start_job
    from .refill_io import show_refill

    # Off a terminal a plain refill runs on the lean path (trackctl/entry.py `run_refill`) instead.
    start_job(ctx)
    with connection(ctx) as conn, progress("refill", unit="codes") as bar:
        result = jobs.refill(conn, pool, progress=bar)
    show_refill(result, fmt_value(fmt))
