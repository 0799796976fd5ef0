"""Reads `helm template --set csi.enabled=true` on stdin; fails unless the CSI node plugin's
DaemonSet is rendered with automountServiceAccountToken: false (it runs with no API token).

  helm template ... | python3 -m spindletools.chart.csi_node_tokenless
"""
import sys

import yaml


def main():
    for d in yaml.safe_load_all(sys.stdin):
        if d and d["kind"] == "DaemonSet" and d["metadata"]["name"].endswith("csi-node"):
            if d["spec"]["template"]["spec"].get("automountServiceAccountToken") is not False:
                sys.exit("the CSI node plugin gets an API token")
            sys.exit(0)
    sys.exit("no CSI node DaemonSet rendered")


if __name__ == "__main__":
    main()
