#!/usr/bin/env python3
"""Checks deploy/monitoring without a Prometheus or Grafana server.

- touchstone-dashboard.json: the fields Grafana needs to import a dashboard
  (title, uid, schemaVersion, time, templating, panels), unique panel ids,
  grid positions inside the 24-column grid, every panel's data source the
  templated Prometheus data source, and every panel target with a unique
  refId and an expression.
- touchstone-alerts.yaml: the shape of rule groups (promtool checks the
  PromQL itself; CI runs `promtool check rules` beside this).
- Every metric a panel, a dashboard variable or an alert names is one the
  code exports: its family name appears in services/ (registered with
  prometheus-client, which adds `_seconds` for a seconds unit and `_total`
  to counters; histograms add `_bucket`, `_count`, `_sum`).

Needs PyYAML. Exit status 1 with one line per problem.
"""

import json
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DASHBOARD = HERE / "touchstone-dashboard.json"
ALERTS = HERE / "touchstone-alerts.yaml"

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


# --- what the code exports ---------------------------------------------------

PREFIXES = ("rpc_", "http_server_", "db_client_", "touchstone_", "process_")
LITERAL = re.compile(r'"([a-z][a-z0-9_]*)"')


def exported_families():
    names = set()
    for path in (ROOT / "services").rglob("*.rs"):
        if "/tests/" in str(path.relative_to(ROOT)):
            continue
        for name in LITERAL.findall(path.read_text(encoding="utf-8")):
            if name.startswith(PREFIXES):
                names.add(name)
    return names


def is_exported(metric, families):
    """Whether `metric` (a series name in PromQL) is a family the code writes."""
    candidates = {metric}
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if metric.endswith(suffix):
            candidates.add(metric[: -len(suffix)])
    for name in list(candidates):
        if name.endswith("_seconds"):
            candidates.add(name[: -len("_seconds")])
    return bool(candidates & families)


# --- PromQL: the metric names an expression uses -------------------------------

FUNCTIONS_AND_KEYWORDS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "count", "count_over_time",
    "count_values", "delta", "deriv", "exp", "floor", "group", "histogram_quantile",
    "holt_winters", "idelta", "increase", "irate", "label_join", "label_replace",
    "label_values", "last_over_time", "ln", "log2", "log10", "max", "max_over_time",
    "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum",
    "sum_over_time", "time", "timestamp", "topk", "vector", "and", "or", "unless", "by",
    "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan",
}


def metric_names(expr):
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in FUNCTIONS_AND_KEYWORDS:
            continue
        names.add(word)
    return names


# --- the dashboard -------------------------------------------------------------

def check_dashboard(families, used):
    try:
        dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problem(DASHBOARD.name, f"not JSON: {e}")
        return
    for key, kind in [("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                      ("templating", dict), ("time", dict), ("tags", list)]:
        if not isinstance(dash.get(key), kind):
            problem(DASHBOARD.name, f"`{key}` missing or not a {kind.__name__}")
    if problems:
        return
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dash["uid"]):
        problem(DASHBOARD.name, "uid must be 1-40 of [A-Za-z0-9_-]")
    if dash.get("id") is not None:
        problem(DASHBOARD.name, "id must be null so that import makes a new dashboard")
    if dash["schemaVersion"] < 36:
        problem(DASHBOARD.name, "schemaVersion below 36 (Grafana 9)")
    for key in ("from", "to"):
        if not isinstance(dash["time"].get(key), str):
            problem(DASHBOARD.name, f"time.{key} missing")

    variables = {v.get("name"): v for v in dash["templating"].get("list", [])}
    datasource_vars = {n for n, v in variables.items()
                       if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    if not datasource_vars:
        problem(DASHBOARD.name, "no Prometheus data source variable in templating")
    for name, var in variables.items():
        if var.get("type") == "query":
            query = var.get("query")
            expr = query.get("query") if isinstance(query, dict) else query
            inner = re.search(r"label_values\((.*),\s*\w+\)$", expr or "")
            used.setdefault(f"variable {name}", set()).update(
                metric_names(inner.group(1)) if inner else set())

    ids = set()
    panels = list(dash["panels"])
    for panel in dash["panels"]:
        panels.extend(panel.get("panels", []))
    for panel in panels:
        where = f"{DASHBOARD.name}: panel {panel.get('id')} {panel.get('title')!r}"
        pid = panel.get("id")
        if not isinstance(pid, int) or pid in ids:
            problem(where, "id missing or not unique")
        ids.add(pid)
        if not panel.get("type") or not panel.get("title"):
            problem(where, "type and title required")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            problem(where, "gridPos needs integer h, w, x, y")
        elif grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24 or grid["h"] < 1:
            problem(where, "gridPos outside the 24-column grid")
        if panel.get("type") == "row":
            continue
        ds = panel.get("datasource") or {}
        uid = ds.get("uid", "")
        if ds.get("type") != "prometheus" or uid.strip("${}") not in datasource_vars:
            problem(where, "datasource must be the Prometheus data source variable")
        targets = panel.get("targets") or []
        if not targets:
            problem(where, "no targets")
        refs = [t.get("refId") for t in targets]
        if None in refs or len(set(refs)) != len(refs):
            problem(where, "targets need unique refIds")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problem(where, f"target {target.get('refId')} has no expr")
                continue
            tds = target.get("datasource")
            if tds is not None and tds != ds:
                problem(where, f"target {target.get('refId')} has another datasource")
            used.setdefault(where, set()).update(metric_names(expr))


# --- the alert rules -----------------------------------------------------------

def check_alerts(used):
    try:
        doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problem(ALERTS.name, f"not YAML: {e}")
        return
    groups = (doc or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        problem(ALERTS.name, "no groups")
        return
    names = set()
    for group in groups:
        if group.get("name") in names:
            problem(ALERTS.name, f"group {group.get('name')} twice")
        names.add(group.get("name"))
        for rule in group.get("rules") or []:
            where = f"{ALERTS.name}: {rule.get('alert') or rule.get('record')}"
            if not rule.get("expr"):
                problem(where, "no expr")
                continue
            if rule.get("alert"):
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    problem(where, "severity must be critical, warning or info")
                if not rule.get("annotations", {}).get("summary"):
                    problem(where, "no summary annotation")
            used.setdefault(where, set()).update(metric_names(str(rule["expr"])))


def main():
    families = exported_families()
    used = {}
    check_dashboard(families, used)
    check_alerts(used)
    for where, metrics in sorted(used.items()):
        for metric in sorted(metrics):
            if not is_exported(metric, families):
                problem(where, f"metric {metric} is not exported by the code")
    if not any(used.values()):
        problem("check.py", "found no metric names at all")
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"monitoring: {DASHBOARD.name} and {ALERTS.name} OK "
          f"({sum(len(m) for m in used.values())} metric references)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
