"""Rendering (trackctl/cli/output.py): tables that read well at 80 columns, records instead of Python reprs,
and plain output in pipes without header lines (issue 11.9)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone

from rich.console import Console

from trackctl.cli.runs import COLUMNS as RUN_COLUMNS
from trackctl.cli.runs import table_layout as runs_layout
from trackctl.cli.webhook import deliveries_layout, list_layout
from trackctl.cli.output import emit, emit_one, shorten_url, table_text

T0 = datetime(2026, 12, 1, 12, 46, 41, 507654, tzinfo=timezone.utc)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render(records, columns, width: int, **kw) -> list[str]:
    """The table as a terminal of `width` columns shows it (colours stripped), one string per line."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system="standard")
    emit(records, columns, "table", console=console, out=buf, **kw)
    return [ANSI.sub("", line).rstrip() for line in buf.getvalue().splitlines()]


def local(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def runs(n: int = 4) -> list[dict]:
    jobs = ["outbox-prune", "poll", "notify", "sweep-stale"]
    return [{"id": f"{i:08x}-7c12-4478-8840-8054f04eead3", "job": jobs[i % 4], "host": "worker-07.example.internal",
             "pid": 113560 + i, "started_at": T0 + timedelta(minutes=i), "finished_at": T0 + timedelta(minutes=i, seconds=3),
             "seconds": 3.141592, "outcome": "failed" if i == 1 else "ok",
             "counts": "carriers=1 polled=300 ok=296 failed=4 rate_limited=0 new_events=911 changed=287 stale=0",
             "error": "4 of 300 carrier requests failed (see the log): host name not found" if i == 1 else None}
            for i in range(n)]


def deliveries(n: int = 4) -> list[dict]:
    return [{"id": 1000 + i, "subscriber_id": 3, "event_id": f"evt_01JDX{i:021d}", "type": "shipment.status_changed",
             "cursor": str(5000 + i), "status": "dead" if i % 2 else "pending", "attempts": 8,
             "next_attempt_at": None if i % 2 else T0 + timedelta(hours=2), "last_attempt_at": T0, "last_status": 503,
             "last_error": "HTTP 503 from https://hooks.example.com/a/very/long/path?token=***: upstream unavailable",
             "delivered_at": None} for i in range(n)]


DELIVERY_COLUMNS = ["id", "subscriber_id", "event_id", "type", "status", "attempts", "next_attempt_at",
                    "last_attempt_at", "last_status", "last_error", "delivered_at"]


def assert_reads_well(lines: list[str], width: int, rows: int) -> None:
    assert lines, "nothing rendered"
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    # A column squeezed to a letter or two turns every cell into a tower of lines: no row may take
    # more than a few lines, and no header word may be broken.
    assert len(lines) <= 2 + 6 * rows, "\n".join(lines)
    for line in lines[2:]:
        cells = [c for c in re.split(r" {2,}", line.strip()) if c]
        assert not cells or any(len(c) > 2 for c in cells), f"a row of letter-wide cells:\n" + "\n".join(lines)


def test_runs_at_80_columns_keep_whole_words_local_times_to_the_second_and_short_ids():
    lines = render(runs(), RUN_COLUMNS, 80, layout=runs_layout())
    assert_reads_well(lines, 80, 4)
    header = lines[0].split()
    assert header[:4] == ["job", "started", "secs", "outcome"], lines[0]  # chosen for the width
    text = "\n".join(lines)
    for r in runs():
        assert local(r["started_at"]) in text and r["job"] in text
    assert ".507654" not in text and "+00:00" not in text  # no microseconds, no offsets
    assert "3.14" in text and "3.141592" not in text
    assert "worker-07" not in text  # low-value columns left out at 80 columns


def test_runs_at_140_columns_show_more_columns_without_wrapping_times():
    lines = render(runs(), RUN_COLUMNS, 140, layout=runs_layout())
    assert_reads_well(lines, 140, 4)
    assert lines[0].split()[:3] == ["id", "job", "host"], lines[0]
    text = "\n".join(lines)
    assert "00000001 " in text and "00000001-7c12" not in text  # ids by their first 8 characters
    for r in runs():
        assert local(r["started_at"]) in text
    assert text.count("worker-07.example.internal") == 4  # a host name is one word: never broken


def test_deliveries_at_80_and_140_columns():
    for width in (80, 140):
        lines = render(deliveries(), DELIVERY_COLUMNS, width, layout=deliveries_layout())
        assert_reads_well(lines, width, 4)
        header = lines[0].split()
        assert {"id", "status", "tries", "next", "http", "last_error"} <= set(header), lines[0]
        text = "\n".join(lines)
        assert local(T0 + timedelta(hours=2)) in text and "HTTP 503 from" in text
    assert "type" in render(deliveries(), DELIVERY_COLUMNS, 140, layout=deliveries_layout())[0]


def test_webhook_urls_are_shortened_on_one_line_and_whole_in_other_formats():
    url = "https://hooks.example.com/tenants/4711/integrations/trackctl/receive?token=***"
    subs = [{"id": 1, "url": url, "types": "*", "retry_schedule": "0s,5s,5m,30m,2h,5h,10h,10h",
             "max_in_flight": 16, "enabled": True, "disabled_reason": None, "secret": "whsec_…ts0=",
             "rotating_until": None, "created_at": T0}]
    columns = list(subs[0])
    for width in (80, 140):
        lines = render(subs, columns, width, layout=list_layout())
        assert_reads_well(lines, width, 1)
        assert shorten_url(url) in lines[2] and len(lines) == 3, lines  # one row, one line
    assert shorten_url(url).startswith("https://hooks.example.com/…") and len(shorten_url(url)) <= 40
    assert shorten_url(url).endswith("?token=***")
    out = io.StringIO()
    emit(subs, columns, "plain", out=out)
    assert url in out.getvalue()


def test_a_terminal_table_still_never_cuts_a_code_or_an_order_id_at_80_columns():
    code = "5f0c6a0e-8a4e-4b7c-9a43-2f1e2d3c4b5a"
    rows = [{"code": code, "order_id": "order-0000000042", "carrier": "correios", "status": "out_for_delivery",
             "assigned_at": T0, "note": "x " * 60}]
    lines = render(rows, list(rows[0]), 80)
    assert_reads_well(lines, 80, 1)
    assert code in lines[2] and "order-0000000042" in lines[2]


def test_one_record_prints_key_value_lines_never_a_python_dict():
    record = {"id": 3, "name": "sim", "options": {"step": 2.0, "fail": 0.05}, "poll_intervals": {},
              "stale_after": "30d", "blocked_until": T0}
    out = io.StringIO()
    emit_one(record, None, "plain", out=out)
    assert out.getvalue().splitlines() == ["id\t3", "name\tsim", "options.step\t2.0", "options.fail\t0.05",
                                          "poll_intervals\t", "stale_after\t30d",
                                          f"blocked_until\t{T0.isoformat()}"]
    buf = io.StringIO()
    emit_one(record, None, "table", console=Console(file=buf, width=80, force_terminal=True))
    shown = ANSI.sub("", buf.getvalue())
    assert "{" not in shown and "options.fail" in shown and local(T0) in shown
    out = io.StringIO()
    emit_one(record, None, "json", out=out)
    assert json.loads(out.getvalue())["options"] == {"step": 2.0, "fail": 0.05}


def test_table_text_of_times_floats_and_mappings():
    assert table_text(T0) == local(T0)
    assert table_text(10.0) == "10" and table_text(0.25) == "0.25" and table_text(12345.6) == "12346"
    assert table_text({"a": 1, "b": True}) == "a=1 b=true"


def test_carrier_show_prints_records_and_runs_pipes_have_no_header(cli, conn):
    from trackctl.carriers import add_carrier
    from trackctl.pools import refill

    add_carrier(conn, "sim", adapter="simulator", options={"step": "2s", "fail": "0.05"},
                intervals={"out_for_delivery": 300})
    r = cli("carrier", "show", "sim")
    assert r.returncode == 0, r
    assert "{" not in r.stdout and "options.step\t" in r.stdout and "poll_intervals.out_for_delivery\t5m" in r.stdout, r
    assert all(len(line.split("\t")) == 2 for line in r.stdout.splitlines()), r

    refill(conn)
    assert cli("refill").returncode == 0
    plain = cli("runs").stdout.splitlines()
    assert len(plain) == 1 and plain[0].split("\t")[1] == "refill", plain  # no header line in a pipe
    rows = list(csv.reader(io.StringIO(cli("runs", "--format", "csv").stdout)))
    assert rows[0] == RUN_COLUMNS and rows[1][1] == "refill"  # csv documents its header row
    plain = cli("webhook", "deliveries").stdout
    assert plain == ""  # nothing delivered yet: not even a header
