#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every alert expression against a real Prometheus.

    check_queries.py PROMETHEUS_URL DASHBOARD.json RULES.yaml

Each panel target and each alert's expression is queried (instant query, HTTP API) and must
return at least one series; one that returns nothing fails, named by its panel title or alert.
Dashboard variables are replaced as Grafana would with every value selected ($target: .*,
$__rate_interval: 30s). An alert's expression is evaluated without its thresholds (comparisons
with a number dropped, absent(X) read as X): the check is that its series exist, not that the
alert fires. Prints one line per query and a summary; exits 1 if any query came back empty.
"""
import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

VARIABLES = {"$__rate_interval": "30s", "$target": ".*"}
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9][0-9.e+-]*")


def panel_queries(dashboard):
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                sys.exit(f"panel {panel['title']!r}: a variable this check does not know: {expr}")
            yield f"panel {panel['title']!r} ({t['refId']})", expr


def alert_queries(rules):
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            m = re.fullmatch(r"\s*absent\((.*)\)\s*", expr, re.S)
            if m:
                expr = m.group(1)
            yield f"alert {rule['alert']}", THRESHOLD.sub("", expr)


def query(url, expr):
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def main():
    url, dashboard_path, rules_path = sys.argv[1:4]
    dashboard = json.load(open(dashboard_path))
    rules = yaml.safe_load(open(rules_path))
    queries = list(panel_queries(dashboard)) + list(alert_queries(rules))
    empty = []
    for name, expr in queries:
        try:
            result = query(url, expr)
        except Exception as e:  # a query Prometheus refuses is as bad as an empty one
            print(f"ERROR {name}: {expr}: {e}")
            empty.append(name)
            continue
        print(f"{len(result):4d} series  {name}: {expr}")
        if not result:
            empty.append(name)
    panels = sum(1 for p in dashboard["panels"] if p.get("targets"))
    alerts = sum(len(g["rules"]) for g in rules["groups"])
    print(f"{len(queries)} queries ({panels} panels, {alerts} alerts): "
          f"{len(queries) - len(empty)} returned series, {len(empty)} empty")
    for name in empty:
        print(f"EMPTY: {name}")
    sys.exit(1 if empty else 0)


if __name__ == "__main__":
    main()
