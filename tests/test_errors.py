"""Domain errors name the library's fields; the CLI's error boundary shows them as flags (trackctl/errors.py,
trackctl/console.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trackctl.carriers import add_carrier
from trackctl.console import describe, flag
from trackctl.errors import InvalidValue, TrackctlError, param
from trackctl.outbox import prune
from trackctl.poll import poll
from trackctl.pools import create_pool


def test_an_error_names_its_field_in_the_library_and_its_flag_at_the_boundary():
    exc = InvalidValue(f"{param('max_in_flight')} must be between 1 and 256", hint=f"or drop {param('url')}", value=0)
    assert str(exc) == "max_in_flight must be between 1 and 256 (or drop url)"
    assert exc.message == "max_in_flight must be between 1 and 256" and exc.hint == "or drop url"
    assert (exc.field, exc.fields, exc.value) == ("max_in_flight", ("max_in_flight", "url"), 0)
    assert describe(exc) == ("--max-in-flight must be between 1 and 256 (or drop --url)", 2)
    assert [flag(f) for f in ("budget", "credentials", "options", "subscriber_id")] == \
        ["--budget", "--credential", "--option", "--subscriber"]
    plain = TrackctlError("no carrier named 'x' (known: a, b)", hint="see 'trackctl carrier list'")
    assert plain.field is None and describe(plain)[0] == str(plain) == \
        "no carrier named 'x' (known: a, b; see 'trackctl carrier list')"


def test_an_error_put_in_context_keeps_its_class_fields_and_hint():
    from trackctl.carriers.base import AdapterConfig
    from trackctl.carriers.registry import build_adapter

    with pytest.raises(InvalidValue) as raised:  # the http-json adapter built without a base URL
        build_adapter("http-json", AdapterConfig(carrier="acme", url=None, token=None, timeout=5, options={},
                                                 user_agent="t"))
    exc = raised.value
    assert (type(exc), exc.field, exc.exit_code) == (InvalidValue, "url", 2)
    assert str(exc) == "carrier acme: adapter http-json: the http-json adapter needs the carrier's base URL (add url URL)"
    assert describe(exc)[0] == ("carrier acme: adapter http-json: the http-json adapter needs the carrier's "
                                "base URL (add --url URL)")
    assert isinstance(exc.__cause__, InvalidValue) and str(exc.__cause__).startswith("the http-json adapter needs")


def test_a_library_call_sees_field_names_not_flags(conn):
    with pytest.raises(InvalidValue) as raised:
        poll(conn, budget=-1)
    assert (str(raised.value), raised.value.field, raised.value.value) == ("budget must be zero or more", "budget", -1)
    with pytest.raises(InvalidValue) as raised:
        add_carrier(conn, "acme", max_concurrency=0)
    assert raised.value.field == "max_concurrency" and str(raised.value).startswith("max_concurrency must be from 1 to ")
    with pytest.raises(InvalidValue) as raised:
        prune(conn, timedelta(0))
    assert str(raised.value) == "the age must be positive (e.g. older_than 30d)" and raised.value.field == "older_than"
    with pytest.raises(InvalidValue) as raised:
        create_pool(conn, "p", kind="s10")
    assert str(raised.value) == ("an S10 pool needs its prefix, country and serial range "
                                 "(e.g. kind s10 prefix AA country BR range 10000000-10999999)")
    assert raised.value.fields == ("kind", "prefix", "country", "range")


def test_the_cli_shows_the_same_errors_with_its_flags(cli):
    r = cli("carrier", "add", "acme", "--max-concurrency", "0")
    assert r.returncode == 2, r
    assert r.stderr.startswith("trackctl: error: --max-concurrency must be from 1 to "), r
    r = cli("pool", "create", "p", "--prefix", "AA", "--country", "BR", "--range", "10000000-10000100")
    assert r.returncode == 2, r
    assert r.stderr == ("trackctl: error: --prefix, --country and --range are for S10 pools (add --kind s10)\n"), r
