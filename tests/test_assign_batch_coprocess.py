"""`assign --batch` as a co-process (issues 11.6 and 14.1): a chunk ends at 5 000 lines or when the
input pauses, so a line written to a running batch is answered while the input stays open."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import trackctl_command
from trackctl.assign import assign_lines
from trackctl.batch_input import IDLE, parse_records, read_fd_lines, read_lines
from trackctl.carriers import add_carrier
from trackctl.pools import refill

# Only a bound against a hang when the answer never comes (the failure these tests look for); no
# test measures how fast an answer comes.
HANG = int(os.environ.get("COPROCESS_HANG", "120"))


@pytest.fixture
def batch_cli(cli, conn):
    add_carrier(conn, "correios", 3)
    refill(conn)
    return cli


def codes(conn, *orders: str) -> dict[str, str]:
    return dict(conn.execute("SELECT order_id, tracking_id FROM sequencing.tracking WHERE order_id = ANY(%s)",
                             (list(orders),)).fetchall())


def read_line(stream) -> str:
    """One line from a pipe, waiting at most HANG seconds for it (a hang fails the test). The pipe
    must be unbuffered (bufsize=0): a buffered reader could hold the next answer where select()
    cannot see it."""
    ready, _, _ = select.select([stream], [], [], HANG)
    assert ready, "no answer while the input stayed open"
    return stream.readline().decode()


def start(cli, *args: str) -> subprocess.Popen:
    return subprocess.Popen(trackctl_command() + ["assign", "--batch", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env, bufsize=0)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_line_written_to_a_running_batch_is_answered_while_the_input_stays_open(batch_cli, conn, fmt):
    proc = start(batch_cli, "--format", fmt)
    try:
        answers = []
        for order in ("co-1", "co-2", "co-3"):
            proc.stdin.write(f"{order},correios\n".encode())
            proc.stdin.flush()
            answers.append(read_line(proc.stdout))
            assert proc.poll() is None  # still running, input still open
        stored = codes(conn, "co-1", "co-2", "co-3")  # committed before the input ended
        if fmt == "csv":
            got = {line.strip().split(",")[0]: line.strip().split(",")[2] for line in answers}
        else:
            got = {r["order_id"]: r["code"] for r in map(json.loads, answers)}
        assert got == stored and len(set(stored.values())) == 3
        proc.stdin.write(b"co-1,correios\n")  # idempotent, answered again the same
        proc.stdin.flush()
        again = read_line(proc.stdout)
        assert stored["co-1"] in again
    finally:
        out, err = proc.communicate(timeout=HANG)  # closes the input: the batch ends
    assert proc.returncode == 0, err
    assert out == b"" and err == b""


def test_ctrl_c_in_a_pause_keeps_every_answered_line(batch_cli, conn):
    proc = start(batch_cli)
    proc.stdin.write(b"int-1,correios\nint-2,correios\n")
    proc.stdin.flush()
    answered = {}
    for _ in range(2):
        order, _, code = read_line(proc.stdout).strip().split(",")
        answered[order] = code
    proc.send_signal(signal.SIGINT)  # the batch now waits for more input
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and len(err.splitlines()) <= 1, err
    assert codes(conn, "int-1", "int-2") == answered


def test_a_pause_in_piped_input_answers_the_lines_before_it(batch_cli, conn, tmp_path):
    """`(printf 'r1,c\\nr2,c\\n'; <pause>; printf 'r3,c\\n') | trackctl assign --batch`: r1 and r2 are
    answered during the pause. The pause lasts until the test has read both answers (a gate file),
    so the test does not depend on how long anything takes."""
    gate = tmp_path / "gate"
    script = (f"(printf 'r1,correios\\nr2,correios\\n'; while [ ! -e {gate} ]; do sleep 0.05; done; "
              f"printf 'r3,correios\\n') | {' '.join(trackctl_command())} assign --batch")
    proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=batch_cli.env, bufsize=0)
    try:
        first = [read_line(proc.stdout).split(",")[0] for _ in range(2)]
        assert first == ["r1", "r2"]
        assert set(codes(conn, "r1", "r2", "r3")) == {"r1", "r2"}  # r3 has not been written yet
    finally:
        gate.touch()
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    assert out.decode().split(",")[0] == "r3" and err == b""
    assert len(set(codes(conn, "r1", "r2", "r3").values())) == 3


def test_the_same_pause_with_a_sleep_answers_r1_and_r2_first(batch_cli, conn):
    """The issue's own command line: the two answers come first, in order, then r3's."""
    script = (f"(printf 'r1,correios\\nr2,correios\\n'; sleep 2; printf 'r3,correios\\n') | "
              f"{' '.join(trackctl_command())} assign --batch")
    proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=batch_cli.env, bufsize=0)
    first = [read_line(proc.stdout).split(",")[0] for _ in range(2)]
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0 and err == b"", err
    assert first == ["r1", "r2"] and out.decode().split(",")[0] == "r3"


# -- the library underneath --------------------------------------------------------------------

def test_a_pipe_that_pauses_gives_idle_once_every_arrived_line_is_out():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"a,c\nb,c\npart")
        lines = read_fd_lines(read_end)
        assert next(lines) == (1, b"a,c")
        assert next(lines) == (2, b"b,c")
        assert next(lines) is IDLE  # nothing more is ready: the half line waits for its end
        os.write(write_end, b"ial,c\n")
        assert next(lines) == (3, b"partial,c")
        os.close(write_end)
        write_end = -1
        assert list(lines) == []  # the end of input: no IDLE before it
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_file_read_whole_gives_no_idle(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes(b"".join(b"o%d,c\n" % i for i in range(30_000)))
    with open(path, "rb") as f:
        out = list(read_fd_lines(f.fileno()))
    assert IDLE not in out and len(out) == 30_000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bb,c", b"\r", b"\n", b"\r\n", b"x" * 7, b"y" * 9, b""]), max_size=30),
       st.integers(min_value=1, max_value=10))
def test_reading_the_descriptor_splits_lines_exactly_as_the_buffered_reader(parts, limit):
    data = b"".join(parts)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        direct = [x for x in read_fd_lines(f.fileno(), limit) if x is not IDLE]
    assert direct == list(read_lines(io.BytesIO(data), limit)), data


def test_a_chunk_ends_at_a_pause_with_every_answer_given_before_the_next_read(stocked):
    """Each line's outcome is out before the batch asks for the record after the pause."""
    outcomes = []

    def records():
        yield 1, {"order_id": "p-1", "carrier": "correios"}
        yield 2, {"order_id": "p-2", "carrier": "correios"}
        yield IDLE
        assert [o.line for o in outcomes] == [1, 2]  # answered before the input goes on
        yield 3, {"order_id": "p-3", "carrier": "correios"}

    for overlap in (False, True):
        outcomes.clear()
        for outcome in assign_lines(stocked, records(), overlap=overlap):
            outcomes.append(outcome)
        assert [o.line for o in outcomes] == [1, 2, 3]
        assert all(o.assignment is not None for o in outcomes)


def test_parse_records_passes_the_pause_through(tmp_path):
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        os.write(write_end, b"order,carrier\n1,c\n")
        got = parse_records(stream, "auto", follow=True)
        assert next(got) == (2, {"order_id": "1", "carrier": "c"})
        assert next(got) is IDLE
        os.close(write_end)
        assert list(got) == []


def test_a_small_chunk_ended_by_a_pause_keeps_every_batch_rule(conn):
    """A pause ends a chunk of a few lines, which takes the single claim per key: a repeated key in
    the chunk gets its first line's code (new only there), a dry pool makes its codes inline, an
    order assigned before gets its code back, not new."""
    from trackctl.assign import assign
    from trackctl.pools import create_pool

    add_carrier(conn, "correios", 3)
    create_pool(conn, "dry", target=5)
    add_carrier(conn, "drycarrier", 9, pool="dry")
    refill(conn, "default")
    before = assign(conn, "old", "correios").code

    def records():
        yield 1, {"order_id": "a", "carrier": "correios"}
        yield 2, {"order_id": "a", "carrier": "correios"}
        yield 3, {"order_id": "old", "carrier": "3"}
        yield 4, {"order_id": "b", "carrier": "drycarrier"}
        yield 5, {"order_id": "a", "carrier": "correios", "parcel": 2}
        yield IDLE

    out = {o.line: o.assignment for o in assign_lines(conn, records(), overlap=True)}
    assert sorted(out) == [1, 2, 3, 4, 5]
    assert out[1].code == out[2].code and out[1].new and not out[2].new
    assert out[3].code == before and not out[3].new
    assert out[4].generated_inline and out[4].new
    assert out[5].parcel == 2 and out[5].code not in (out[1].code, before)
    stored = dict(conn.execute("SELECT order_id || '/' || parcel, tracking_id FROM sequencing.tracking "
                               "WHERE order_id IS NOT NULL").fetchall())
    assert stored == {"a/1": out[1].code, "old/1": before, "b/1": out[4].code, "a/2": out[5].code}
    events = conn.execute("SELECT count(*) FROM sequencing.outbox WHERE type = 'tracking.assigned'").fetchone()[0]
    assert events == 4  # one per new code: a/1, old (its own assign), b, a/2
