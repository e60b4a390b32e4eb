"""trackctl metrics: Prometheus text format on stdout, or a node_exporter textfile."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import TrackctlError
from .app import app, connection, pipe_output


@app.command("metrics")
def metrics_cmd(
    ctx: typer.Context,
    textfile_dir: Optional[Path] = typer.Option(
        None, "--textfile-dir", metavar="DIR",
        help="Write DIR/trackctl.prom atomically (node_exporter textfile collector) instead of stdout."),
) -> None:
    """Print pool, shipment, polling, outbox, delivery and job metrics in Prometheus text format.

    With --textfile-dir, the file is replaced atomically; when the database cannot be read it
    still gets `trackctl_up 0` (and the command fails), so an alert can fire.

    Example: trackctl metrics | grep trackctl_pool_codes

    Example (cron): * * * * * trackctl metrics --textfile-dir /var/lib/node_exporter/textfile
    """
    from ..metrics import check_textfile_dir, exposition, read_metrics, write_textfile

    if textfile_dir is not None:
        check_textfile_dir(textfile_dir)  # before the database: a typo is refused, never created
    try:
        with connection(ctx) as conn:
            text = exposition(read_metrics(conn))
    except TrackctlError:
        if textfile_dir is not None:
            write_textfile(textfile_dir, exposition(None))
        raise
    if textfile_dir is not None:
        try:
            write_textfile(textfile_dir, text)
        except OSError as exc:
            raise TrackctlError(f"cannot write {textfile_dir / 'trackctl.prom'}: {exc.strerror}",
                                hint="check that the directory exists and is writable") from exc
        return
    with pipe_output():
        sys.stdout.write(text)
