"""Measures the operator on a local control plane with two agents (processes), and reports:

  1. kubectl apply -> Ready=True latency of single Targets (each with its Device), p50/p99;
  2. N Device+Target pairs over two agents applied at once: time until all are Ready, the
     operator's and the agents' RSS, and apiserver requests per object (from the apiserver's
     own apiserver_request_total, so every client counts: operator, agents' Lease renewals,
     and kubectl's apply itself).

Figures are reported, not judged. Usage:
  bench/operator [--targets 50] [--pairs 1000] [--appliers 4] [--addr-base 127.0.0] [--out FILE] [--keep]

The pairs are applied by --appliers kubectl processes at once, 100 objects per call, as a
GitOps tool or several users would; the report gives both the time the applies took and the
time from the last apply until every Target was Ready (what the operator adds).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from spindletools import manifests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "e2e", "cluster")
NAME = "bench-operator"


def sh(*args, stdin=None, check=True):
    r = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


class Cluster:
    def __init__(self, addr_base):
        out = sh(os.path.join(CLUSTER, "up"), "--name", NAME, "--spindle", "--addr-base", addr_base,
                 "node-a", "node-b")
        self.kubeconfig = re.search(r"export KUBECONFIG=(\S+)", out).group(1)
        self.state = os.path.dirname(self.kubeconfig)
        bin_dir = sh(os.path.join(CLUSTER, "build"), "--quiet", "--print-bin-dir").strip()
        self.kubectl_bin = os.path.join(bin_dir, "kubectl")

    def kubectl(self, *args, stdin=None, check=True):
        return sh(self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args, stdin=stdin, check=check)

    def requests(self):
        """apiserver_request_total summed per resource (all verbs, all clients)."""
        per = {}
        for line in self.kubectl("get", "--raw", "/metrics").splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            m = re.search(r'resource="([^"]*)"', line)
            sub = re.search(r'subresource="([^"]*)"', line)
            key = (m.group(1) if m else "") + ("/" + sub.group(1) if sub and sub.group(1) else "")
            per[key] = per.get(key, 0) + float(line.rsplit(" ", 1)[1])
        return per

    def rss_mib(self, what):
        try:
            pid = open(os.path.join(self.state, "spindle", f"{what}.pid")).read().strip()
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def down(self):
        sh(os.path.join(CLUSTER, "down"), "--name", NAME, check=False)


def pair(ns, name, node, size=1 << 20):
    return "---\n".join([
        manifests.device(name, {"file": {"path": f"{ns}-{name}.img", "sizeBytes": size}},
                         node=node, namespace=ns),
        manifests.target(name, [(0, name)], namespace=ns, acl={"allowAll": True}),
    ])


def ready_count(c, ns):
    out = c.kubectl("get", "targets", "-n", ns, "-o", "json")
    n = 0
    for t in json.loads(out)["items"]:
        for cond in t.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                n += 1
    return n


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(prog="bench/operator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--appliers", type=int, default=4, help="kubectl applies running at once")
    ap.add_argument("--addr-base", default=os.environ.get("SPINDLE_ADDR_BASE", "127.0.0"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    a = ap.parse_args()
    c = Cluster(a.addr_base)
    try:
        lines = run(c, a)
    finally:
        if not a.keep:
            c.down()
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)


def run(c, a):
    c.kubectl("create", "namespace", "lat")
    lat = []
    for i in range(a.targets):
        node = "node-a" if i % 2 == 0 else "node-b"
        t0 = time.monotonic()
        c.kubectl("apply", "-f", "-", stdin=pair("lat", f"t{i}", node))
        c.kubectl("wait", "-n", "lat", "--for=condition=Ready", f"target/t{i}", "--timeout=120s")
        lat.append(time.monotonic() - t0)

    c.kubectl("create", "namespace", "scale")
    before = c.requests()
    t0 = time.monotonic()
    docs = [pair("scale", f"p{i}", "node-a" if i % 2 == 0 else "node-b") for i in range(a.pairs)]
    batches = ["---\n".join(docs[k:k + 100]) for k in range(0, len(docs), 100)]
    with ThreadPoolExecutor(max_workers=max(1, a.appliers)) as pool:
        list(pool.map(lambda b: c.kubectl("apply", "--server-side", "-f", "-", stdin=b), batches))
    applied = time.monotonic() - t0
    ready, deadline = 0, time.monotonic() + 900
    while time.monotonic() < deadline:
        ready = ready_count(c, "scale")
        if ready >= a.pairs:
            break
        time.sleep(1)
    all_ready = time.monotonic() - t0
    after = c.requests()
    rss = {w: c.rss_mib(w) for w in ("operator-0", "agent-node-a", "agent-node-b")}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total = sum(delta.values())
    objects = 2 * a.pairs
    top = sorted(delta.items(), key=lambda kv: -kv[1])[:8]

    return [
        "# Operator measurements",
        "",
        f"Machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}; local etcd + kube-apiserver,",
        "operator and two agents as processes (release builds).",
        "",
        f"## apply -> Ready, {a.targets} Targets one at a time (each with its Device)",
        "",
        f"p50 {statistics.median(lat):.2f} s, p99 {percentile(lat, 99):.2f} s, max {max(lat):.2f} s "
        "(includes starting kubectl twice per Target)",
        "",
        f"## {a.pairs} Device+Target pairs over two agents",
        "",
        "| what | value |",
        "|---|---:|",
        f"| applied ({a.appliers} kubectl at once, 100 objects per call) | {applied:.1f} s |",
        f"| all Targets Ready (from the first apply) | {all_ready:.1f} s ({ready} of {a.pairs} Ready) |",
        f"| all Targets Ready after the last apply | {all_ready - applied:.1f} s |",
        f"| operator RSS | {rss['operator-0']:.1f} MiB |",
        f"| agent RSS (node-a, node-b) | {rss['agent-node-a']:.1f} MiB, {rss['agent-node-b']:.1f} MiB |",
        f"| apiserver requests per object (all clients) | {total / objects:.2f} ({int(total)} for {objects} objects) |",
        "",
        "Requests by resource during the scale run: "
        + ", ".join(f"{k or '(none)'} {int(v)}" for k, v in top),
    ]


if __name__ == "__main__":
    main()
