"""trackctl events: the outbox as JSON lines, resumable from a cursor, shareable by consumer groups."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .app import FORMAT_HELP, Format, app, connection, fmt_value, pipe_output, say, warn

events_app = typer.Typer(invoke_without_command=True)  # its help is the callback's docstring, with examples
app.add_typer(events_app, name="events")

GROUP_COLUMNS = ["name", "types", "position", "collectors", "waiting", "unacknowledged", "created_at"]


def _reader_alive() -> bool:
    """False once the reading end of stdout is closed (`| head` exited) while we were idle."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # errors and hang-ups are always reported
        return not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


@events_app.callback()
def events_cmd(
    ctx: typer.Context,
    after: Optional[str] = typer.Option(None, "--after", metavar="CURSOR",
                                        help="Start right after the event with this cursor (default: the oldest)."),
    types: Optional[str] = typer.Option(None, "--types", metavar="TYPE,...",
                                        help="Only these event types (tracking.assigned, shipment.status_changed, "
                                             "shipment.stale)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Stop after this many events."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new events as they are written."),
    group: Optional[str] = typer.Option(None, "--group", metavar="NAME",
                                        help="Share the stream with the other collectors of this consumer group: "
                                             "each event goes to one of them (at most 6 at once)."),
    lease: int = typer.Option(30, "--lease", metavar="SECONDS", min=1, max=86400,
                              help="With --group: seconds a batch stays with this collector before another may "
                                   "take it (a collector that dies hands it on at once)."),
) -> None:
    """Print outbox events as JSON lines, oldest first; each carries a `cursor` for --after.

      trackctl events --types shipment.status_changed --limit 10

      trackctl events --after "$LAST_CURSOR" --follow | my-consumer

      trackctl events --group billing --follow    # up to 6 of these share the stream

    With --group the group keeps its own position (set by --after when the group is created) and
    an event is acknowledged only after its line was written and flushed. A 7th collector of a
    group is refused with exit code 7.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..events import parse_cursor
    from ..outbox import parse_types

    from .. import interrupts

    position = parse_cursor(after)
    type_list = parse_types(types)
    # Ctrl-C and SIGTERM end a stream between two pages (a group's collector after acknowledging
    # the batch it printed) within a second, exit 130 or 143 (trackctl/interrupts.py).
    interrupts.install()
    if group is not None:
        _collect(ctx, group, position if after is not None else None, type_list, limit, follow, float(lease))
        return
    from ..events import stream

    with connection(ctx) as conn, pipe_output(), interrupts.cooperative() as stop:
        for page in stream(conn, after=position, types=type_list, limit=limit, follow=follow,
                           keep_going=lambda: not stop.is_set() and _reader_alive()):
            sys.stdout.write("\n".join(line for _, line in page) + "\n")
            if follow:
                sys.stdout.flush()
            if stop.is_set():
                break
    if stop.is_set():
        raise stop.interrupted()


def _collect(ctx: typer.Context, group: str, after: Optional[int], types: Optional[list[str]],
             limit: Optional[int], follow: bool, lease: float) -> None:
    from .. import interrupts
    from ..events import GROUP_BATCH, Collector

    with connection(ctx) as conn, pipe_output(), interrupts.cooperative() as stop:
        collector = Collector(conn, group, types=types, after=after, lease=lease)
        collector.join()
        taken = 0
        while (limit is None or taken < limit) and not stop.is_set():
            batch = collector.take(GROUP_BATCH if limit is None else min(GROUP_BATCH, limit - taken))
            if batch is None:
                if not follow or not collector.wait(lambda: not stop.is_set() and _reader_alive()):
                    break
                continue
            if batch.events:
                sys.stdout.write("".join(line + "\n" for _, line in batch.events))
                sys.stdout.flush()
            if not collector.ack(batch):
                warn(f"a batch of {len(batch.events)} events was acknowledged too late: its lease had run out and "
                     "another collector may have printed it too (raise --lease)")
            taken += len(batch.events)
        collector.leave()
    if stop.is_set():
        raise stop.interrupted()


@events_app.command("groups")
def groups_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List consumer groups: live collectors, position, events waiting and unacknowledged.

    Example: trackctl events groups --format json
    """
    from ..events import list_groups
    from .output import emit

    with connection(ctx) as conn:
        groups = list_groups(conn)
    emit(groups, GROUP_COLUMNS, fmt_value(fmt))


@events_app.command("drop-group")
def drop_group_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Consumer group name.")) -> None:
    """Delete a consumer group that has no live collector (its events are no longer held for it).

    Example: trackctl events drop-group billing
    """
    from ..events import drop_group

    with connection(ctx) as conn:
        drop_group(conn, name)
    say(f"dropped consumer group {name}")
