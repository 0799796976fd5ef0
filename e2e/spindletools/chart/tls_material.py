"""Reads `helm template` on stdin and writes the TLS material the chart generated into OUT_DIR:
operator.<key> from the operator's Secret, agent.ca.crt from the agents' CA ConfigMap. Fails on
any other Secret (agents hold no key from the chart), on a CA ConfigMap holding more than
ca.crt, and on an agent given a certificate (--tls-cert / --tls-key).

  helm template ... | python3 -m spindletools.chart.tls_material OUT_DIR
"""
import base64
import sys

import yaml


def main():
    out = sys.argv[1]
    for d in yaml.safe_load_all(sys.stdin):
        if not d:
            continue
        if d["kind"] == "Secret":
            if d["metadata"]["name"] != "spindle-operator-tls":
                sys.exit("unexpected Secret " + d["metadata"]["name"]
                         + ": agents hold no key from the chart")
            for key, value in d["data"].items():
                open(out + "/operator." + key, "wb").write(base64.b64decode(value))
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "spindle-agent-ca":
            if set(d["data"]) != {"ca.crt"}:
                sys.exit("the agent CA ConfigMap holds more than ca.crt: " + " ".join(d["data"]))
            open(out + "/agent.ca.crt", "w").write(d["data"]["ca.crt"])
        if d["kind"] == "DaemonSet":
            args = " ".join(d["spec"]["template"]["spec"]["containers"][0]["args"])
            if "--tls-cert" in args or "--tls-key" in args:
                sys.exit("the agent is given a certificate: " + args)


if __name__ == "__main__":
    main()
