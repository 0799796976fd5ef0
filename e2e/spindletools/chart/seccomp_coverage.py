"""Checks the system calls in strace logs (`strace -f`) against the agent's seccomp profile:
prints what was seen; fails when nothing was traced or a call is outside the profile.

  python3 -m spindletools.chart.seccomp_coverage PROFILE.json STRACE_LOG...
"""
import json
import re
import sys


def main():
    allowed = {n for rule in json.load(open(sys.argv[1]))["syscalls"]
               if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    seen, refused, lines = {}, 0, 0
    for path in sys.argv[2:]:
        for line in open(path, errors="replace"):
            m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
            if m:
                lines += 1
                seen[m.group(1)] = seen.get(m.group(1), 0) + 1
                refused += "= -1 EPERM" in line and m.group(1) not in allowed
    denied = sorted(n for n in seen if n not in allowed)
    print(f"{len(sys.argv) - 2} traces, {lines} calls, {len(seen)} distinct system calls, "
          f"{len(allowed)} allowed")
    print("seen:", " ".join(f"{n}:{c}" for n, c in sorted(seen.items())))
    if not lines:
        sys.exit("no system call traced")
    if denied:
        sys.exit(f"outside the profile (refused with EPERM {refused} times): {' '.join(denied)}")


if __name__ == "__main__":
    main()
