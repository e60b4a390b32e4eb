"""Migrations runner (`trackctl db migrate|status`), schema checks, database selection and connection errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import trackctl.db
from conftest import trackctl_command
from trackctl.db import (SQL, ensure_schema, latest_version, migrate, migration_status,
                         migrations, schema_version)
from trackctl.errors import MigrationEdited, SchemaOutOfDate

UNREACHABLE = "postgresql://u:secretpw@127.0.0.1:1/x"


@pytest.fixture
def empty_db(pg_proc):
    """URL of a brand-new database on the test server with no trackctl schema at all."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    i = pg_proc
    admin = make_conninfo(host=i.host, port=i.port, user=i.user, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(host=i.host, port=i.port, user=i.user, dbname=name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def versions() -> list[int]:
    return [m.version for m in migrations()]


def applied_rows(conn) -> list[tuple]:
    return conn.execute("SELECT version, name, checksum, applied_at FROM sequencing.schema_migration "
                        "ORDER BY version").fetchall()


# --- migrate and status ----------------------------------------------------------------------


def test_fresh_test_database_is_at_the_latest_version(conn):
    assert schema_version(conn) == latest_version() == versions()[-1]
    assert [r[0] for r in applied_rows(conn)] == versions()
    assert [r[2] for r in applied_rows(conn)] == [m.checksum for m in migrations()]


def test_migrate_is_a_no_op_when_up_to_date(cli, conn):
    before = applied_rows(conn)
    r = cli("db", "migrate")
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert r.stderr == "trackctl: schema is up to date\n"
    assert applied_rows(conn) == before
    assert migrate(conn) == []


def test_db_status_shows_every_migration_applied(cli):
    r = cli("db", "status", "--format", "json")
    assert r.returncode == 0, r
    states = json.loads(r.stdout)
    assert [(s["version"], s["name"], s["state"]) for s in states] == [
        (m.version, m.name, "applied") for m in migrations()]
    assert all(s["applied_at"] for s in states)
    plain = cli("db", "status")
    assert plain.stdout.splitlines()[0].startswith("1\t0001_foundation.sql\tapplied\t")


def test_empty_database_is_migrated_by_db_migrate(cli, empty_db):
    env = {"TRACKCTL_DATABASE_URL": empty_db}
    r = cli("db", "status", "--format", "json", env_extra=env)
    assert r.returncode == 0, r
    assert [(s["version"], s["state"], s["applied_at"]) for s in json.loads(r.stdout)] == [
        (v, "pending", None) for v in versions()]

    r = cli("pool", "list", env_extra=env)
    assert r.returncode == 5, r
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert "run 'trackctl db migrate'" in r.stderr and "version 0" in r.stderr

    r = cli("db", "migrate", env_extra=env)
    assert r.returncode == 0, r
    assert r.stderr.splitlines() == [f"trackctl: applied {m.name}" for m in migrations()]

    r = cli("pool", "list", env_extra=env)
    assert r.returncode == 0, r
    assert r.stdout == "default\tuuid\t200\t0\t0\n"
    r = cli("db", "migrate", env_extra=env)
    assert r.stderr == "trackctl: schema is up to date\n"


def test_schema_behind_the_code_makes_commands_exit_5_until_migrated(cli, empty_db):
    # Bring the database to the first migration only, as an older trackctl would have left it.
    first = migrations()[0]
    with psycopg.connect(empty_db, autocommit=True) as c:
        c.execute(SQL.bootstrap)
        c.execute(first.text)
        c.execute(SQL.record, (first.version, first.name, first.checksum))
    env = {"TRACKCTL_DATABASE_URL": empty_db}
    if latest_version() > first.version:
        for args in (("pool", "list"), ("assign", "42", "correios"), ("refill",)):
            r = cli(*args, env_extra=env)
            assert r.returncode == 5, r
            assert r.stdout == ""
            assert r.stderr.splitlines()[-1].endswith("run 'trackctl db migrate')"), r
        r = cli("db", "status", "--format", "json", env_extra=env)
        assert [s["state"] for s in json.loads(r.stdout)] == ["applied"] + ["pending"] * (len(versions()) - 1)
    assert cli("db", "migrate", env_extra=env).returncode == 0
    r = cli("pool", "list", env_extra=env)
    assert r.returncode == 0, r


def test_a_migration_newer_than_the_code_is_applied_by_migrate(conn, tmp_path, monkeypatch):
    folder = tmp_path / "sql"
    shutil.copytree(trackctl.db.sql_dir(), folder)
    (folder / "9999_later.sql").write_text("CREATE TABLE sequencing.later_feature (id integer);\n")
    monkeypatch.setattr(trackctl.db, "sql_dir", lambda: folder)
    with pytest.raises(SchemaOutOfDate) as info:
        ensure_schema(conn)
    assert "trackctl db migrate" in str(info.value)
    assert [s.state for s in migration_status(conn)][-1] == "pending"
    assert [m.name for m in migrate(conn)] == ["9999_later.sql"]
    ensure_schema(conn)
    assert conn.execute("SELECT to_regclass('sequencing.later_feature') IS NOT NULL").fetchone() == (True,)


def test_a_failing_migration_is_rolled_back_and_not_recorded(conn, tmp_path, monkeypatch):
    current = schema_version(conn)
    folder = tmp_path / "sql"
    shutil.copytree(trackctl.db.sql_dir(), folder)
    (folder / "9998_half.sql").write_text("CREATE TABLE sequencing.half (id integer);\nSELECT 1/0;\n")
    monkeypatch.setattr(trackctl.db, "sql_dir", lambda: folder)
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(conn)
    assert conn.execute("SELECT to_regclass('sequencing.half')").fetchone() == (None,)
    assert schema_version(conn) == current


# --- edited and unknown migrations -------------------------------------------------------------


def test_edited_migration_file_is_refused(conn, tmp_path, monkeypatch):
    folder = tmp_path / "sql"
    shutil.copytree(trackctl.db.sql_dir(), folder)
    first = sorted(folder.glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a harmless-looking edit\n")
    monkeypatch.setattr(trackctl.db, "sql_dir", lambda: folder)
    before = applied_rows(conn)
    with pytest.raises(MigrationEdited) as info:
        migrate(conn)
    assert info.value.exit_code == 5
    assert first.name in info.value.message
    assert [s.state for s in migration_status(conn)][0] == "edited"
    assert applied_rows(conn) == before


def test_cli_refuses_to_migrate_when_an_applied_migration_changed(cli, conn):
    # The database remembers a different checksum for 0001 than the file now has: the same
    # comparison the runner makes when someone edits an applied file.
    conn.execute("UPDATE sequencing.schema_migration SET checksum = repeat('0', 64) WHERE version = 1")
    r = cli("db", "migrate")
    assert r.returncode == 5, r
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("trackctl: error: migration 0001_foundation.sql was edited after it was applied")
    assert "new numbered migration" in lines[0]
    assert "Traceback" not in r.stderr
    r = cli("db", "status", "--format", "json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)[0]["state"] == "edited"


def test_database_newer_than_the_code_asks_to_upgrade_trackctl(cli, conn):
    conn.execute("INSERT INTO sequencing.schema_migration (version, name, checksum) VALUES (9999, '9999_future.sql', 'x')")
    r = cli("pool", "list")
    assert r.returncode == 5, r
    assert "upgrade trackctl" in r.stderr
    r = cli("db", "migrate")
    assert r.returncode == 5, r
    assert "upgrade trackctl" in r.stderr
    r = cli("db", "status", "--format", "json")
    assert json.loads(r.stdout)[-1] == {"version": 9999, "name": "9999_future.sql", "state": "unknown",
                                        "applied_at": json.loads(r.stdout)[-1]["applied_at"]}


# --- connection errors and database selection --------------------------------------------------


@pytest.mark.parametrize("args", [("pool", "list"), ("assign", "42", "correios"), ("db", "migrate"),
                                  ("db", "status"), ("refill",), ("status", "--order", "42")])
def test_unreachable_database_is_exit_4_with_one_line_and_no_password(cli, args):
    r = cli(*args, env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert r.returncode == 4, r
    assert r.stdout == ""
    # The error is the last line (a cron job such as refill may log its failed run before it).
    assert r.stderr.splitlines()[-1].startswith("trackctl: error: cannot connect to the database at 127.0.0.1:1/x"), r
    assert "Traceback" not in r.stderr
    assert "secretpw" not in r.stdout + r.stderr


def test_unreachable_database_gives_one_line_for_assign(cli):
    r = cli("assign", "42", "correios", env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert len(r.stderr.splitlines()) == 1, r


def test_batch_on_an_unreachable_database_is_exit_4(cli):
    r = cli("assign", "--batch", input="1,correios\n", env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert r.returncode == 4, r
    assert r.stdout == "" and "secretpw" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r


@pytest.mark.parametrize("url", [
    "postgresql://u:secretpw@127.0.0.1:notaport/x",
    "host=127.0.0.1 port=1 user=u password=secretpw dbname=x",
    "postgresql://u:secretpw@127.0.0.1:1/x?sslmode=bogus",
    "postgresql://u:secretpw@[::1/x",
    "not a url password=secretpw",
])
def test_bad_database_urls_never_show_the_password(cli, url):
    r = cli("pool", "list", env_extra={"TRACKCTL_DATABASE_URL": url})
    assert r.returncode in (2, 4), r
    assert len(r.stderr.splitlines()) == 1, r
    assert "secretpw" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_a_traceback_but_not_the_password(cli):
    r = cli("--debug", "--database-url", UNREACHABLE, "pool", "list")
    assert r.returncode == 4, r
    assert "Traceback (most recent call last)" in r.stderr
    assert "DatabaseUnavailable" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("trackctl: error: cannot connect")
    assert "secretpw" not in r.stdout + r.stderr


def test_database_url_flag_wins_over_the_environment(cli, db_url):
    r = cli("--database-url", db_url, "pool", "list", env_extra={"TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert r.returncode == 0, r
    assert r.stdout.startswith("default\t")


def test_database_url_is_read_from_dotenv_in_the_working_directory(cli, db_url, tmp_path):
    (tmp_path / ".env").write_text(f"TRACKCTL_DATABASE_URL='{db_url}'\n")
    env = {k: v for k, v in cli.env.items() if k != "TRACKCTL_DATABASE_URL"}
    proc = subprocess.run(trackctl_command() + ["pool", "list"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("default\t")
    assert not (tmp_path / "home").exists()  # no embedded server was started
    # The environment wins over the file.
    proc = subprocess.run(trackctl_command() + ["pool", "list"], capture_output=True, text=True, cwd=tmp_path,
                          env={**env, "TRACKCTL_DATABASE_URL": UNREACHABLE})
    assert proc.returncode == 4, proc


def test_db_stop_with_a_configured_url_leaves_the_server_alone(cli):
    r = cli("db", "stop")
    assert r.returncode == 0, r
    assert "does not manage" in r.stderr
    assert cli("pool", "list").returncode == 0


def test_a_gap_in_applied_migrations_is_reported_not_hidden_by_a_higher_version(conn):
    # A database migrated while a middle migration did not exist yet must still be told to migrate.
    conn.execute("DELETE FROM sequencing.schema_migration WHERE version = 2")
    with pytest.raises(SchemaOutOfDate) as err:
        ensure_schema(conn)
    assert "lacks migration 2" in err.value.message
    assert "trackctl db migrate" in str(err.value)


def test_a_server_with_no_free_connection_is_waited_for_briefly_then_named(conn, db_url):
    # A role limited to one connection makes the real server refuse a second one, as a server at
    # max_connections does: trackctl waits a little for a free slot, then fails in one line.
    import threading

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from trackctl.errors import DatabaseUnavailable

    role = f"full_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    try:
        url = make_conninfo(**{**conninfo_to_dict(db_url), "user": role})
        holder = trackctl.db.open_connection(url)
        with pytest.raises(DatabaseUnavailable, match="too many connections"):
            trackctl.db.open_connection(url, wait_when_full=0.3)
        threading.Timer(0.5, holder.close).start()  # a slot frees up while the next one waits
        late = trackctl.db.open_connection(url)
        assert late.execute("SELECT current_user").fetchone()[0] == role
        late.close()
    finally:
        conn.execute(f'DROP ROLE "{role}"')


def _prepared_after_repeats(url: str) -> int:
    conn = trackctl.db.open_connection(url)
    try:
        for _ in range(8):
            conn.execute("SELECT count(*) FROM sequencing.pool WHERE target > %s", (0,))
        return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    finally:
        conn.close()


def test_prepared_statements_can_be_turned_off_for_a_transaction_mode_pooler(db_url, monkeypatch):
    monkeypatch.delenv("TRACKCTL_PREPARED_STATEMENTS", raising=False)
    assert _prepared_after_repeats(db_url) >= 1  # psycopg's default: prepared after 5 runs
    monkeypatch.setenv("TRACKCTL_PREPARED_STATEMENTS", "off")
    assert _prepared_after_repeats(db_url) == 0


def test_a_wrong_prepared_statements_setting_is_a_usage_error(cli):
    r = cli("pool", "list", env_extra={"TRACKCTL_PREPARED_STATEMENTS": "maybe"})
    assert r.returncode == 2, r
    assert r.stderr.startswith("trackctl: error: TRACKCTL_PREPARED_STATEMENTS is 'maybe'") and len(r.stderr.splitlines()) == 1, r


def test_a_port_that_is_no_number_is_a_bad_url_not_an_unreachable_server(cli):
    r = cli("pool", "list", env_extra={"TRACKCTL_DATABASE_URL": "postgresql://u:secretpw@127.0.0.1:notaport/x"})
    assert r.returncode == 2, r
    assert "invalid port 'notaport'" in r.stderr and "secretpw" not in r.stderr and len(r.stderr.splitlines()) == 1, r


def test_debug_traceback_of_a_malformed_url_never_shows_the_password(cli):
    r = cli("--debug", "pool", "list", env_extra={"TRACKCTL_DATABASE_URL": "postgresql://u:secretpw@[::1/x"})
    assert r.returncode == 2, r
    assert "Traceback" in r.stderr and "secretpw" not in r.stderr, r


def migrate_before(conn, version: int, tmp_path, monkeypatch) -> None:
    """Apply only the migrations older than `version`: the schema a database had before it."""
    folder = tmp_path / "sql"
    folder.mkdir()
    for m in migrations():
        if m.version < version:
            shutil.copy(m.path, folder / m.name)
    with monkeypatch.context() as patch:
        patch.setattr(trackctl.db, "sql_dir", lambda: folder)
        migrate(conn)


def test_migration_0009_gives_existing_free_codes_tickets_in_the_order_claims_took_them(empty_db, tmp_path,
                                                                                        monkeypatch):
    from trackctl.assign import assign

    with psycopg.connect(empty_db, autocommit=True) as c:
        migrate_before(c, 9, tmp_path, monkeypatch)  # the schema before tickets, with data in it
        c.execute("INSERT INTO sequencing.pool (name) VALUES ('other')")
        c.execute("INSERT INTO sequencing.carrier (id, name, pool_id) VALUES (3, 'correios', 1)")
        c.execute("INSERT INTO sequencing.tracking (tracking_id, pool_id) "
                  "SELECT p || g, (SELECT id FROM sequencing.pool WHERE name = CASE p WHEN 'd-' THEN 'default' "
                  "ELSE 'other' END) FROM generate_series(1, 3) g, unnest(ARRAY['d-', 'o-']) p")
        c.execute("UPDATE sequencing.tracking SET order_id = 'x', freightcarrier_id = 3, parcel = 1, status = 'pending', "
                  "assigned_at = now() WHERE tracking_id = 'd-1'")
        assert [m.version for m in migrate(c)][0] == 9
        rows = c.execute("SELECT tracking_id, ticket FROM sequencing.tracking ORDER BY tracking_id").fetchall()
        assert rows == [("d-1", None), ("d-2", 1), ("d-3", 2), ("o-1", 1), ("o-2", 2), ("o-3", 3)]
        ends = c.execute("SELECT name, ticket_end FROM sequencing.pool ORDER BY name").fetchall()
        assert ends == [("default", 2), ("other", 3)]
        assert [assign(c, o, "correios").code for o in ("y1", "y2")] == ["d-2", "d-3"]
        assert assign(c, "y3", "correios").generated_inline


def test_migration_0013_keeps_every_issued_event_id_and_derives_new_ones_from_row_ids(empty_db, tmp_path,
                                                                                        monkeypatch):
    from trackctl import outbox

    with psycopg.connect(empty_db, autocommit=True) as c:
        migrate_before(c, 13, tmp_path, monkeypatch)  # ids stored as 0005 made them, and one of 0003's form
        c.execute("INSERT INTO sequencing.outbox (event_id, type, payload) "
                  "VALUES ('evt_01JD3Q8Z8X7K2M4N5P6R7S8T9V', 'shipment.stale', '{}')")
        issued = ["evt_01JD3Q8Z8X7K2M4N5P6R7S8T9V"] + [r[0] for r in c.execute(
            "INSERT INTO sequencing.outbox (type, payload) SELECT 'shipment.stale', '{}' FROM generate_series(1, 3) "
            "RETURNING event_id")]
        assert all(e.startswith("evt_1") for e in issued[1:]), issued  # 0005's: the time first
        assert [m.version for m in migrate(c)] == [13]
        kept = [r[0] for r in c.execute("SELECT sequencing.event_id(o) FROM sequencing.outbox o ORDER BY id")]
        assert kept == issued
        body = c.execute("SELECT sequencing.event_body(o) FROM sequencing.outbox o ORDER BY id LIMIT 1").fetchone()[0]
        assert json.loads(body)["id"] == issued[0]
        new = outbox.record(c, "shipment.stale", {"n": 9})
        row_id = c.execute("SELECT max(id) FROM sequencing.outbox").fetchone()[0]
        assert new == f"evt_{row_id:026X}" and new not in issued
        ping = c.execute("SELECT sequencing.new_event_id()").fetchone()[0]
        assert ping == f"evt_{row_id + 1:026X}"  # a number no event will get
        assert outbox.record(c, "shipment.stale", {"n": 10}) == f"evt_{row_id + 2:026X}"
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
            c.execute("UPDATE sequencing.outbox SET legacy_event_id = NULL WHERE legacy_event_id IS NOT NULL")
        with pytest.raises(psycopg.errors.CheckViolation):  # no stored id for a new row
            c.execute("INSERT INTO sequencing.outbox (legacy_event_id, type, payload) "
                      "VALUES ('evt_01JD3Q8Z8X7K2M4N5P6R7S8T9W', 'shipment.stale', '{}')")
