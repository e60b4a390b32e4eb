"""Security checks of issue 7: no secret in any output, log, error or stored error text (webhook
URL credentials included); SQL text built only from constants or psycopg.sql, by an AST check that
is itself tested; safe file permissions for the metrics textfile, the embedded data directory and
everything trackctl writes under TRACKCTL_HOME."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from carrier_server import CarrierServer, Reply, http_json_event
from psycopg import sql
from sql_checker import SqlChecker, package_sources, sql_offenders
from webhook_endpoint import WebhookEndpoint

from trackctl import db, webhooks
from trackctl.assign import assign
from trackctl.carriers import add_carrier
from trackctl.pools import refill

pytestmark = pytest.mark.faults

PASSWORD = "Pw-9f3kQz7LmX2"
TOKEN = "tok-Zr8XwQ1vN6pT"
HOOK_TOKEN = "hooktok-Qm4Zr81Vx"
HOOK_PASSWORD = "hookpw-Lx72Kd0q"
# The runs every command gets: text logs as a script sees them, and JSON logs at debug level (the
# JSON formatter sees every record any run emits: a superset of `--log-format json` alone).
LOG_VARIANTS = ([], ["--log-format", "json", "--debug"])
# `--debug` with text logs changes what is printed only for the commands that set up text logging
# (the jobs: trackctl/cli/jobs.py start_job; and assign) and for a run that fails (a traceback):
# those get this third run too. Other commands print the same stderr with and without it.
TEXT_DEBUG = ["--debug"]
TEXT_LOGGING = {"refill", "assign", "poll", "notify", "sweep-stale", "outbox"}
# Every column where trackctl stores an error text or reason, scanned for secrets after the runs.
ERROR_COLUMNS = {
    "sequencing.tracking": "last_poll_error",
    "sequencing.webhook_delivery": "last_error",
    "sequencing.webhook_subscriber": "disabled_reason",
    "sequencing.run": "error",
}


def _scan_commands(cli, commands, env, secrets) -> list[str]:
    """Run every command in each log variant that can change its output, three runs at once: the
    jobs and writes (TEXT_LOGGING) one after another in the order given, the reads between two of
    them together; return the leaks, each with its output."""
    leaks = []

    def run(log, args):
        return log, args, cli(*log, *args, env_extra=env, timeout=60)

    def check(log, args, r):
        assert "Traceback" not in r.stderr or "--debug" in log, f"{log + args}:\n{r}"
        shown = [s for s in secrets if s in r.stdout + r.stderr]
        if shown:
            leaks.append(f"{' '.join(log + args)} shows {shown}:\n{r}")

    with ThreadPoolExecutor(3) as runner:
        reads = []  # runs of the commands that only read, in flight together

        def settle():
            failed = []
            for done in reads:
                log, args, r = done.result()
                check(log, args, r)
                if r.returncode != 0 and not log:  # a failure: its traceback with --debug too
                    failed.append(runner.submit(run, TEXT_DEBUG, args))
            reads.clear()
            for done in failed:
                check(*done.result())

        for args in commands:
            if args[0] in TEXT_LOGGING:  # a job or a write: after the reads before it, alone
                settle()
                for result in runner.map(lambda log: run(log, args), LOG_VARIANTS + (TEXT_DEBUG,)):
                    check(*result)
            else:
                reads += [runner.submit(run, log, args) for log in LOG_VARIANTS]
        settle()
    return leaks


def _leak_report(leaks: list[str]) -> str:
    """The leaking runs in one line each, then each run's output."""
    return "\n".join(["secrets shown by:"] + [leak.split(":\n", 1)[0] for leak in leaks] + [""] + leaks)


def _stored_errors(conn) -> list[str]:
    """Every error text and reason stored in the database, prefixed with its table and column."""
    texts = []
    for table, column in ERROR_COLUMNS.items():
        schema, name = table.split(".")
        query = sql.SQL("SELECT {c} FROM {t} WHERE {c} IS NOT NULL").format(c=sql.Identifier(column),
                                                                          t=sql.Identifier(schema, name))
        texts += [f"{table}.{column}: {v}" for (v,) in conn.execute(query).fetchall()]
    return texts


def test_no_secret_appears_in_any_output_log_metrics_stored_error_or_error_message(cli, conn, db_url, tmp_path):
    """DESIGN 'Interface rules': carrier tokens, webhook secrets and database passwords are never
    printed; docs/OPERATIONS.md 'Logs': they are replaced by *** in every message and field;
    docs/ADAPTERS.md: the token is never printed, logged or stored, error messages included."""
    secret = webhooks.generate_secret()
    secrets = [PASSWORD, TOKEN, secret, secret.removeprefix("whsec_")]
    url = f"{db_url} password={PASSWORD}"  # trust authentication: accepted and unused, but configured
    env = {"TRACKCTL_DATABASE_URL": url, "ACME_TOKEN": TOKEN}
    with CarrierServer() as server, WebhookEndpoint(secret) as hook:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, token_env="ACME_TOKEN")
        add_carrier(conn, "broken", adapter="http-json", url="http://127.0.0.1:9/", token_env="ACME_TOKEN", timeout=1)
        webhooks.add_subscriber(conn, hook.url, secret=secret)
        refill(conn)
        (tmp_path / "prom").mkdir()  # metrics --textfile-dir never creates its directory
        # A hostile carrier echoes the token where trackctl quotes it in its error (a bad timestamp),
        # and answers 500 for another code: both errors are stored in last_poll_error.
        echoed = assign(conn, "echo-1", "acme").code
        server.history(echoed, [http_json_event("e1", "in_transit", TOKEN)])
        failing = assign(conn, "echo-2", "acme").code
        server.script(failing, *[Reply(status=500, body=json.dumps({"error": f"bad token {TOKEN}"}).encode())] * 20)
        good = assign(conn, "echo-3", "acme").code
        server.history(good, [http_json_event("e2", "in_transit", "2026-11-20T10:00:00Z")])
        unreachable = assign(conn, "echo-4", "broken").code
        (tmp_path / "in.csv").write_text("1,acme\n2,acme\nbad line,,\n")
        commands = [
            ["refill"], ["assign", "9", "acme"], ["assign", "--batch", "--input", str(tmp_path / "in.csv")],
            ["poll", "--all", "--budget", "5s"], ["notify", "--budget", "5s"], ["sweep-stale"],
            ["status"], ["status", "--format", "json"], ["status", echoed], ["status", failing, "--format", "json"],
            ["status", unreachable], ["status", "--order", "echo-1", "--format", "json"],
            ["health"], ["health", "--format", "json"],
            ["metrics"], ["metrics", "--textfile-dir", str(tmp_path / "prom")], ["cron", "print"],
            ["webhook", "list"], ["webhook", "list", "--format", "json"],
            ["webhook", "deliveries"], ["webhook", "deliveries", "--format", "json"],
            ["carrier", "list"], ["carrier", "list", "--format", "json"],
            ["carrier", "show", "acme"], ["carrier", "show", "broken", "--format", "json"],
            ["db", "status"], ["db", "status", "--format", "json"],
            ["runs"], ["runs", "--format", "json"],
            ["events"], ["events", "--group", "audit", "--limit", "1"], ["events", "groups"],
            ["events", "groups", "--format", "json"], ["outbox", "prune", "--older-than", "30d"],
            ["pool", "list"], ["carrier", "show", "nosuch"], ["status", "nosuch"],
        ]
        leaks = _scan_commands(cli, commands, env, secrets)
        assert server.requests and all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in server.requests)
        assert hook.received, "no delivery reached the webhook endpoint"
    assert not leaks, _leak_report(leaks)
    assert (tmp_path / "prom").is_dir()
    prom = "".join(p.read_text() for p in (tmp_path / "prom").iterdir())
    assert prom and not any(s in prom for s in secrets)
    # What the carriers' failures left in the database: the errors are there, the token is not.
    stored = _stored_errors(conn)
    poll_errors = dict(conn.execute("SELECT tracking_id, last_poll_error FROM sequencing.tracking "
                                    "WHERE tracking_id = ANY(%s)", ([echoed, failing, unreachable],)).fetchall())
    assert all(poll_errors.values()), f"a failed poll stored no error: {poll_errors}"
    assert not [t for t in stored if any(s in t for s in secrets)], "\n".join(stored)
    # Wrong and unreachable databases: the error names host and database, never the password.
    for bad in [f"postgresql://postgres:{PASSWORD}@127.0.0.1:9/nowhere",
                f"{db_url} password={PASSWORD} user=nobody_here",
                f"postgresql://postgres:{PASSWORD}@[bad/x"]:
        for log in ([], ["--log-format", "json"]):
            r = cli(*log, "pool", "list", env_extra={"TRACKCTL_DATABASE_URL": bad})
            assert r.returncode in (2, 4), r
            assert PASSWORD not in r.stdout + r.stderr and "Traceback" not in r.stderr, r


def test_credentials_in_a_webhook_url_are_never_printed_or_stored_in_errors(cli, conn):
    """A subscriber URL may carry a token in its query (`?token=...`): like every `token=` parameter
    (docs/OPERATIONS.md 'Logs') it must not be shown. A URL with user:password@ is refused
    (`webhook add` hint: 'without user:password@'), and the refusal must not repeat the password."""
    secret = webhooks.generate_secret()
    token_url = f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}"
    webhooks.add_subscriber(conn, token_url, secret=secret, retry_schedule=[0, 0])
    add_carrier(conn, "acme")
    refill(conn)
    assign(conn, "w-1", "acme")  # one event, hence one delivery that fails: connection refused
    secrets = [HOOK_TOKEN, HOOK_PASSWORD, secret, secret.removeprefix("whsec_")]
    commands = [
        ["notify", "--budget", "2s"], ["notify"],
        ["webhook", "list"], ["webhook", "list", "--format", "json"],
        ["webhook", "deliveries"], ["webhook", "deliveries", "--status", "dead", "--format", "json"],
        ["health"], ["health", "--format", "json"], ["status"], ["status", "--format", "json"], ["metrics"],
        ["webhook", "add", token_url],  # refused: it exists already
        ["webhook", "add", f"http://hookuser:{HOOK_PASSWORD}@127.0.0.1:9/hook"],  # refused: credentials
        ["webhook", "add", f"https://hookuser:{HOOK_PASSWORD}@example.com/h?token={HOOK_TOKEN}", "--format", "json"],
    ]
    leaks = _scan_commands(cli, commands, {}, secrets)
    subscribers = conn.execute("SELECT url FROM sequencing.webhook_subscriber").fetchall()
    assert subscribers == [(token_url,)], f"a URL with user:password@ was accepted: {subscribers}"
    deliveries = conn.execute("SELECT status, attempts, last_error FROM sequencing.webhook_delivery").fetchall()
    assert deliveries and all(d[1] >= 1 and d[2] for d in deliveries), f"no failed attempt recorded: {deliveries}"
    stored = _stored_errors(conn)
    leaks += [f"stored: {t}" for t in stored if any(s in t for s in secrets)]
    assert not leaks, _leak_report(leaks)


# -- SQL text: only loaded queries, migrations, or psycopg.sql of them (the check: tests/sql_checker.py)

Q = {"trackctl.queries": "def load(area): pass\ndef migration_script(path): pass\n"}
# Statement arguments the check must refuse: each module set holds exactly one offending call.
UNSAFE_SQL = {
    "a string literal": {"m": """
        def f(conn):
            conn.execute("SELECT 1")
        """},
    "a module constant": {"m": """
        Q = "SELECT * FROM t WHERE a = %s"
        def f(conn, x):
            conn.execute(Q, (x,))
        """},
    "a query name the area's file does not have": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn):
            conn.execute(SQL.no_such_query)
        """},
    "an area chosen at run time": {**Q, "m": """
        from trackctl import queries
        def f(conn, area):
            conn.execute(queries.load(area).events)
        """},
    "a loaded-query holder bound twice": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn):
            conn.execute(SQL.events)
        SQL = object()
        """},
    "a loaded-query holder set from outside": {**Q, "pkg.a": """
        from trackctl import queries
        SQL = queries.load("status")
        """, "pkg.b": """
        from . import a
        def f(conn, x):
            a.SQL = x
            conn.execute(a.SQL.events)
        """},
    "a load() of another module": {"m": """
        import pickle
        SQL = pickle.load(open("q"))
        def f(conn):
            conn.execute(SQL.events)
        """},
    "a loaded query with text appended": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(SQL.events + x)
        """},
    "two loaded queries joined with +": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn):
            conn.execute(SQL.events + SQL.poll_state)
        """},
    "an f-string of a loaded query": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(f"{SQL.events} LIMIT {x}")
        """},
    "percent formatting of a loaded query": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(SQL.events % x)
        """},
    "str.format of a loaded query": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(SQL.events.format(x))
        """},
    "replace on a loaded query": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(SQL.events.replace("%s", x))
        """},
    "a migration's text as an attribute": {"m": """
        def migrate(conn, m):
            conn.execute(m.text)
        """},
    "a migration script with text appended": {**Q, "m": """
        from trackctl import queries
        def f(conn, path):
            conn.execute(queries.migration_script(path) + " DROP TABLE x")
        """},
    "f-string in a local": {"m": """
        def f(conn, x):
            q = f"SELECT * FROM t WHERE a = {x}"
            conn.execute(q)
        """},
    "f-string inside sql.SQL": {"m": """
        from psycopg import sql
        def f(conn, x):
            conn.execute(sql.SQL(f"SELECT * FROM {x}"))
        """},
    "a literal inside sql.SQL": {"m": """
        from psycopg import sql
        def f(conn, x):
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(x)))
        """},
    "str.format with a value": {"m": """
        def f(conn, x):
            conn.execute("SELECT * FROM {}".format(x))
        """},
    "a parameter": {"m": """
        def f(conn, query):
            conn.execute(query)
        """},
    "a keyword parameter": {"m": """
        def f(conn, query):
            conn.execute(query=query, params=None)
        """},
    "an attribute of a value": {"m": """
        class Job:
            def run(self, conn):
                conn.execute(self.query)
        """},
    "a loop variable": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, names):
            for q in (SQL.events, names):
                conn.execute(q)
        """},
    "a choice with one unsafe branch": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x, y):
            conn.execute(SQL.events if y else x)
        """},
    "f-string COPY on a cursor": {"m": """
        def f(conn, table):
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
                copy.write("")
        """},
    "stream of a parameter": {"m": """
        def f(cur, q):
            return list(cur.stream(q))
        """},
    "executemany of a joined text": {"m": """
        def f(cur, cols):
            cur.executemany("INSERT INTO t (" + ", ".join(cols) + ") VALUES (%s)", [])
        """},
    "sql.SQL.format with a raw value": {**Q, "m": """
        from psycopg import sql
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, fragment):
            conn.execute(sql.SQL(SQL.events).format(fragment))
        """},
    "sql.Composed of an unsafe sql.SQL": {"m": """
        import psycopg
        def f(conn, x):
            conn.execute(psycopg.sql.Composed([psycopg.sql.SQL(x)]))
        """},
    "a starred statement": {"m": """
        def f(conn, args):
            conn.execute(*args)
        """},
}

# Statement arguments the check must accept: the rule's four shapes.
SAFE_SQL = {
    "a statement loaded from sql/queries/ by name": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, x):
            conn.execute(SQL.events, (x,))
            local = queries.load("status")
            conn.execute(local.poll_state, (x,))
            with conn.cursor() as cur:
                cur.executemany(SQL.code_exists, [(x,)])
                list(cur.stream(query=SQL.events, params=(x,)))
            d = {}.copy()
        """},
    "a holder imported from another module": {**Q, "pkg.a": """
        from trackctl import queries
        SQL = queries.load("status")
        """, "pkg.b": """
        from .a import SQL
        from . import a
        def f(conn):
            conn.execute(SQL.events)
            conn.execute(a.SQL.poll_state)
        """},
    "a choice between two loaded queries": {**Q, "m": """
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, failure):
            conn.execute(SQL.events if failure is not None else SQL.poll_state, {})
        """},
    "a numbered migration through its loader": {**Q, "m": """
        from trackctl import queries
        def migrate(conn, m):
            conn.execute(queries.migration_script(m.path))
        """},
    "psycopg.sql compositions of loaded queries": {**Q, "m": """
        import psycopg
        from psycopg import sql
        from psycopg.sql import SQL as S, Identifier
        from trackctl import queries
        SQL = queries.load("status")
        def f(conn, col, table, value):
            conn.execute(sql.SQL(SQL.events).format(col=sql.Identifier(col), table=sql.Identifier("s", table),
                                                    value=sql.Literal(value), p=sql.Placeholder("p")), {"p": 1})
            conn.execute(S(SQL.poll_state).format(Identifier(table)))
            q = psycopg.sql.SQL(SQL.events).join([psycopg.sql.Identifier(col), psycopg.sql.Literal(value)])
            conn.execute(sql.SQL(SQL.poll_state) + q)
        """},
}


@pytest.mark.parametrize("name", sorted(UNSAFE_SQL))
def test_the_sql_check_flags_statement_text_made_from_values(name):
    sources = UNSAFE_SQL[name]
    found = sql_offenders(sources, packages={"pkg"})
    assert len(found) == 1, f"{name}: expected exactly one offender, got {found}\n{sources}"


@pytest.mark.parametrize("name", sorted(SAFE_SQL))
def test_the_sql_check_accepts_constants_and_psycopg_sql(name):
    sources = SAFE_SQL[name]
    checker = SqlChecker({k: textwrap.dedent(v) for k, v in sources.items()}, {"pkg"})
    assert checker.offenders() == [], sources
    assert checker.calls_seen, "the check saw no SQL call in a snippet made of them"


def test_the_sql_check_sees_every_way_trackctl_sends_sql():
    """Every `.execute(` / `.copy(` ... written in the package is a call the AST check judged, and no
    lower-level way to send SQL (libpq's pgconn, pipelines, prepared statements by hand) is used."""
    sources, packages = package_sources()
    checker = SqlChecker(sources, packages)
    assert checker.offenders() == []
    seen = len(checker.calls_seen)
    written = sum(len(re.findall(r"\.(?:execute|executemany|stream|copy)\(\s*[^)\s]", s)) for s in sources.values())
    assert seen == written, f"the check judged {seen} SQL calls, the source has {written}"
    by_method = Counter(m for _, _, m in checker.calls_seen)
    assert by_method["execute"] >= 100 and by_method["copy"] >= 2, by_method
    low_level = {"pgconn", "exec_", "exec_params", "send_query", "send_query_params", "exec_prepared",
                 "send_prepare", "pipeline", "copy_from", "copy_expert", "mogrify", "callproc"}
    other = [f"{m}: .{n.attr}" for m, t in checker.trees.items() for n in ast.walk(t)
             if isinstance(n, ast.Attribute) and n.attr in low_level]
    assert other == [], f"SQL sent another way than the checked methods: {other}"


def test_the_sql_check_flags_unsafe_edits_of_the_real_package():
    """The check run on the real package with a few call sites made unsafe finds exactly those:
    `+`, `%`, an f-string, .format(), .replace(), a raw literal, a migration's text read another
    way, and a query area chosen at run time."""
    sources, packages = package_sources()
    edits = {  # module: (safe text, unsafe replacement)
        "trackctl.webhooks": ("conn.execute(SQL.delete_subscriber,", "conn.execute(SQL.delete_subscriber + str(subscriber_id),"),
        "trackctl.db": ("conn.execute(SQL.record,", "conn.execute(SQL.record % m.name,"),
        "trackctl.runs": ("conn.execute(SQL.finish_run,", 'conn.execute(f"{SQL.finish_run} -- {run_id}",'),
        "trackctl.outbox": ("conn.execute(SQL.backlog)", "conn.execute(SQL.backlog.format(os.getpid()))"),
        "trackctl.pools": ("cur.copy(SQL.copy_codes)", "cur.copy(SQL.copy_codes.replace('tracking', str(pool_id)))"),
        "trackctl.carrier_stats": ("SQL.stats, {", '"SELECT * FROM sequencing.carrier_call", {'),
        "trackctl.events": ('SQL = queries.load("events")', 'SQL = queries.load(os.environ["AREA"])'),
    }
    for module, (safe, unsafe) in edits.items():
        assert sources[module].count(safe) == 1, f"{module} no longer holds {safe!r}: update this test"
        sources[module] = sources[module].replace(safe, unsafe)
    migrate = "conn.execute(queries.migration_script(m.path))"
    assert sources["trackctl.db"].count(migrate) == 1, "db.migrate no longer runs migrations through their loader"
    sources["trackctl.db"] = sources["trackctl.db"].replace(migrate, "conn.execute(m.path.read_text())")
    found = SqlChecker(sources, packages).offenders()
    expected = {
        "trackctl/webhooks.py": 1, "trackctl/db.py": 2, "trackctl/runs.py": 1, "trackctl/outbox.py": 1,
        "trackctl/pools.py": 1, "trackctl/carrier_stats.py": 1,
        # every statement of events.py once its area is chosen at run time
        "trackctl/events.py": sources["trackctl.events"].count(".execute(SQL."),
    }
    assert Counter(f.split(":")[0] for f in found) == expected, "\n".join(found)


def test_sql_is_built_only_from_loaded_queries_migrations_or_psycopg_sql():
    sources, packages = package_sources()
    offenders = SqlChecker(sources, packages).offenders()
    assert offenders == [], "statement text not from sql/ files:\n" + "\n".join(offenders)


def test_metrics_textfile_is_world_readable_written_atomically_and_alone(cli, tmp_path):
    d = tmp_path / "prom"
    d.mkdir()
    for _ in range(2):
        r = cli("metrics", "--textfile-dir", str(d))
        assert r.returncode == 0, r
    files = list(d.iterdir())
    assert len(files) == 1 and files[0].suffix == ".prom", files  # no temporary file left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o644
    assert "trackctl_" in files[0].read_text()


def test_embedded_data_directory_is_private(fresh_home):
    import subprocess

    from conftest import trackctl_command

    home = fresh_home
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env["TRACKCTL_HOME"] = str(home)
    try:
        r = subprocess.run(trackctl_command() + ["pool", "list"], env=env, capture_output=True, timeout=180)
        assert r.returncode == 0, r.stderr
        pgdata = home / "pgdata"
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    finally:
        subprocess.run(trackctl_command() + ["db", "stop"], env=env, capture_output=True, timeout=120)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of every directory and regular file below it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            found[str(path.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return found


# 022 is the usual umask; 002 the default of user-private-group systems (Debian, Ubuntu, Fedora).
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_a_fresh_trackctl_home_is_private_and_nothing_in_it_is_group_or_world_writable(fresh_home, umask):
    """The home trackctl creates (embedded server, lock file, ready marker) is 0700 (0711 as root), and
    no file or directory trackctl writes there can be written by group or others, whatever the umask."""
    import subprocess

    from conftest import trackctl_command

    home = fresh_home / "home"  # neither exists: trackctl makes both
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env["TRACKCTL_HOME"] = str(home)
    try:
        r = subprocess.run(trackctl_command() + ["pool", "list"], env=env, capture_output=True, timeout=180,
                           umask=umask)
        assert r.returncode == 0, r.stderr
        stopped = subprocess.run(trackctl_command() + ["db", "stop"], env=env, capture_output=True, timeout=120,
                                 umask=umask)
        assert stopped.returncode == 0, stopped.stderr
        modes = _modes(home)
        assert {"embedded.lock", "pgdata", "pgdata/PG_VERSION"} <= set(modes), f"what trackctl wrote: {sorted(modes)}"
        top = {p: f"{m:o}" for p, m in modes.items() if "/" not in p}
        writable = {p: f"{m:o}" for p, m in modes.items() if m & 0o022}
        # As root the embedded server runs as an OS user of its own, which must traverse the home
        # to reach its data directory: x for others, nothing more.
        want = 0o711 if os.geteuid() == 0 else 0o700
        assert (modes["."], writable) == (want, {}), (
            f"TRACKCTL_HOME is {modes['.']:o} (want {want:o}; running as uid {os.geteuid()}); "
            f"group- or world-writable with umask {umask:03o}: {writable}; top level: {top}")
    finally:
        subprocess.run(trackctl_command() + ["db", "stop"], env=env, capture_output=True, timeout=120)
