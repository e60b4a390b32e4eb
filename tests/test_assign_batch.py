"""Batch assign: `trackctl assign --batch` (CSV, JSON lines, bad lines) and `assign_lines` underneath it."""

from __future__ import annotations

import io
import json
import uuid

import psycopg
import pytest

from trackctl.assign import assign, assign_lines
from trackctl.batch_input import MAX_LINE_BYTES, parse_records
from trackctl.carriers import add_carrier
from trackctl.pools import refill


def assigned(conn) -> dict[tuple[str, str, int], str]:
    return {(o, c, p): code for o, c, p, code in conn.execute(
        "SELECT t.order_id, c.name, t.parcel, t.tracking_id FROM sequencing.tracking t "
        "JOIN sequencing.carrier c ON c.id = t.freightcarrier_id")}


def free_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM sequencing.tracking WHERE order_id IS NULL").fetchone()[0]


def csv_rows(stdout: str) -> list[list[str]]:
    return [line.split(",") for line in stdout.splitlines()]


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def stderr_lines(r) -> list[str]:
    return r.stderr.splitlines()


@pytest.fixture
def batch(cli, stocked):
    """Run `trackctl assign --batch ARGS` with `input` on stdin."""
    def run(input: str | bytes, *args: str):
        return cli("assign", "--batch", *args, input=input)
    return run


# --- input formats ---------------------------------------------------------------------------


def test_csv_without_header_prints_order_carrier_code_in_input_order(batch, stocked):
    r = batch("3,correios\n1,jadlog\n2,correios\n")
    assert r.returncode == 0, r
    out = csv_rows(r.stdout)
    assert [row[:2] for row in out] == [["3", "correios"], ["1", "jadlog"], ["2", "correios"]]
    codes = assigned(stocked)
    assert [row[2] for row in out] == [codes[("3", "correios", 1)], codes[("1", "jadlog", 1)],
                                       codes[("2", "correios", 1)]]
    assert r.stderr == ""


@pytest.mark.parametrize("header", ["order,carrier", "order_id,carrier", "ORDER,Carrier", "order,carrier_id",
                                    "order,carrier,parcel"])
def test_csv_header_is_optional_and_skipped(batch, stocked, header):
    r = batch(f"{header}\n1,correios\n2,3\n")
    assert r.returncode == 0, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["1", "correios"], ["2", "correios"]]
    assert len(assigned(stocked)) == 2


def test_a_header_like_line_after_data_is_a_bad_line(batch, stocked):
    r = batch("1,correios\norder,carrier\n")
    assert r.returncode == 3, r
    assert stderr_lines(r)[0] == "line 2: unknown carrier 'carrier' (known: correios, jadlog; add one with 'trackctl carrier add NAME')"


def test_csv_parcel_column_and_quoted_fields(batch, stocked):
    r = batch('1,correios,2\n"a,b",jadlog\n 7 , correios \n"q""x",correios\n')
    assert r.returncode == 0, r
    codes = assigned(stocked)
    assert set(codes) == {("1", "correios", 2), ("a,b", "jadlog", 1), ("7", "correios", 1), ('q"x', "correios", 1)}
    out = r.stdout.splitlines()
    assert out[1] == f'"a,b",jadlog,{codes[("a,b", "jadlog", 1)]}'
    quoted = codes[('q"x', "correios", 1)]
    assert out[3] == f'"q""x",correios,{quoted}'


@pytest.mark.parametrize("order", ['a"b', '"', 'a,b"c', ",", " x ", "é,ü", "plain-42", "'single'", "a;b", "a\nb",
                                   "a\rb", "a\tb", ""])
def test_answers_are_written_as_csv_writer_writes_them(order):
    # The answers are built as text (cli/batch_io.py, entry.assignment_line), not through csv.writer:
    # for every value an order id, a carrier name or a code can hold (no line breaks), the same bytes.
    import csv
    import io

    from trackctl.assign import Assignment
    from trackctl.entry import assignment_line

    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerow((order, "correios", order))
    assert assignment_line("csv", Assignment(order, "correios", order, True)) == expected.getvalue()


def test_json_lines_input(batch, stocked):
    r = batch('{"order_id": "A-1", "carrier": "correios"}\n{"order_id": 17, "carrier": 7, "parcel": 2}\n')
    assert r.returncode == 0, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["A-1", "correios"], ["17", "jadlog"]]
    assert set(assigned(stocked)) == {("A-1", "correios", 1), ("17", "jadlog", 2)}


def test_auto_detection_decides_per_line(batch, stocked):
    r = batch('order,carrier\n1,correios\n{"order_id": "2", "carrier": "jadlog"}\n3,jadlog\n')
    assert r.returncode == 0, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["1", "correios"], ["2", "jadlog"], ["3", "jadlog"]]


def test_input_format_csv_treats_json_as_bad_csv(batch, stocked):
    r = batch('1,correios\n{"order_id": "2", "carrier": "jadlog"}\n', "--input-format", "csv")
    assert r.returncode == 3, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["1", "correios"]]
    assert stderr_lines(r)[0].startswith("line 2: ")


def test_input_format_jsonl_treats_csv_as_bad_json(batch, stocked):
    r = batch('1,correios\n{"order_id": "2", "carrier": "jadlog"}\n', "--input-format", "jsonl")
    assert r.returncode == 3, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["2", "jadlog"]]
    assert stderr_lines(r)[0].startswith("line 1: not valid JSON")


def test_input_file_instead_of_stdin(cli, stocked, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order,carrier\n1,correios\n2,jadlog\n")
    r = cli("assign", "--input", str(path), "--format", "jsonl")
    assert r.returncode == 0, r
    assert [(d["order_id"], d["carrier"]) for d in jsonl(r.stdout)] == [("1", "correios"), ("2", "jadlog")]


def test_missing_input_file_is_a_usage_error(cli, stocked, tmp_path):
    r = cli("assign", "--input", str(tmp_path / "nope.csv"))
    assert r.returncode == 2, r
    assert r.stdout == "" and "nope.csv" in r.stderr


def test_batch_with_order_and_carrier_arguments_is_a_usage_error(cli, stocked):
    r = cli("assign", "42", "correios", "--batch", input="1,correios\n")
    assert r.returncode == 2, r
    assert assigned(stocked) == {}


def test_jsonl_output_has_order_id_carrier_code_and_new(batch, stocked):
    r = batch("1,correios\n2,7\n", "--format", "jsonl")
    assert r.returncode == 0, r
    docs = jsonl(r.stdout)
    codes = assigned(stocked)
    assert [(d["order_id"], d["carrier"], d["code"], d["new"]) for d in docs] == [
        ("1", "correios", codes[("1", "correios", 1)], True), ("2", "jadlog", codes[("2", "jadlog", 1)], True)]
    assert all(str(uuid.UUID(d["code"])) == d["code"] for d in docs)


def test_batch_returns_codes_assigned_earlier_by_single_assign(batch, stocked):
    single = assign(stocked, "1", "correios")
    r = batch("1,correios\n", "--format", "jsonl")
    assert r.returncode == 0, r
    assert jsonl(r.stdout)[0]["code"] == single.code and jsonl(r.stdout)[0]["new"] is False


# --- bad lines ---------------------------------------------------------------------------------


def test_bad_lines_are_reported_and_skipped_and_good_lines_still_assigned(batch, stocked):
    text = ("1,correios\n"
            "2\n"                                     # too few fields
            "3,correios,1,extra\n"                    # too many fields
            '{"order_id": "4", "carrier": \n'         # malformed JSON
            "5,dhl\n"                                 # unknown carrier
            f"{'x' * 65},correios\n"                  # over-long order id
            "7\x1b[31m,correios\n"                    # control character
            '{"order_id": "8\\u0000", "carrier": "correios"}\n'
            '["9", "correios"]\n'                     # JSON that is not an object
            '{"carrier": "correios"}\n'               # missing order id
            "11,correios,0\n"                         # parcel out of range
            ",correios\n"                             # empty order id
            "13,\n"                                   # empty carrier
            "14,jadlog\n")
    r = batch(text)
    assert r.returncode == 3, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["1", "correios"], ["14", "jadlog"]]
    errors = stderr_lines(r)
    reported = [int(line.split(":")[0].removeprefix("line ")) for line in errors if line.startswith("line ")]
    assert reported == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], r
    assert errors[-1].startswith("trackctl: error: 12 of 14 lines rejected"), r
    by_line = {int(line.split(":")[0].removeprefix("line ")): line for line in errors if line.startswith("line ")}
    assert "unknown carrier 'dhl'" in by_line[5]
    assert "65 characters" in by_line[6]
    assert "control character" in by_line[7] and "control character" in by_line[8]
    assert "not valid JSON" in by_line[4]
    assert set(assigned(stocked)) == {("1", "correios", 1), ("14", "jadlog", 1)}


def test_bad_line_never_leaks_raw_control_characters_to_stderr(batch, stocked):
    r = batch("1,corr\x1b]0;pwned\x07eios\n")
    assert r.returncode == 3, r
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr


def test_invalid_utf8_line_is_rejected_and_the_rest_assigned(batch, stocked):
    r = batch(b"1,correios\n2\xff\xfe,correios\n3,jadlog\n")
    assert r.returncode == 3, r
    assert [row[0] for row in csv_rows(r.stdout)] == ["1", "3"]
    assert stderr_lines(r)[0] == "line 2: not valid UTF-8"


def test_lone_surrogate_in_json_is_rejected_and_the_rest_assigned(batch, stocked):
    r = batch('{"order_id": "a\\ud800", "carrier": "correios"}\n2,jadlog\n')
    assert r.returncode == 3, r
    assert [row[0] for row in csv_rows(r.stdout)] == ["2"]
    assert stderr_lines(r)[0].startswith("line 1: ")


def test_over_long_line_is_rejected_without_stopping_the_batch(batch, stocked):
    long_line = "1," + "c" * (MAX_LINE_BYTES * 3) + "\n"
    r = batch("0,correios\n" + long_line + "2,jadlog\n")
    assert r.returncode == 3, r
    assert [row[0] for row in csv_rows(r.stdout)] == ["0", "2"]
    assert stderr_lines(r)[0] == f"line 2: line is longer than {MAX_LINE_BYTES} bytes"


def with_neighbours(line: str, ending: str) -> bytes:
    """The line as line 2 of an input; with no ending it is the last line, else line 3 follows."""
    return ("0,jadlog\n" + line + ending + ("3,jadlog\n" if ending else "")).encode()


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_line_of_exactly_the_limit_is_accepted(ending):
    head = '{"order_id": "1", "carrier": "correios", "pad": "'
    line = head + "p" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(line.encode()) == MAX_LINE_BYTES
    records = list(parse_records(io.BytesIO(with_neighbours(line, ending))))
    assert records[:2] == [(1, {"order_id": "0", "carrier": "jadlog"}), (2, {"order_id": "1", "carrier": "correios"})]
    assert records[2:] == ([(3, {"order_id": "3", "carrier": "jadlog"})] if ending else [])


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_line_one_byte_over_the_limit_is_rejected(ending):
    line = "1," + "c" * (MAX_LINE_BYTES - 1)
    records = list(parse_records(io.BytesIO(with_neighbours(line, ending))))
    assert records[:2] == [(1, {"order_id": "0", "carrier": "jadlog"}),
                           (2, {"error": f"line is longer than {MAX_LINE_BYTES} bytes"})]
    assert records[2:] == ([(3, {"order_id": "3", "carrier": "jadlog"})] if ending else [])


def test_crlf_line_endings_and_utf8_bom_are_accepted(batch, stocked):
    r = batch("\ufefforder,carrier\r\n1,correios\r\n2,jadlog\r\n".encode())
    assert r.returncode == 0, r
    assert [row[:2] for row in csv_rows(r.stdout)] == [["1", "correios"], ["2", "jadlog"]]


def test_blank_lines_are_skipped_but_counted_in_line_numbers(batch, stocked):
    r = batch("1,correios\n\n   \n4\n")
    assert r.returncode == 3, r
    assert stderr_lines(r)[0].startswith("line 4: ")


def test_empty_stdin_succeeds_with_a_warning(batch, stocked):
    r = batch("")
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert "warning" in r.stderr and "no input" in r.stderr


def test_only_bad_lines_exit_3_and_write_nothing(batch, stocked):
    r = batch("1,dhl\n2\n")
    assert r.returncode == 3, r
    assert r.stdout == ""
    assert assigned(stocked) == {}


# --- idempotence, duplicates, chunks, dry pools ------------------------------------------------


def test_duplicate_lines_in_one_input_return_the_same_code_not_new(batch, stocked):
    r = batch("1,correios\n2,correios\n1,correios\n1,3\n", "--format", "jsonl")
    assert r.returncode == 0, r
    docs = jsonl(r.stdout)
    assert [d["order_id"] for d in docs] == ["1", "2", "1", "1"]
    assert docs[0]["code"] == docs[2]["code"] == docs[3]["code"] != docs[1]["code"]
    assert [d["new"] for d in docs] == [True, True, False, False]
    assert len(assigned(stocked)) == 2


def test_rerunning_the_same_input_returns_the_same_codes_not_new(batch, stocked):
    text = "".join(f"{i},{'correios' if i % 2 else 'jadlog'}\n" for i in range(50))
    first = batch(text, "--format", "jsonl")
    again = batch(text, "--format", "jsonl")
    assert first.returncode == again.returncode == 0, (first, again)
    one, two = jsonl(first.stdout), jsonl(again.stdout)
    assert [d["code"] for d in two] == [d["code"] for d in one]
    assert all(d["new"] for d in one) and not any(d["new"] for d in two)
    assert len({d["code"] for d in one}) == 50
    assert free_count(stocked) == 200 - 50


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])
def test_batch_larger_than_one_chunk_keeps_input_order(stocked, overlap):
    lines = [(i + 1, {"order_id": f"o{(i * 7) % 23}", "carrier": "correios" if i % 3 else "jadlog"})
             for i in range(60)]
    lines.insert(10, (999, {"error": "bad"}))
    outcomes = list(assign_lines(stocked, lines, chunk_size=7, overlap=overlap))
    assert [o.line for o in outcomes] == [n for n, _ in lines]
    good = [o for o in outcomes if o.error is None]
    assert [(o.assignment.order_id, o.assignment.carrier) for o in good] == [
        (f["order_id"], f["carrier"]) for n, f in lines if "error" not in f]
    codes = assigned(stocked)
    for o in good:
        assert codes[(o.assignment.order_id, o.assignment.carrier, 1)] == o.assignment.code
    seen: set = set()
    for o in good:  # the first line of each pair is new, every repeat (same chunk or later) is not
        key = (o.assignment.order_id, o.assignment.carrier)
        assert o.assignment.new == (key not in seen), o
        seen.add(key)
    assert len(set(codes.values())) == len(codes) == len(seen)


def test_unknown_carrier_learned_mid_batch_is_used(stocked):
    def records():
        yield 1, {"order_id": "1", "carrier": "correios"}
        add_carrier(stocked, "loggi", 11)
        yield 2, {"order_id": "2", "carrier": "loggi"}
        yield 3, {"order_id": "3", "carrier": "11"}
    outcomes = list(assign_lines(stocked, records(), chunk_size=1))
    assert [o.error for o in outcomes] == [None, None, None]
    assert [o.assignment.carrier for o in outcomes] == ["correios", "loggi", "loggi"]


def test_batch_on_an_empty_pool_generates_codes_inline_and_warns(cli, conn):
    add_carrier(conn, "correios", 3)
    r = cli("assign", "--batch", "--format", "jsonl", input="1,correios\n2,correios\n1,correios\n")
    assert r.returncode == 0, r
    docs = jsonl(r.stdout)
    assert [d["new"] for d in docs] == [True, True, False]
    assert docs[0]["code"] == docs[2]["code"] != docs[1]["code"]
    assert "warning" in r.stderr and "inline" in r.stderr
    assert free_count(conn) == 0
    assert len(assigned(conn)) == 2


def test_batch_partly_served_by_the_pool_and_partly_inline(conn):
    add_carrier(conn, "correios", 3)
    conn.execute("UPDATE sequencing.pool SET target = 3")
    refill(conn)
    records = [(i, {"order_id": str(i), "carrier": "correios"}) for i in range(1, 6)]
    outcomes = list(assign_lines(conn, records))
    assert [o.assignment.generated_inline for o in outcomes] == [False, False, False, True, True]
    assert len({o.assignment.code for o in outcomes}) == 5
    assert free_count(conn) == 0


@pytest.mark.parametrize("line", [
    "1,correios,\u00b2",                                      # a Unicode digit Python's int() refuses
    "1,correios," + "9" * 5000,                               # more digits than int() converts
    '{"order_id": "1", "carrier": "correios", "parcel": "\u00b2"}',
    '{"order_id": "1", "carrier": "correios", "x": ' + "[" * 4000 + "]" * 4000 + "}",  # nested too deep
])
def test_hostile_lines_are_rejected_without_stopping_the_batch(batch, stocked, line):
    r = batch(f"0,jadlog\n{line}\n2,jadlog\n")
    assert r.returncode == 3, r
    assert [row[0] for row in csv_rows(r.stdout)] == ["0", "2"]
    errors = stderr_lines(r)
    assert errors[0].startswith("line 2: ") and len(errors[0]) < 200, r
    assert "unexpected" not in r.stderr


def test_numeric_carrier_ids_read_the_same_in_batch_and_single_assign(batch, stocked):
    single = assign(stocked, "1", "03")
    r = batch("1,03\n1,3\n", "--format", "jsonl")
    assert r.returncode == 0, r
    assert [(d["carrier"], d["code"]) for d in jsonl(r.stdout)] == [("correios", single.code)] * 2


def test_batch_into_a_closed_pipe_exits_quietly(cli, stocked, tmp_path):
    import subprocess

    from conftest import trackctl_command

    path = tmp_path / "orders.csv"
    path.write_text("".join(f"{i},correios\n" for i in range(3000)))
    cmd = " ".join(trackctl_command()) + f" assign --input {path} | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=cli.env)
    assert proc.returncode == 0, proc
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc


# -- the overlapped path: each chunk's transaction in a background thread ------------------------


def test_an_error_in_a_background_chunk_reaches_the_caller_and_leaves_whole_chunks(conn):
    # Chunks of 4 lines; a constraint added here makes the third chunk's statement fail in the
    # database (what a lost server or a bug would do; a used-up pool only refuses its lines).
    add_carrier(conn, "correios")
    refill(conn)
    conn.execute("ALTER TABLE sequencing.tracking ADD CONSTRAINT test_no_o9 CHECK (order_id IS DISTINCT FROM 'o9')")
    records = [(i + 1, {"order_id": f"o{i}", "carrier": "correios"}) for i in range(12)]
    seen = []
    with pytest.raises(psycopg.errors.CheckViolation, match="test_no_o9"):
        for outcome in assign_lines(conn, records, chunk_size=4, overlap=True):
            seen.append(outcome.assignment.order_id)
    assert seen == [f"o{i}" for i in range(8)]  # the two chunks that fit, in order
    assert sorted(o for o, _, _ in assigned(conn)) == sorted(seen)  # the third left nothing behind
    assert conn.info.transaction_status.name == "IDLE"
    assert assign(conn, "o0", "correios").new is False  # the connection is fit for more work


def test_a_consumer_that_stops_reading_leaves_whole_chunks_and_an_idle_connection(stocked):
    records = [(i + 1, {"order_id": f"o{i}", "carrier": "correios"}) for i in range(40)]
    outcomes = assign_lines(stocked, records, chunk_size=10, overlap=True)
    first = next(outcomes)  # chunk 1 is done and chunk 2 was sent when this comes back
    outcomes.close()
    assert first.assignment.order_id == "o0"
    done = sorted(int(o[1:]) for o, _, _ in assigned(stocked))
    assert done in (list(range(10)), list(range(20))), done  # chunk 2 either whole or not at all
    assert stocked.info.transaction_status.name == "IDLE"
    rest = list(assign_lines(stocked, records, chunk_size=10, overlap=True))  # a rerun completes it
    assert [o.assignment.new for o in rest] == [i >= len(done) for i in range(40)]
    assert len({o.assignment.code for o in rest}) == 40


def test_batch_interrupted_while_reading_input_exits_130_in_one_line_with_whole_chunks(cli, stocked):
    # The batch reads from a pipe that stays open: the interrupt lands while the main thread
    # waits for input and the second chunk may still be in the database.
    from conftest import trackctl_command
    import signal
    import subprocess
    import time

    from trackctl.assign import CHUNK

    stocked.execute("UPDATE sequencing.pool SET target = %s WHERE name = 'default'", (3 * CHUNK,))
    refill(stocked)
    proc = subprocess.Popen(trackctl_command() + ["assign", "--batch"], env=cli.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = "".join(f"{i},correios\n" for i in range(2 * CHUNK + 10)).encode()
    proc.stdin.write(lines)
    proc.stdin.flush()
    printed = b""
    while printed.count(b"\n") < CHUNK:  # the first chunk is printed only once the second is sent
        more = proc.stdout.read1(65536)
        assert more, proc.stderr.read()
        printed += more
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    printed += out
    assert proc.returncode == 130, err  # typer ends an interrupted command with 130, quietly
    assert b"Traceback" not in err and b"error" not in err, err
    done = assigned(stocked)
    assert len(done) in (CHUNK, 2 * CHUNK), len(done)  # whole chunks: the one in flight, or not
    rows = [line.split(",") for line in printed.decode().splitlines()]
    # Every answer printed is committed, in input order; the signal may land while the second
    # chunk's answers are being written, so the printed lines are the first chunk and possibly part
    # or all of the second (the rest of a committed chunk is found again by a rerun: idempotent).
    assert CHUNK <= len(rows) <= len(done), (len(rows), len(done))
    assert [o for o, _, _ in rows] == [str(i) for i in range(len(rows))]
    assert all(done[(o, c, 1)] == code for o, c, code in rows)


def test_a_carrier_added_while_the_batch_runs_is_used_from_the_next_chunk_on(stocked, db_url):
    from trackctl import db

    records = [(1, {"order_id": "a1", "carrier": "correios"}), (2, {"order_id": "a2", "carrier": "latecomer"}),
               (3, {"order_id": "a3", "carrier": "latecomer"}), (4, {"order_id": "a4", "carrier": "latecomer"})]
    outcomes = assign_lines(stocked, iter(records), chunk_size=3)
    first = [next(outcomes) for _ in range(3)]
    assert first[0].assignment is not None
    assert [o.error.startswith("unknown carrier 'latecomer'") for o in first[1:]] == [True, True], first
    other = db.open_connection(db_url)
    add_carrier(other, "latecomer", pool="default")
    other.close()
    (last,) = list(outcomes)
    assert last.line == 4 and last.assignment is not None and last.assignment.carrier == "latecomer", last


def test_many_distinct_unknown_carriers_are_each_rejected_and_the_good_lines_assigned(cli, stocked):
    lines = [f"u{i},c{i:06d}{'x' * 200}" if i % 10 else f"g{i},correios" for i in range(3000)]
    r = cli("assign", "--batch", input="\n".join(lines) + "\n")
    assert r.returncode == 3, r.stderr[-500:]
    assert len(r.stdout.splitlines()) == 300
    errors = [e for e in r.stderr.splitlines() if e.startswith("line ")]
    assert len(errors) == 2700 and all("unknown carrier 'c" in e for e in errors), errors[:3]


def test_control_characters_at_the_edge_of_a_csv_field_are_not_trimmed_away(batch, stocked):
    r = batch("42\x85,correios\n43\x1f,correios\n 44\t,correios\n")
    assert r.returncode == 3, r
    assert [line.split(",")[0] for line in r.stdout.splitlines()] == ["44"], r
    assert [e.split(":")[0] for e in r.stderr.splitlines()[:2]] == ["line 1", "line 2"], r


@pytest.mark.parametrize("lines", ["42,correios\n43,correios\n", "42,correios\n"])  # a big chunk and a paused one
def test_a_cancelled_orders_line_is_refused_in_a_batch_as_in_a_single_assign(batch, stocked, lines):
    from trackctl.shipments import cancel

    old = assign(stocked, "42", "correios").code
    cancel(stocked, "42")
    r = batch(lines)
    assert r.returncode == 3, r
    assert old not in r.stdout  # a cancelled code is never handed out again
    assert stderr_lines(r)[0] == (f"line 1: order 42 with correios was cancelled: its code {old} is not handed "
                                  "out again (a new parcel number gets a new code)")
    r = batch("42,correios,2\n")
    assert r.returncode == 0 and old not in r.stdout, r
