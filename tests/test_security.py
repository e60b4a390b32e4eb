"""Security checks of issue 7: no secret in any output, SQL built only from parameters or
psycopg.sql, safe file permissions for the metrics textfile and the embedded data directory."""

from __future__ import annotations

import ast
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from carrier_server import CarrierServer, http_json_event
from webhook_endpoint import WebhookEndpoint

import trackctl
from trackctl import outbox, webhooks
from trackctl.carriers import add_carrier
from trackctl.pools import refill

pytestmark = pytest.mark.faults

PASSWORD = "Pw-9f3kQz7LmX2"
TOKEN = "tok-Zr8XwQ1vN6pT"


def test_no_secret_appears_in_any_output_log_metrics_or_error(cli, conn, db_url, tmp_path):
    secret = webhooks.generate_secret()
    secrets = [PASSWORD, TOKEN, secret, secret.removeprefix("whsec_")]
    url = f"{db_url} password={PASSWORD}"  # trust authentication: accepted and unused, but configured
    env = {"TRACKCTL_DATABASE_URL": url, "ACME_TOKEN": TOKEN}
    with CarrierServer() as server, WebhookEndpoint(secret) as hook:
        add_carrier(conn, "acme", adapter="http-json", url=server.url, token_env="ACME_TOKEN")
        add_carrier(conn, "broken", adapter="http-json", url="http://127.0.0.1:9/", token_env="ACME_TOKEN", timeout=1)
        webhooks.add_subscriber(conn, hook.url, secret=secret)
        refill(conn)
        (tmp_path / "in.csv").write_text("1,acme\n2,acme\nbad line,,\n")
        commands = [
            ["refill"], ["assign", "9", "acme"], ["assign", "--batch", "--input", str(tmp_path / "in.csv")],
            ["poll", "--all", "--budget", "5s"], ["notify", "--budget", "5s"], ["sweep-stale"],
            ["status"], ["status", "--format", "json"], ["health"], ["health", "--format", "json"],
            ["metrics"], ["metrics", "--textfile-dir", str(tmp_path / "prom")], ["cron", "print"],
            ["webhook", "list", "--format", "json"], ["webhook", "deliveries"], ["carrier", "list", "--format", "json"],
            ["runs", "--format", "json"], ["events"], ["outbox", "prune", "--older-than", "30d"],
        ]
        # The three log variants of a command run at once: poll and notify wait out their budgets.
        with ThreadPoolExecutor(3) as runner:
            for args in commands:
                variants = ([], ["--log-format", "json"], ["--debug"])
                runs = runner.map(lambda log: (log, cli(*log, *args, env_extra=env, timeout=60)), variants)
                for log, r in runs:
                    text = r.stdout + r.stderr
                    for s in secrets:
                        assert s not in text, f"secret shown by {log + args}:\n{r}"
        assert (tmp_path / "prom").is_dir()
        prom = "".join(p.read_text() for p in (tmp_path / "prom").iterdir())
        assert prom and not any(s in prom for s in secrets)
        assert server.requests and all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in server.requests)
    # Wrong and unreachable databases: the error names host and database, never the password.
    for bad in [f"postgresql://postgres:{PASSWORD}@127.0.0.1:9/nowhere",
                f"{db_url} password={PASSWORD} user=nobody_here",
                f"postgresql://postgres:{PASSWORD}@[bad/x"]:
        for log in ([], ["--log-format", "json"]):
            r = cli(*log, "pool", "list", env_extra={"TRACKCTL_DATABASE_URL": bad})
            assert r.returncode in (2, 4), r
            assert PASSWORD not in r.stdout + r.stderr and "Traceback" not in r.stderr, r


def _sql_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("execute", "executemany", "copy", "stream") and node.args:
            yield node, node.args[0]


def _literal_only(node: ast.AST) -> bool:
    """True when the expression can only ever be fixed text (string literals, choices between them)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.IfExp):
        return _literal_only(node.body) and _literal_only(node.orelse)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_only(node.left) and _literal_only(node.right)
    return False


def _fixed_text(node: ast.AST, fixed_names: set[str]) -> bool:
    """True for statement text built only from constants: UPPER_CASE module constants, literals,
    and local names bound only to literals, joined with +."""
    if isinstance(node, ast.Name):
        return node.id.isupper() or node.id in fixed_names
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _fixed_text(node.left, fixed_names) and _fixed_text(node.right, fixed_names)
    if isinstance(node, ast.JoinedStr):
        return all(_fixed_text(v.value, fixed_names) for v in node.values if isinstance(v, ast.FormattedValue))
    return _literal_only(node)


def test_sql_is_built_only_from_parameters_or_psycopg_sql():
    """No statement text made by formatting values (f-string, %, .format); values are parameters and
    dynamic identifiers go through psycopg.sql, whose Composed objects pass this check untouched."""
    offenders = []
    for path in Path(trackctl.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
            assigned: dict[str, list[ast.AST]] = {}
            for n in ast.walk(func):
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        if isinstance(t, ast.Name):
                            assigned.setdefault(t.id, []).append(n.value)
            fixed = {name for name, values in assigned.items() if all(_literal_only(v) for v in values)}
            for call, first in _sql_calls(func):
                if isinstance(first, ast.Constant) or (isinstance(first, ast.Name) and first.id.isupper()):
                    continue
                if isinstance(first, (ast.JoinedStr, ast.BinOp)) and not _fixed_text(first, fixed):
                    offenders.append(f"{path.name}:{call.lineno} {ast.unparse(first)[:60]}")
                elif isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) \
                        and first.func.attr == "format" and isinstance(first.func.value, ast.Constant):
                    offenders.append(f"{path.name}:{call.lineno} str.format on statement text")
    assert offenders == []


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


def test_embedded_data_directory_is_private(tmp_path):
    import subprocess

    from conftest import trackctl_command

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCTL_")}
    env["TRACKCTL_HOME"] = str(home)
    try:
        r = subprocess.run(trackctl_command() + ["pool", "list"], env=env, capture_output=True, timeout=180)
        assert r.returncode == 0, r.stderr
        pgdata = home / "pgdata"
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    finally:
        subprocess.run(trackctl_command() + ["db", "stop"], env=env, capture_output=True, timeout=120)
