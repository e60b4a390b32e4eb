"""trackctl carrier: the freight carriers codes are assigned for."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import InvalidValue
from .app import FORMAT_HELP, Format, app, call, connection, fmt_value, say

carrier_app = typer.Typer(help="Freight carriers (referenced by name or numeric id).\n\nExample: trackctl carrier add correios --id 3", no_args_is_help=True)
app.add_typer(carrier_app, name="carrier")

COLUMNS = ["id", "name", "pool", "adapter", "url", "token_env", "max_concurrency", "timeout"]


ADAPTER_HELP = "Adapter: simulator, http-json, correios, or one installed under the trackctl.carriers entry points."
OPTION_HELP = "Adapter option KEY=VALUE, repeatable (simulator: step=2s fail=0.05 seed=7 latency=50ms)."
INTERVAL_HELP = ("Poll interval for a status, STATUS=DURATION, repeatable (e.g. out_for_delivery=5m; "
                 "moved=10m: the most a shipment waits after a poll that brought news).")
CREDENTIAL_HELP = ("Secret provider setting SETTING=ENVVAR (karrio), repeatable: the NAME of the environment "
                   "variable holding it; read when polling, never stored.")
RATE_HELP = "Requests per second to this carrier over all processes and hosts, e.g. 3/s or 120/m."
SETTINGS_COLUMNS = ["id", "name", "pool", "adapter", "url", "token_env", "max_concurrency", "timeout", "options",
                    "poll_intervals", "stale_after", "breaker_threshold", "breaker_cooldown", "credentials",
                    "rate_limit"]
STATE_COLUMNS = ["carrier", "breaker", "consecutive_failures", "blocked_until", "open_until", "opened_at",
                 "slots_in_use"]


def _pairs(values: Optional[list[str]], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidValue(f"{what} {item[:40]!r} is not KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_rate(value: str) -> float:
    """Return requests per second from `N/s`, `N/m`, `N/h` or a plain N (per second); 0 removes the limit."""
    import re

    match = re.fullmatch(r"\s*(\d{1,6}(?:\.\d{1,6})?)\s*(?:/\s*(s|m|h))?\s*", value or "")
    if not match:
        raise InvalidValue(f"invalid rate limit {value[:20]!r}", hint="use requests per second, e.g. 3/s, or 120/m")
    return float(match.group(1)) / {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def _settings(adapter: Optional[str], url: Optional[str], token_env: Optional[str], max_concurrency: Optional[int],
              timeout: Optional[float], options: Optional[list[str]], intervals: Optional[list[str]],
              stale_after: Optional[str], breaker_threshold: Optional[int], breaker_cooldown: Optional[str],
              pool: Optional[str] = None, credentials: Optional[list[str]] = None,
              rate_limit: Optional[str] = None) -> dict:
    from ..names import parse_duration

    changes: dict = {}
    if credentials:
        changes["credentials"] = _pairs(credentials, "--credential")
    if rate_limit is not None:
        changes["rate_limit"] = parse_rate(rate_limit) if rate_limit.strip() else None
    for key, value in (("adapter", adapter), ("url", url), ("token_env", token_env), ("pool", pool),
                       ("max_concurrency", max_concurrency), ("timeout", timeout),
                       ("breaker_threshold", breaker_threshold)):
        if value is not None:
            changes[key] = value
    if options:
        changes["options"] = _pairs(options, "--option")
    if intervals:
        changes["intervals"] = {k: (parse_duration(v) if v else None)
                                for k, v in _pairs(intervals, "--interval").items()}
    if stale_after is not None:
        changes["stale_after"] = parse_duration(stale_after)
    if breaker_cooldown is not None:
        changes["breaker_cooldown"] = parse_duration(breaker_cooldown)
    return changes


@carrier_app.command("add")
def add_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Lowercase name, e.g. correios."),
    carrier_id: Optional[int] = typer.Option(None, "--id", help="Numeric id (freightcarrier_id); default next free."),
    pool: str = typer.Option("default", "--pool", help="Pool its codes come from."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help=ADAPTER_HELP + " Without one, shipments are only marked by hand."),
    url: Optional[str] = typer.Option(None, "--url", help="Base URL of the carrier's tracking API."),
    token_env: Optional[str] = typer.Option(None, "--token-env", metavar="VAR",
                                            help="NAME of the environment variable (or ./.env entry) holding the bearer token."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Requests at once, over all hosts [default: 6]."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="Per-request time limit [default: 10]."),
    options: Optional[list[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help=OPTION_HELP),
    intervals: Optional[list[str]] = typer.Option(None, "--interval", metavar="STATUS=DURATION", help=INTERVAL_HELP),
    stale_after: Optional[str] = typer.Option(None, "--stale-after", metavar="DURATION", help="No news for this long: stop polling, flag stale [default: 30d]."),
    breaker_threshold: Optional[int] = typer.Option(None, "--breaker-threshold", help="Consecutive failed requests that open the breaker [default: 10]."),
    breaker_cooldown: Optional[str] = typer.Option(None, "--breaker-cooldown", metavar="DURATION", help="How long an open breaker pauses the carrier [default: 5m]."),
    credentials: Optional[list[str]] = typer.Option(None, "--credential", metavar="SETTING=ENVVAR", help=CREDENTIAL_HELP),
    rate_limit: Optional[str] = typer.Option(None, "--rate-limit", metavar="N/s", help=RATE_HELP),
) -> None:
    """Add a carrier.

    Example: trackctl carrier add correios --id 3 --adapter correios --token-env CORREIOS_TOKEN

    Example: trackctl carrier add acme --adapter http-json --url https://track.acme.example --max-concurrency 4

    Example: trackctl carrier add sim --adapter simulator --option step=2s --option fail=0.05
    """
    from ..carriers import add_carrier

    changes = _settings(adapter, url, token_env, max_concurrency, timeout, options, intervals, stale_after,
                        breaker_threshold, breaker_cooldown, None, credentials, rate_limit)
    carrier = call(ctx, add_carrier, name, carrier_id, pool, **changes)
    say(f"added carrier {carrier.name} (id {carrier.id}, pool {carrier.pool}"
        + (f", adapter {changes['adapter']})" if changes.get("adapter") else ")"))


@carrier_app.command("set")
def set_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Carrier name or id."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool its new codes come from."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help=ADAPTER_HELP + " '' removes it."),
    url: Optional[str] = typer.Option(None, "--url", help="Base URL of the carrier's tracking API ('' removes it)."),
    token_env: Optional[str] = typer.Option(None, "--token-env", metavar="VAR",
                                            help="NAME of the environment variable holding the token ('' removes it)."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Requests at once, over all hosts."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="Per-request time limit."),
    options: Optional[list[str]] = typer.Option(None, "--option", metavar="KEY=VALUE", help=OPTION_HELP + " KEY= removes KEY."),
    intervals: Optional[list[str]] = typer.Option(None, "--interval", metavar="STATUS=DURATION", help=INTERVAL_HELP + " STATUS= restores the default."),
    stale_after: Optional[str] = typer.Option(None, "--stale-after", metavar="DURATION", help="No news for this long: stop polling, flag stale."),
    breaker_threshold: Optional[int] = typer.Option(None, "--breaker-threshold", help="Consecutive failed requests that open the breaker."),
    breaker_cooldown: Optional[str] = typer.Option(None, "--breaker-cooldown", metavar="DURATION", help="How long an open breaker pauses the carrier."),
    credentials: Optional[list[str]] = typer.Option(None, "--credential", metavar="SETTING=ENVVAR", help=CREDENTIAL_HELP + " SETTING= removes it."),
    rate_limit: Optional[str] = typer.Option(None, "--rate-limit", metavar="N/s", help=RATE_HELP + " 0 removes it."),
) -> None:
    """Change a carrier's adapter settings or polling policy; options not given stay as they are.

    Example: trackctl carrier set correios --max-concurrency 4 --timeout 15

    Example: trackctl carrier set acme --interval out_for_delivery=5m --stale-after 14d
    """
    from ..carriers import set_carrier

    changes = _settings(adapter, url, token_env, max_concurrency, timeout, options, intervals, stale_after,
                        breaker_threshold, breaker_cooldown, pool, credentials, rate_limit)
    if not changes:
        raise InvalidValue("nothing to change", hint="see 'trackctl carrier set --help'")
    carrier = call(ctx, set_carrier, name, **changes)
    say(f"carrier {carrier.name} updated")


def _duration(delta) -> str:
    """Return a timedelta the way durations are typed: 30d, 5m, 90s."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@carrier_app.command("show")
def show_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Carrier name or id."),
    fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Show a carrier's settings and its state: breaker, 429 block, slots in use.

    Example: trackctl carrier show correios --format json
    """
    from datetime import timedelta

    from ..carriers import carrier_settings, carrier_states
    from .output import emit_one

    with connection(ctx) as conn:
        settings = carrier_settings(conn, name)
        state = next((s for s in carrier_states(conn) if s.carrier == settings.name), None)
    record = {c: getattr(settings, c) for c in SETTINGS_COLUMNS}
    record["poll_intervals"] = {k: _duration(timedelta(seconds=v)) for k, v in settings.poll_intervals.items()}
    record["stale_after"] = _duration(settings.stale_after)
    record["breaker_cooldown"] = _duration(settings.breaker_cooldown)
    if state is not None:
        record.update({c: getattr(state, c) for c in STATE_COLUMNS if c != "carrier"})
    emit_one(record, None, fmt_value(fmt))


@carrier_app.command("reset")
def reset_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Carrier name or id.")) -> None:
    """Close a carrier's breaker and lift its 429 block now (polling resumes with the next run).

    Example: trackctl carrier reset correios
    """
    from ..carriers import reset_carrier_state

    carrier = call(ctx, reset_carrier_state, name)
    say(f"carrier {carrier.name}: breaker closed, rate-limit block lifted")


@carrier_app.command("remove")
def remove_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Carrier name or id."),
    force: bool = typer.Option(False, "--force",
                               help="Also when it has shipments: cancel its open ones and keep it only as their history."),
) -> None:
    """Remove a carrier. One with shipments is refused (exit 1) unless --force.

    Without shipments the carrier is deleted. With --force its open shipments are cancelled (a
    `cancelled` event each, sent to webhooks) and the carrier is kept only as the history of its
    shipments: no longer listed, assigned or polled; its name and id are not reused.

    Example: trackctl carrier remove corrieos

    Example: trackctl carrier remove jadlog --force
    """
    from ..carriers import remove_carrier

    removed = call(ctx, remove_carrier, name, force=force)
    if removed.deleted:
        say(f"removed carrier {removed.name}")
    else:
        say(f"removed carrier {removed.name}: {removed.cancelled} open shipment{'s' if removed.cancelled != 1 else ''} "
            f"cancelled; its {removed.shipments} shipment{'s' if removed.shipments != 1 else ''} keep it as their history")


@carrier_app.command("list")
def list_cmd(ctx: typer.Context, fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List carriers with their adapter settings (tokens are never stored: only the variable's name).

    Example: trackctl carrier list --format json
    """
    from ..carriers import list_carrier_settings
    from .output import emit

    emit(call(ctx, list_carrier_settings), COLUMNS, fmt_value(fmt))


@carrier_app.command("adapters")
def adapters_cmd(fmt: Optional[Format] = typer.Option(None, "--format", help=FORMAT_HELP)) -> None:
    """List the adapters this installation has, with each karrio provider's settings.

    karrio providers come with the carriers extra (pip install 'trackctl[carriers]'); each is
    used as --adapter karrio:<provider>, with its required settings given as --credential
    SETTING=ENVVAR (secrets) or --option SETTING=VALUE.

    Example: trackctl carrier adapters --format json
    """
    from ..carriers.registry import adapter_rows
    from .output import emit

    emit(adapter_rows(), ["adapter", "package", "required", "optional"], fmt_value(fmt))
