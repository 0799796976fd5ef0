"""Reads `kubectl auth whoami -o json` on stdin; prints "USER NODE-NAMES": the user name and
the node names (comma-separated) the token's authentication.kubernetes.io/node-name claims.

  kubectl auth whoami -o json | python3 -m spindletools.chart.whoami
"""
import json
import sys


def main():
    u = json.load(sys.stdin)["status"]["userInfo"]
    print(u["username"], ",".join(u.get("extra", {}).get("authentication.kubernetes.io/node-name", [])))


if __name__ == "__main__":
    main()
