"""Reads the operator Deployment (`kubectl get deployment -o json`) on stdin and prints a Pod
from its pod template, named NAME in NAMESPACE, whose operator stands for election as ID
(--identity replaced), with ARGS added to the operator's arguments.

  kubectl get deployment ... -o json | python3 -m spindletools.cluster.replica_pod NAME NAMESPACE ID [ARGS...]
"""
import json
import sys


def main():
    d = json.load(sys.stdin)
    t = d["spec"]["template"]
    meta = t["metadata"]
    meta["name"] = sys.argv[1]
    meta["namespace"] = sys.argv[2]
    meta["labels"]["app.kubernetes.io/component"] = "operator-e2e"
    c = t["spec"]["containers"][0]
    c["args"] = ([a for a in c.get("args", []) if not a.startswith("--identity")]
                 + ["--identity=" + sys.argv[3]] + sys.argv[4:])
    print(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]}))


if __name__ == "__main__":
    main()
