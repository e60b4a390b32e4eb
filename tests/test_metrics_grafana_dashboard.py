"""docs/grafana/trackctl.json (issue 15): importable as it is, and built only on metrics `trackctl metrics` exports.

Every query of the dashboard is read, the metric names in it are picked out, and each must be a
sample in the output of `trackctl metrics` on a test database with pools, shipments, a poll run,
a notify run and a dead delivery, so the dashboard cannot drift from the exporter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from otlp_receiver import closed_port

from trackctl import outbox, webhooks
from trackctl.assign import assign
from trackctl.carriers import add_carrier

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "trackctl.json"

# PromQL words that are not metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "time", "timestamp", "abs", "clamp_min", "clamp_max",
    "histogram_quantile", "label_replace", "label_join", "vector", "scalar", "absent", "changes", "resets",
    "sum_over_time", "max_over_time", "min_over_time", "avg_over_time", "last_over_time", "round", "sort", "sort_desc",
    "inf", "nan",
}


def expressions(node) -> list[str]:
    """Every `expr` anywhere in the dashboard (panels, rows' panels, variables)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(expressions(item))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, strings, ranges and variables left out)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    words = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def test_metric_names_are_picked_out_of_expressions():
    assert metric_names('max by (pool) (rate(trackctl_assignments_total{state="free"}[10m])) * 60') == \
        {"trackctl_assignments_total"}
    assert metric_names("time() - max by (job) (trackctl_job_last_success_timestamp_seconds) > ${limit}") == \
        {"trackctl_job_last_success_timestamp_seconds"}
    assert metric_names("a_metric / on (pool) group_left b_metric") == {"a_metric", "b_metric"}


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "trackctl" and d["title"] and isinstance(d["schemaVersion"], int)
    assert "id" not in d or d["id"] is None, "an id would clash with the importing Grafana's own"
    [variable] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    panels = d["panels"] + [p for row in d["panels"] for p in row.get("panels", [])]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${" + variable["name"] + "}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


@pytest.fixture
def busy(stocked, cli):
    """A database with pools, shipments of two carriers, a poll run, a notify run and a dead delivery."""
    conn = stocked
    add_carrier(conn, "sim", adapter="simulator")
    for i in range(4):
        assign(conn, f"dash-sim-{i}", "sim")
        assign(conn, f"dash-cor-{i}", "correios")
    assert cli("poll", "--all").returncode == 0
    webhooks.add_subscriber(conn, f"http://127.0.0.1:{closed_port()}/hook", secret=webhooks.generate_secret(),
                            retry_schedule=webhooks.parse_schedule("0s"))
    outbox.record(conn, "shipment.stale", {"code": "dash"})
    assert cli("notify").returncode == 0
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'dead'").fetchone()[0] >= 1
    return conn


def test_every_metric_the_dashboard_reads_is_exported_by_trackctl_metrics(busy, cli):
    r = cli("metrics")
    assert r.returncode == 0, r
    samples = {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0)
               for line in r.stdout.splitlines() if line and not line.startswith("#")}
    exprs = expressions(json.loads(DASHBOARD.read_text()))
    used = set().union(*(metric_names(e) for e in exprs))
    assert len(exprs) >= 15 and used, exprs
    missing = {name: [e for e in exprs if name in metric_names(e)] for name in used - samples}
    assert not missing, f"the dashboard reads metrics `trackctl metrics` does not export: {missing}"
    # What the issue asks the dashboard to show, each by the metric it needs.
    assert {"trackctl_pool_codes", "trackctl_pool_target_codes", "trackctl_assignments_total", "trackctl_shipments",
            "trackctl_poll_requests_total", "trackctl_poll_failures_last_hour", "trackctl_poll_rate_limited_last_hour",
            "trackctl_outbox_lag_seconds", "trackctl_deliveries_dead", "trackctl_job_last_run_duration_seconds",
            "trackctl_job_last_run_outcome", "trackctl_job_last_success_timestamp_seconds"} <= used


def test_the_assignment_counter_and_rate_limited_requests_are_exported(busy, cli):
    text = cli("metrics").stdout
    assert 'trackctl_assignments_total{pool="default"} 8.0' in text
    assert "# TYPE trackctl_assignments_total counter" in text
    assert re.search(r'trackctl_poll_rate_limited_last_hour\{carrier="sim"\} \d', text)
