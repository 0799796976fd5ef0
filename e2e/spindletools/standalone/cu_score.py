"""Scores an `iscsi-test-cu` log: every test is passed, skipped or failed.

CUnit itself reports a skipped test as passed (and exits 0 on failures); this scorer does
not: a test counts as passed only if it ran to the end without a [SKIPPED] mark or CUnit's
verdict word FAILED. libiscsi's own "[FAILED] ..." log lines are not verdicts: a test may
expect a command to fail and the helper logs that failure all the same, and a suite's
clean-up logs after the verdict (the same rule as the project's shared cu-score).

usage: python3 -m spindletools.standalone.cu_score LOG [--list] [--json] [--min-passed N] [--max-failed N]
  --list          print every test that did not pass, one per line, before the summary
  --json          print {"counts": ..., "tests": {name: verdict}} instead
  --min-passed N  exit 1 unless at least N tests passed
  --max-failed N  exit 1 if more than N tests failed
"""
import argparse
import json
import re
import sys

SUITE = re.compile(r"^Suite: (\S+)")
TEST = re.compile(r"^\s+Test: (\S+) \.\.\.(.*)$")
# CUnit's verdict word, not libiscsi's bracketed "[FAILED]" log lines.
CUNIT_FAILED = re.compile(r"(?<!\[)\bFAILED\b(?!\])")


def verdicts(lines):
    """Maps Suite.Test to 'passed', 'skipped' or 'failed' from CUnit's verbose output."""
    out = {}
    suite, name = None, None
    for line in lines:
        s = SUITE.match(line)
        if s:
            suite, name = s.group(1), None
            continue
        t = TEST.match(line)
        if t:
            name = f"{suite}.{t.group(1)}"
            out[name] = "passed"
            tail = t.group(2)
        elif name is None:
            continue
        else:
            tail = line
        if CUNIT_FAILED.search(tail):
            out[name] = "failed"
        elif "[SKIPPED]" in tail and out[name] == "passed":
            out[name] = "skipped"
    return out


def main():
    ap = argparse.ArgumentParser(prog="cu-score", description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--min-passed", type=int)
    ap.add_argument("--max-failed", type=int)
    a = ap.parse_args()
    with open(a.log, errors="replace") as f:
        v = verdicts(f.read().splitlines())
    counts = {k: sum(1 for x in v.values() if x == k) for k in ("passed", "skipped", "failed")}
    counts["total"] = len(v)
    if a.json:
        print(json.dumps({"counts": counts, "tests": v}, indent=1, sort_keys=True))
    else:
        if a.list:
            for name in sorted(v):
                if v[name] != "passed":
                    print(f"{v[name]:8} {name}")
        print(" ".join(f"{k}={n}" for k, n in counts.items()))
    ok = True
    if a.min_passed is not None and counts["passed"] < a.min_passed:
        print(f"cu-score: {counts['passed']} passed, fewer than {a.min_passed}", file=sys.stderr)
        ok = False
    if a.max_failed is not None and counts["failed"] > a.max_failed:
        print(f"cu-score: {counts['failed']} failed, more than {a.max_failed}", file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
