"""What `trackctl refill` shows once its run is over, on both paths (the typer command in
cli/pool.py and the lean one in trackctl/entry.py). Standard library and trackctl only at import:
the lean path must not load typer or rich (rich comes only for a table on a terminal).
"""

from __future__ import annotations

COLUMNS = ["pool", "target", "free_before", "generated"]


def show_refill(result, fmt: str | None) -> None:
    """Log the pools another refill was filling, print the others (one record each), then raise the
    run's problem, if any: its error line and exit code (trackctl.jobs.JobResult)."""
    from ..logs import get_logger
    from .output import emit

    for r in result.data:
        if r.skipped:
            get_logger("refill").info(f"pool {r.pool}: skipped, another refill is filling it")
    emit([r for r in result.data if not r.skipped], COLUMNS, fmt)
    result.raise_problem()
