"""`trackctl metrics`: Prometheus text that prometheus_client parses back; an atomically replaced textfile."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.errors import InvalidValue
from trackctl.metrics import TEXTFILE_NAME, exposition, read_metrics, write_textfile
from trackctl.pools import refill


def samples(text: str) -> dict[tuple, float]:
    """Return {(sample name, sorted labels): value} of a text exposition (parsing it fully)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_count_pools_shipments_and_jobs(cli, conn):
    add_carrier(conn, "correios", 3)
    assert cli("refill").returncode == 0
    for order in ("1", "2", "3"):
        assign(conn, order, "correios")
    r = cli("metrics")
    assert r.returncode == 0, r
    assert r.stderr == ""
    got = samples(r.stdout)
    assert got[("trackctl_up", ())] == 1
    assert got[("trackctl_pool_codes", (("kind", "uuid"), ("pool", "default"), ("state", "free")))] == 197
    assert got[("trackctl_pool_codes", (("kind", "uuid"), ("pool", "default"), ("state", "assigned")))] == 3
    assert got[("trackctl_pool_target_codes", (("pool", "default"),))] == 200
    assert got[("trackctl_shipments", (("carrier", "correios"), ("status", "pending")))] == 3
    assert got[("trackctl_job_last_run_outcome", (("job", "refill"), ("outcome", "ok")))] == 1
    assert got[("trackctl_job_last_run_timestamp_seconds", (("job", "refill"),))] > 0
    assert ("trackctl_job_last_success_timestamp_seconds", (("job", "refill"),)) in got
    assert ("trackctl_job_last_run_duration_seconds", (("job", "refill"),)) in got


def test_the_library_exposition_parses_on_an_empty_database(conn):
    got = samples(exposition(read_metrics(conn)))
    assert got[("trackctl_up", ())] == 1
    assert got[("trackctl_pool_codes", (("kind", "uuid"), ("pool", "default"), ("state", "free")))] == 0


def test_textfile_is_written_with_mode_0644_and_no_temporary_file_left(cli, conn, tmp_path):
    refill(conn)
    out = tmp_path / "textfile"
    out.mkdir()
    r = cli("metrics", "--textfile-dir", str(out))
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert os.listdir(out) == [TEXTFILE_NAME]
    path = out / TEXTFILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert samples(path.read_text())[("trackctl_pool_codes", (("kind", "uuid"), ("pool", "default"),
                                                            ("state", "free")))] == 200


def test_an_unreachable_database_still_writes_trackctl_up_0(cli, tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    r = cli("metrics", "--textfile-dir", str(out),
            env_extra={"TRACKCTL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"})
    assert r.returncode == 4, r
    assert samples((out / TEXTFILE_NAME).read_text()) == {("trackctl_up", ()): 0}


def test_a_missing_textfile_directory_is_refused_and_never_created(cli, tmp_path):
    typo = tmp_path / "typo" / "dir"
    for env in ({}, {"TRACKCTL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"}):
        r = cli("metrics", "--textfile-dir", str(typo), env_extra=env)
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr.splitlines() == [r.stderr.strip()] and "does not exist" in r.stderr and str(typo) in r.stderr, r
        assert not typo.exists() and not typo.parent.exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    r = cli("metrics", "--textfile-dir", str(a_file))
    assert r.returncode == 2 and "is not a directory" in r.stderr, r
    with pytest.raises(InvalidValue, match="does not exist"):
        write_textfile(typo, "trackctl_up 1\n")
    assert not typo.parent.exists()


READER = textwrap.dedent("""
    import os, sys, time
    path, stop = sys.argv[1], sys.argv[2]
    reads = bad = 0
    while not os.path.exists(stop):
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            continue
        reads += 1
        # every version the writer makes starts with BEGIN and ends with END on its own line
        if not (text.startswith("# BEGIN ") and text.endswith("# END\\n")):
            bad += 1
    print(reads, bad)
""")


def test_a_reader_polling_the_textfile_never_sees_a_partial_file(tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(out / TEXTFILE_NAME), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        for version in range(300):
            body = "".join(f"trackctl_x{{n=\"{i}\"}} {version}\n" for i in range(2000 + version * 7))
            write_textfile(out, f"# BEGIN {version}\n{body}# END\n")
    finally:
        stop.touch()
        stdout, _ = reader.communicate(timeout=60)
    reads, bad = map(int, stdout.split())
    assert reads > 0
    assert bad == 0, f"{bad} of {reads} reads saw a partial file"
    assert sorted(os.listdir(out)) == [TEXTFILE_NAME]
