"""Command lines that cannot be parsed: one `trackctl: error:` line naming the --help to read, exit 2."""

from __future__ import annotations

import json

import pytest

BAD_COMMAND_LINES = [
    (["pool", "list", "--format", "xml"], "'--format'", "trackctl pool list --help"),
    (["assign", "42", "correios", "--parcel", "0"], "'--parcel'", "trackctl assign --help"),
    (["assign", "42", "correios", "--parcel", "abc"], "'--parcel'", "trackctl assign --help"),
    (["pool", "available", "--limit", "abc"], "'--limit'", "trackctl pool available --help"),
    (["pool", "set", "default"], "Missing option '--target'", "trackctl pool set --help"),
    (["carrier", "add"], "Missing argument", "trackctl carrier add --help"),
    (["--bogus", "pool", "list"], "No such option: --bogus", "trackctl --help"),
    (["no-such-command"], "No such command 'no-such-command'", "trackctl --help"),
    (["refill", "--pool"], "'--pool' requires an argument", "trackctl refill --help"),
]


@pytest.mark.parametrize("argv, names, hint", BAD_COMMAND_LINES, ids=[" ".join(a) for a, _, _ in BAD_COMMAND_LINES])
def test_an_unparsable_command_line_is_one_error_line_with_exit_2(cli, argv, names, hint):
    r = cli(*argv)
    assert r.returncode == 2, r
    assert r.stdout == "", r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("trackctl: error: ") and names in lines[0] and f"(see '{hint}')" in lines[0], r


def test_with_json_logs_an_unparsable_command_line_is_one_json_record(cli):
    r = cli("--log-format", "json", "pool", "list", "--format", "xml")
    assert r.returncode == 2, r
    (line,) = r.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["exit_code"] == 2 and "'--format'" in record["message"], record


def test_a_group_without_a_command_prints_its_help_and_exits_2(cli):
    r = cli("pool")
    assert r.returncode == 2, r
    assert "Usage: trackctl pool" in r.stderr and "available" in r.stderr, r
    help_ = cli("pool", "--help")
    assert help_.returncode == 0 and "Usage: trackctl pool" in help_.stdout, help_


def test_a_prepared_statement_lost_by_a_pooler_is_reported_with_the_setting_that_fixes_it():
    import psycopg

    from trackctl.console import describe as _describe

    for exc in (psycopg.errors.InvalidSqlStatementName('prepared statement "_pg3_1" does not exist'),
                psycopg.errors.DuplicatePreparedStatement('prepared statement "_pg3_0" already exists'),
                # another client's statement under the same name on the pooled server connection
                psycopg.errors.ProtocolViolation('bind message supplies 3 parameters, but prepared statement '
                                                 '"_pg3_1" requires 7')):
        message, code = _describe(exc)
        assert code == 1 and "TRACKCTL_PREPARED_STATEMENTS=off" in message and "_pg3_" in message, message
    # A protocol violation that is not about a prepared statement stays a lost connection.
    message, code = _describe(psycopg.errors.ProtocolViolation("unexpected message type 0x50 during COPY from stdin"))
    assert code == 4 and message.startswith("lost the database connection"), message


@pytest.mark.parametrize("args", [["pool", "available", "--limit", "99999999999999999999"],
                                  ["runs", "--limit", "99999999999999999999"],
                                  ["webhook", "deliveries", "--subscriber", "99999999999999999999"]])
def test_numbers_beyond_what_the_database_holds_are_usage_errors(cli, args):
    r = cli(*args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "unexpected" not in r.stderr, r


def test_a_terminal_table_never_cuts_a_code_or_an_order_id():
    import io

    from trackctl.cli.output import emit

    code = "5f0c6a0e-8a4e-4b7c-9a43-2f1e2d3c4b5a"
    out = io.StringIO()  # rich renders it 80 columns wide, as on a small terminal
    emit([{"code": code, "order_id": "order-0000000042", "carrier": "correios", "status": "out_for_delivery",
           "label": "Saiu para entrega", "assigned_at": "2026-12-01T09:00:00+00:00", "note": "x" * 60}],
         ["code", "order_id", "carrier", "status", "label", "assigned_at", "note"], "table", out=out)
    text = out.getvalue()
    assert code in text and "order-0000000042" in text, text
