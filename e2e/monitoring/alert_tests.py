#!/usr/bin/env python3
"""Writes promtool's unit tests of the chart's alerts: alert_tests.py RULES.yaml OUT.yaml

Each case below feeds input series to one alert and says when it must fire, with which labels
and rendered annotations, and when not. promtool compares the annotations exactly, so they are
rendered here from the rule's own text: {{ $labels.x }} from the expected labels, any other
{{ ... }} (the value, humanized) from the case's `values`, which spell the expected text.
"""
import re
import sys

import yaml

AGENT = {"job": "spindle-agent-metrics", "instance": "10.0.0.1:9562"}
AGENT2 = {"job": "spindle-agent-metrics", "instance": "10.0.0.2:9562"}
OP = {"job": "spindle-operator-metrics", "instance": "10.0.1.1:9561"}
OP2 = {"job": "spindle-operator-metrics", "instance": "10.0.1.2:9561"}


def s(name, labels, values):
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


# (alert, input series, [(eval time, [(labels, {template: text})])]); an empty list: silent.
CASES = [
    ("SpindleDeviceFailed", [
        s("spindle_device_failed", {**AGENT, "device": "default/db"}, "0 0 1 1"),
        s("spindle_device_failed", {**AGENT, "device": "default/ok"}, "0 0 0 0"),
    ], [("1m", []), ("2m", [({**AGENT, "device": "default/db"}, {})])]),
    ("SpindleAgentUnreachable", [
        s("spindle_operator_agents_registered", OP, "2x6"),
        s("spindle_operator_agents_reachable", OP, "2 1x5"),
        s("spindle_operator_leader", OP, "1x6"),
        # A replica that does not lead has stale gauges: not believed.
        s("spindle_operator_agents_registered", OP2, "3x6"),
        s("spindle_operator_agents_reachable", OP2, "0x6"),
        s("spindle_operator_leader", OP2, "0x6"),
    ], [("2m", []), ("4m", [(OP, {"$value": "1"})])]),
    ("SpindleAgentMetricsDown", [
        s("up", AGENT, "1 1 0x8"),
        s("up", AGENT2, "1x10"),
        s("up", {"job": "node-exporter", "instance": "10.0.0.1:9100"}, "0x10"),
    ], [("6m", []), ("8m", [(AGENT, {})])]),
    ("SpindleDeleteWaitingOnFlush", [
        s("spindle_operator_delete_pending_seconds", {**OP, "kind": "Device"}, "0+120x10"),
        s("spindle_operator_delete_pending_seconds", {**OP, "kind": "Target"}, "0+300x10"),
    ], [("5m", []), ("6m", [({"kind": "Device"}, {"$value | humanizeDuration": "12m 0s"})])]),
    ("SpindleWriteMemoryNearBound", [
        s("spindle_write_memory_bytes", AGENT, "100 950x10"),
        s("spindle_write_memory_limit_bytes", AGENT, "1000x10"),
        s("spindle_write_memory_bytes", AGENT2, "500x10"),
        s("spindle_write_memory_limit_bytes", AGENT2, "1000x10"),
    ], [("5m", []), ("6m", [(AGENT, {"$value | humanizePercentage": "95%"})])]),
    ("SpindleOperatorNoLeader", [
        s("spindle_operator_leader", OP, "1 0x10"),
        s("spindle_operator_leader", OP2, "0x10"),
    ], [("0m", []), ("5m", []), ("7m", [({}, {"$value": "0"})])]),
    ("SpindleOperatorDown", [
        s("up", OP, "1 0x10"),
    ], [("0m", []), ("5m", []), ("7m", [({}, {})])]),
    ("SpindleReconcileErrors", [
        s("spindle_operator_reconcile_errors_total",
          {**OP, "kind": "Device", "reason": "agent_unreachable"}, "0+1x40"),
        s("spindle_operator_reconcile_errors_total",
          {**OP, "kind": "Target", "reason": "apiserver"}, "5x40"),
    ], [("10m", []), ("20m", [({"kind": "Device", "reason": "agent_unreachable"}, {})])]),
    ("SpindleLoginFailures", [
        s("spindle_iscsi_login_failures_total", AGENT, "0+6x20"),
        s("spindle_iscsi_login_failures_total", AGENT2, "0+1x20"),
    ], [("5m", []), ("15m", [(AGENT, {'printf "%.2f" $value': "0.10"})])]),
    ("SpindleLeaseRenewFailing", [
        s("spindle_lease_renew_failures_total", AGENT, "0 0 1+1x20"),
        s("spindle_lease_renew_failures_total", AGENT2, "3x20"),
    ], [("5m", []), ("12m", [(AGENT, {})])]),
    ("SpindleDataDirForeign", [
        s("spindle_data_dir_foreign", AGENT, "1x3"),
        s("spindle_data_dir_foreign", AGENT2, "0x3"),
    ], [("1m", [(AGENT, {})])]),
]


def render(text, labels, values):
    def one(m):
        expr = m.group(1).strip()
        if expr.startswith("$labels."):
            return labels[expr[len("$labels."):]]
        if expr not in values:
            sys.exit(f"no expected text for {{{{ {expr} }}}} in {text!r}")
        return values[expr]
    return re.sub(r"{{(.*?)}}", one, text)


def main():
    rules_path, out_path = sys.argv[1:3]
    rules = {r["alert"]: r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"]}
    tested = {c[0] for c in CASES}
    if tested != set(rules):
        sys.exit(f"alerts without a test: {sorted(set(rules) - tested)}; "
                 f"tests without an alert: {sorted(tested - set(rules))}")
    tests = []
    for alert, series, evals in CASES:
        rule = rules[alert]
        checks = []
        for at, firing in evals:
            exp = []
            for labels, values in firing:
                exp.append({
                    "exp_labels": {**labels, **rule.get("labels", {})},
                    "exp_annotations": {k: render(v, labels, values)
                                        for k, v in rule.get("annotations", {}).items()},
                })
            checks.append({"eval_time": at, "alertname": alert, "exp_alerts": exp})
        tests.append({"name": alert, "interval": "1m", "input_series": series,
                      "alert_rule_test": checks})
    doc = {"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests}
    with open(out_path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    print(f"{len(tests)} alerts, {sum(len(t['alert_rule_test']) for t in tests)} checks")


if __name__ == "__main__":
    main()
