#!/usr/bin/env python3
"""Writes spindle.json, the Grafana dashboard the chart ships (templates/dashboard.yaml).

The panels are listed here, not drawn in Grafana, so the JSON stays reviewable and every query
is in one place; e2e/monitoring/run evaluates each of them against a real Prometheus scraping
Spindle. Run it after changing a panel: python3 charts/spindle/dashboards/generate.py
(--out FILE writes elsewhere: e2e/chart/static checks that the committed file is current).
Only the metric names the agent and operator export (README, "metrics"), exactly as spelt.
"""
import argparse
import json
import pathlib

RATE = "$__rate_interval"
TGT = 'target=~"$target"'

# (row title, [(panel title, unit, description, [(legend, expr), ...]), ...])
ROWS = [
    ("I/O per Target and LUN", [
        ("IOPS", "iops", "SCSI commands completed per second, by Target and LUN.", [
            ("{{target}} lun {{lun}}",
             f"sum by (target, lun) (rate(spindle_scsi_commands_total{{{TGT}}}[{RATE}]))"),
        ]),
        ("Throughput", "Bps", "Bytes read and written per second, by Target, LUN and direction.", [
            ("{{target}} lun {{lun}} {{direction}}",
             f"sum by (target, lun, direction) (rate(spindle_scsi_bytes_total{{{TGT}}}[{RATE}]))"),
        ]),
        ("Latency p99", "s",
         "99th percentile of the command latency (admission to status), by Target, LUN and "
         "class (read, write, other).", [
             ("{{target}} lun {{lun}} {{class}}",
              "histogram_quantile(0.99, sum by (le, target, lun, class) "
              f"(rate(spindle_scsi_latency_seconds_bucket{{{TGT}}}[{RATE}])))"),
         ]),
        ("Latency p50 and mean", "s", "Median and mean command latency, by Target, LUN and class.", [
            ("p50 {{target}} lun {{lun}} {{class}}",
             "histogram_quantile(0.5, sum by (le, target, lun, class) "
             f"(rate(spindle_scsi_latency_seconds_bucket{{{TGT}}}[{RATE}])))"),
            ("mean {{target}} lun {{lun}} {{class}}",
             f"sum by (target, lun, class) (rate(spindle_scsi_latency_seconds_sum{{{TGT}}}[{RATE}]))"
             f" / sum by (target, lun, class) (rate(spindle_scsi_latency_seconds_count{{{TGT}}}[{RATE}]))"),
        ]),
        ("Commands in flight", "short", "Commands admitted and not finished, by Target and LUN.", [
            ("{{target}} lun {{lun}}", f"sum by (target, lun) (spindle_scsi_inflight{{{TGT}}})"),
        ]),
        ("Commands by status", "iops",
         "Commands per second by SCSI status: CHECK_CONDITION beyond the odd unit attention "
         "means refused or failed commands.", [
             ("{{target}} {{status}}",
              f"sum by (target, status) (rate(spindle_scsi_commands_total{{{TGT}}}[{RATE}]))"),
         ]),
    ]),
    ("Where the time goes (all Targets of an agent)", [
        ("Stage latency p99", "s",
         "99th percentile per stage of a command: decode, dispatch, io, complete, send, total "
         "(README, spindle_stage_seconds).", [
             ("{{stage}}",
              "histogram_quantile(0.99, sum by (le, stage) "
              f"(rate(spindle_stage_seconds_bucket[{RATE}])))"),
         ]),
        ("Stage latency mean", "s", "Mean time per stage.", [
            ("{{stage}}",
             f"sum by (stage) (rate(spindle_stage_seconds_sum[{RATE}]))"
             f" / sum by (stage) (rate(spindle_stage_seconds_count[{RATE}]))"),
        ]),
    ]),
    ("Sessions and memory", [
        ("iSCSI sessions", "short", "Logged-in sessions, by Target.", [
            ("{{target}}", f"sum by (target) (spindle_iscsi_sessions{{{TGT}}})"),
        ]),
        ("Login failures", "short",
         "Logins refused per second (bad CHAP credentials, ACL, unknown Target), by agent.", [
             ("{{instance}}", f"sum by (instance) (rate(spindle_iscsi_login_failures_total[{RATE}]))"),
         ]),
        ("Write memory", "bytes",
         "Write data (Data-Out) the agent holds, and its bound --max-write-memory: at the bound "
         "initiators are slowed down.", [
             ("held {{instance}}", "spindle_write_memory_bytes"),
             ("bound {{instance}}", "spindle_write_memory_limit_bytes"),
         ]),
        ("Targets served", "short", "Targets each agent serves.", [
            ("{{instance}}", "spindle_targets"),
        ]),
    ]),
    ("Drains and deletes", [
        ("Drain duration p99 (agent)", "s",
         "Fence to flush acknowledgement: by Target, of a Device drained while its Target "
         "serves it; and of all the agent's DrainDevice calls.", [
             ("{{target}}",
              "histogram_quantile(0.99, sum by (le, target) "
              f"(rate(spindle_drain_seconds_bucket[{RATE}])))"),
             ("DrainDevice {{instance}}",
              "histogram_quantile(0.99, sum by (le, instance) "
              f"(rate(spindle_device_drain_seconds_bucket[{RATE}])))"),
         ]),
        ("Drains per hour", "short", "Drains completed over the last hour.", [
            ("{{instance}}", "sum by (instance) (increase(spindle_device_drain_seconds_count[1h]))"),
            ("{{target}}", "sum by (target) (increase(spindle_drain_seconds_count[1h]))"),
        ]),
        ("Delete phase duration p90 (operator)", "s",
         "The delete protocol's phases: drain (fence and flush), release, remove, total "
         "(deletion requested to finalizer removed).", [
             ("{{kind}} {{phase}}",
              "histogram_quantile(0.9, sum by (le, kind, phase) "
              f"(rate(spindle_operator_delete_phase_seconds_bucket[{RATE}])))"),
         ]),
        ("Deletes pending", "short",
         "Deleted Devices and Targets whose finalizer still holds, and how long the oldest has "
         "waited (a Device waits for its flush acknowledgement).", [
             ("{{kind}} pending", "max by (kind) (spindle_operator_deletes_pending)"),
             ("{{kind}} oldest (s)", "max by (kind) (spindle_operator_delete_pending_seconds)"),
         ]),
    ]),
    ("Health", [
        ("Failed Devices", "short",
         "1 for a Device whose store failed a write or flush: it refuses writes until restarted "
         "(README, Durability).", [
             ("{{device}} on {{instance}}", "max by (instance, device) (spindle_device_failed)"),
         ]),
        ("Agents reachable (operator)", "short",
         "Agents whose Lease is current, and agents with a Lease, current or expired.", [
             ("reachable", "max(spindle_operator_agents_reachable)"),
             ("registered", "max(spindle_operator_agents_registered)"),
         ]),
        ("Metrics endpoints up", "short", "Prometheus' scrape of each agent and operator replica.", [
            ("{{job}} {{instance}}", 'up{job=~".*(agent|operator)-metrics"}'),
        ]),
        ("Agent API calls", "reqps", "Agent API calls per second by method and gRPC code.", [
            ("{{method}} {{code}}", f"sum by (method, code) (rate(spindle_api_requests_total[{RATE}]))"),
        ]),
        ("Agent API latency p99", "s", "99th percentile of the agent API calls, by method.", [
            ("{{method}}",
             "histogram_quantile(0.99, sum by (le, method) "
             f"(rate(spindle_api_request_seconds_bucket[{RATE}])))"),
        ]),
        ("Lease renewals failed", "short",
         "Lease renewals that failed over the last hour, by agent (the operator deems the agent "
         "unreachable once its Lease expires).", [
             ("{{instance}}", "sum by (instance) (increase(spindle_lease_renew_failures_total[1h]))"),
         ]),
        ("Data dir identity", "short",
         "1: the data dir had no identity at this start (new or replaced), or names another node.", [
             ("new {{instance}}", "spindle_data_dir_new"),
             ("foreign {{instance}}", "spindle_data_dir_foreign"),
         ]),
    ]),
    ("Operator", [
        ("Reconciles", "ops", "Reconciles per second by kind and result.", [
            ("{{kind}} {{result}}",
             f"sum by (kind, result) (rate(spindle_operator_reconciles_total[{RATE}]))"),
        ]),
        ("Reconcile errors", "ops", "Failed reconciles per second by kind and cause.", [
            ("{{kind}} {{reason}}",
             f"sum by (kind, reason) (rate(spindle_operator_reconcile_errors_total[{RATE}]))"),
        ]),
        ("Reconcile duration p99", "s", "99th percentile of one reconcile, by kind.", [
            ("{{kind}}",
             "histogram_quantile(0.99, sum by (le, kind) "
             f"(rate(spindle_operator_reconcile_duration_seconds_bucket[{RATE}])))"),
        ]),
        ("Leader", "short", "Operator replicas that lead: exactly one is healthy.", [
            ("leaders", "sum(spindle_operator_leader)"),
        ]),
    ]),
]


def timeseries(pid, title, unit, description, targets, x, y):
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard():
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, description, targets) in enumerate(row_panels):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(timeseries(pid, title, unit, description, targets, x, y))
            pid += 1
        y += 8
    return {
        "uid": "spindle-storage",
        "title": "Spindle storage",
        "description": "Spindle's agents (iSCSI targets) and operator; metrics as in the README.",
        "tags": ["spindle", "storage", "iscsi"],
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "graphTooltip": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
            {"name": "target", "label": "Target", "type": "query",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(spindle_scsi_bytes_total, target)",
                       "refId": "target"},
             "definition": "label_values(spindle_scsi_bytes_total, target)",
             "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1, "hide": 0},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).with_name("spindle.json"))
    args = parser.parse_args()
    args.out.write_text(json.dumps(dashboard(), indent=2) + "\n")
