"""The verdict of e2e/standalone/conformance on iscsi-test-cu's log: every test of the suite
ran, every run exited 0, at least MIN_PASSED passed, and every test that did not pass is listed
so in conformance-expected.txt (a test listed there that now passes is reported, not failed).

  python3 -m spindletools.standalone.conformance_verdict LOG EXPECTED MIN_PASSED ALL_TESTS RC1 RC2
"""
import sys

from .cu_score import verdicts as score


def main():
    log, expected_file, min_passed, all_file, rc1, rc2 = sys.argv[1:7]
    verdicts = score(open(log, errors="replace").read().splitlines())
    expected = {}
    for line in open(expected_file):
        if line.strip() and not line.startswith("#"):
            verdict, name = line.split()
            expected[name] = verdict
    ok = True
    everything = {t.strip() for t in open(all_file) if t.strip()}
    missing = sorted(everything - verdicts.keys())
    print(f"conformance: {len(verdicts)} of the suite's {len(everything)} tests ran")
    if missing:
        print(f"conformance: {len(missing)} tests never ran (crash or timeout?): {missing[:10]}")
        ok = False
    for what, rc in (("the whole suite", rc1), ("the ReadOnly, physical-block and Sanitize runs", rc2)):
        if rc != "0":
            print(f"conformance: iscsi-test-cu exited {rc} on {what} (CUnit failures, a crash "
                  "or a timeout)")
            ok = False
    passed = sum(1 for v in verdicts.values() if v == "passed")
    if passed < int(min_passed):
        print(f"conformance: {passed} passed, fewer than {min_passed}")
        ok = False
    for name, v in sorted(verdicts.items()):
        if v != "passed" and expected.get(name) != v:
            print(f"conformance: {name} is {v}, not listed so in conformance-expected.txt")
            ok = False
        if v == "passed" and name in expected:
            print(f"conformance: {name} now passes; remove it from conformance-expected.txt")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
