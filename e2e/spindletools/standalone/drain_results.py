"""Checks a backing file against what the libiscsi writer (e2e/standalone/tools/writer.c) was
answered, for e2e/standalone/drain: GOOD writes present; fenced (25h/00h) writes absent. With
`restart`: no write may be answered with an error; unanswered ones (at most the queue depth)
are those the stop did not read.

  python3 -m spindletools.standalone.drain_results RESULTS FILE [drain|restart]
"""
import struct
import sys


def block(f, i):
    f.seek(i * 4096)
    return f.read(4096)


def expected(i):
    return struct.pack(">Q", i) + bytes([i & 0xFF]) * (4096 - 8)


def main():
    results, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    good, fenced, other = [], [], []
    for line in open(results):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "GOOD":
            good.append(int(parts[1]))
        elif parts[0] == "CHECK" and parts[2:] == ["05", "25", "00"]:
            fenced.append(int(parts[1]))
        else:
            other.append(line.strip())
    with open(path, "rb") as f:
        lost = [i for i in good if block(f, i) != expected(i)]
        executed = [i for i in fenced if block(f, i) == expected(i)]
    print(f"good={len(good)} fenced={len(fenced)} other={len(other)} lost={len(lost)} "
          f"executed_after_fence={len(executed)}")
    if lost:
        sys.exit(f"acknowledged writes missing from the file: {lost[:10]}")
    if mode == "restart":
        errors = [o for o in other if not o.startswith("ERROR ")]
        if fenced or errors:
            sys.exit(f"a restart answered writes with an error: {(fenced + errors)[:5]}")
        if len(other) > 16:
            sys.exit(f"{len(other)} writes unanswered, more than the 16 in flight")
        if len(good) < 1000:
            sys.exit("too few writes completed before the stop to mean anything")
        sys.exit(0)
    if executed:
        sys.exit(f"writes refused by the fence were executed anyway: {executed[:10]}")
    if other:
        sys.exit(f"writes answered neither GOOD nor 25h/00h (or not at all): {other[:5]}")
    answered = sorted(good + fenced)
    if answered != list(range(len(answered))):
        sys.exit("some submitted writes have no answer line")
    if len(good) < 1000:
        sys.exit("too few writes completed before the fence to mean anything")


if __name__ == "__main__":
    main()
