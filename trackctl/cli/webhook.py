"""trackctl webhook: subscribers, their secrets, deliveries and replays."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .app import FORMAT_HELP, Format, app, call, connection, fmt_value, say

webhook_app = typer.Typer(help="Webhook subscribers (Standard Webhooks) and their deliveries.\n\nExample: trackctl webhook list", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")

SHOWN_COLUMNS = ["id", "url", "types", "retry_schedule", "max_in_flight", "secret"]


def list_layout():
    """`webhook list` on a terminal: id, URL, types and state first; the rest as the width allows."""
    from .output import TableLayout

    return TableLayout(drop=("created_at", "rotating_until", "secret", "retry_schedule", "disabled_reason",
                             "max_in_flight"),
                       labels={"retry_schedule": "retries", "max_in_flight": "max", "disabled_reason": "disabled",
                               "rotating_until": "rotating"})


def deliveries_layout():
    """`webhook deliveries` on a terminal: what failed and when it is tried next, before the ids."""
    from .output import TableLayout

    return TableLayout(drop=("event_id", "delivered_at", "last_attempt_at", "subscriber_id", "type"),
                       labels={"subscriber_id": "sub", "attempts": "tries", "next_attempt_at": "next",
                               "last_attempt_at": "last", "last_status": "http", "delivered_at": "delivered"})


@webhook_app.command("add")
def add_cmd(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="http:// or https:// URL that receives the POSTs."),
    secret: Optional[str] = typer.Option(None, "--secret", metavar="whsec_...",
                                         help="Signing secret (whsec_ + base64 of 24-64 bytes); generated if omitted."),
    types: Optional[str] = typer.Option(None, "--types", metavar="TYPE,...", help="Only these event types (default: all)."),
    retry_schedule: Optional[str] = typer.Option(
        None, "--retry-schedule", metavar="0s,5s,5m,...",
        help="Delay before each attempt, the first counted from the event "
             "(default 0s,5s,5m,30m,2h,5h,10h,10h); after the last, the delivery is dead."),
    max_in_flight: int = typer.Option(16, "--max-in-flight", min=1, max=256,
                                      help="Concurrent requests to this endpoint per notify process."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Subscribe URL to outbox events. A generated secret is printed once: store it then.

      trackctl webhook add https://example.com/hooks --types shipment.status_changed

      SECRET=$(trackctl webhook add https://example.com/hooks --format json | jq -r .secret)
    """
    from ..outbox import parse_types
    from ..webhooks import add_subscriber, parse_schedule

    schedule = parse_schedule(retry_schedule) if retry_schedule is not None else None
    with connection(ctx) as conn:
        sub = add_subscriber(conn, url, secret=secret, types=parse_types(types), retry_schedule=schedule,
                             max_in_flight=max_in_flight)
    _show(sub, reveal=secret is None, fmt=fmt)
    if secret is None:
        say(f"added webhook {sub.id}; its secret is shown above this once: store it now")
    else:
        say(f"added webhook {sub.id}")


def _show(sub, *, reveal: bool, fmt: Optional[Format]) -> None:
    from .output import emit_one

    record = {k: v for k, v in sub.listing().items() if k in SHOWN_COLUMNS}
    if reveal:
        record["secret"] = sub.secret  # the one time it is shown: it was just made, and is the command's data
    emit_one(record, SHOWN_COLUMNS, fmt_value(fmt))


@webhook_app.command("list")
def list_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List subscribers (secrets masked).

    Example: trackctl webhook list --format json
    """
    from .output import emit
    from ..webhooks import LISTING_COLUMNS, list_subscribers

    subs = call(ctx, list_subscribers)
    emit([s.listing() for s in subs], LISTING_COLUMNS, fmt_value(fmt), layout=list_layout())


@webhook_app.command("remove")
def remove_cmd(ctx: typer.Context, subscriber: int = typer.Argument(..., metavar="ID", help="Subscriber id.")) -> None:
    """Remove a subscriber and its deliveries.

    Example: trackctl webhook remove 3
    """
    from ..webhooks import remove_subscriber, shown_url

    url = call(ctx, remove_subscriber, subscriber)
    say(f"removed webhook {subscriber} ({shown_url(url)})")


@webhook_app.command("rotate-secret")
def rotate_cmd(
    ctx: typer.Context,
    subscriber: int = typer.Argument(..., metavar="ID", help="Subscriber id."),
    secret: Optional[str] = typer.Option(None, "--secret", metavar="whsec_...", help="The new secret; generated if omitted."),
    overlap: str = typer.Option("24h", "--overlap", metavar="DURATION",
                                help="How long deliveries also carry a signature with the old secret."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Give a subscriber a new secret; both signatures are sent until the overlap ends.

    Example: trackctl webhook rotate-secret 3 --overlap 2h
    """
    from datetime import timedelta

    from ..names import parse_duration
    from ..webhooks import rotate_secret

    sub = call(ctx, rotate_secret, subscriber, secret=secret, overlap=timedelta(seconds=parse_duration(overlap)))
    _show(sub, reveal=secret is None, fmt=fmt)
    say(f"webhook {sub.id} signs with the new secret"
        + (" (shown above this once: store it now)" if secret is None else "")
        + f"; the old one also signs until {sub.previous_until:%Y-%m-%d %H:%M:%S %Z}")


@webhook_app.command("set")
def set_cmd(
    ctx: typer.Context,
    subscriber: int = typer.Argument(..., metavar="ID", help="Subscriber id."),
    url: Optional[str] = typer.Option(None, "--url", help="New http:// or https:// URL."),
    types: Optional[str] = typer.Option(None, "--types", metavar="TYPE,...|*",
                                        help="Only these event types from now on ('*': all types)."),
    max_in_flight: Optional[int] = typer.Option(None, "--max-in-flight", min=1, max=256,
                                                help="Concurrent requests to this endpoint per notify process."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Change a subscriber's URL, event types or in-flight cap; its secret and deliveries stay.

      trackctl webhook set 3 --url https://example.com/new-hooks

      trackctl webhook set 3 --types '*' --max-in-flight 4
    """
    from ..outbox import parse_types
    from ..webhooks import ALL_TYPES, update_subscriber

    chosen = None
    if types is not None:
        chosen = ALL_TYPES if types.strip() in ("*", "") else parse_types(types)
    sub = call(ctx, update_subscriber, subscriber, url=url, types=chosen, max_in_flight=max_in_flight)
    _show(sub, reveal=False, fmt=fmt)
    say(f"webhook {sub.id} is updated")


PING_COLUMNS = ["subscriber_id", "url", "event_id", "status", "error", "seconds"]


@webhook_app.command("test")
def test_cmd(
    ctx: typer.Context,
    subscriber: int = typer.Argument(..., metavar="ID", help="Subscriber id."),
    timeout: str = typer.Option("10s", "--timeout", metavar="DURATION", help="Total time the request may take."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Send one signed 'webhook.test' event to a subscriber and print how it answered.

    Signed and sent exactly like a delivery (same headers, same client), but nothing is queued
    or recorded. Exit status 0 for a 2xx answer, 1 for any other answer or none.

      trackctl webhook test 3
    """
    from ..errors import TrackctlError
    from ..lanes import ping_subscriber
    from ..names import parse_duration
    from .output import emit_one

    result = call(ctx, ping_subscriber, subscriber, timeout=float(parse_duration(timeout)))
    emit_one(result, PING_COLUMNS, fmt_value(fmt))
    if not result.ok:
        raise TrackctlError(f"webhook {subscriber} did not accept the test event: {result.error}",
                            hint="check the URL with 'trackctl webhook list' and the receiver's logs")


@webhook_app.command("enable")
def enable_cmd(ctx: typer.Context, subscriber: int = typer.Argument(..., metavar="ID", help="Subscriber id.")) -> None:
    """Enable a subscriber again after a 410 Gone disabled it; its pending deliveries resume.

    Example: trackctl webhook enable 3
    """
    from ..webhooks import enable_subscriber

    call(ctx, enable_subscriber, subscriber)
    say(f"webhook {subscriber} is enabled")


@webhook_app.command("deliveries")
def deliveries_cmd(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", metavar="pending|dead|done", help="Only this status."),
    subscriber: Optional[int] = typer.Option(None, "--subscriber", metavar="ID", help="Only this subscriber."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, newest first."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """List deliveries newest first: status, attempts, next attempt, last HTTP status and error.

    Example: trackctl webhook deliveries --status dead --subscriber 3
    """
    from .output import emit
    from ..webhooks import DELIVERY_COLUMNS, list_deliveries

    rows = call(ctx, list_deliveries, status=status, subscriber_id=subscriber, limit=limit)
    emit(rows, DELIVERY_COLUMNS, fmt_value(fmt), layout=deliveries_layout())


@webhook_app.command("replay")
def replay_cmd(
    ctx: typer.Context,
    delivery: Optional[int] = typer.Argument(None, metavar="DELIVERY_ID", help="Delivery to send again."),
    dead: bool = typer.Option(False, "--dead", help="Every dead delivery (of --subscriber, or all)."),
    subscriber: Optional[int] = typer.Option(None, "--subscriber", metavar="ID", help="With --dead: only this subscriber."),
) -> None:
    """Make a delivery (or every dead one) pending again; the next 'trackctl notify' sends it.

    The event keeps its id, so receivers that already have it can tell.

      trackctl webhook replay 1234

      trackctl webhook replay --dead --subscriber 3
    """
    from ..webhooks import replay_dead, replay_delivery

    if (delivery is None) == (not dead):
        raise UsageError("give a DELIVERY_ID or --dead", hint="e.g. trackctl webhook replay --dead")
    if subscriber is not None and not dead:
        raise UsageError("--subscriber goes with --dead")
    with connection(ctx) as conn:
        if dead:
            n = replay_dead(conn, subscriber)
            say("no dead deliveries" if not n else "1 dead delivery is pending again" if n == 1
                else f"{n} dead deliveries are pending again")
        else:
            replay_delivery(conn, delivery)
            say(f"delivery {delivery} is pending again")
