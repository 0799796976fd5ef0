"""A Target's QoS limits, measured by a real initiator: one session keeps QUEUE_DEPTH 4 KiB
reads in flight. The Target's readIops limit must hold within 5 % over 10 s; then the manifest
is changed to a new limit and the agent told (SIGHUP): the new limit must hold within 5 % from
1 s after the change on, on the same session (never closed). Writes are not held by the read
limit, and the agent's metrics show the time reads were throttled.

  python3 -m spindletools.standalone.qos_limits HOST PORT IQN MANIFEST AGENT_PID METRICS_URL \
      TARGET_KEY OLD_IOPS NEW_IOPS
"""
import os
import signal
import sys
import time
import urllib.request

from spindletools.iscsi.pdu import DATA_IN, GOOD, SCSI_RSP, read10, write10
from spindletools.iscsi.session import Session

QUEUE_DEPTH = 8
BLOCKS = 8  # 4 KiB of 512-byte blocks
TOLERANCE = 0.05


def pump(s, seconds, write=False, on_time=None):
    """Keeps QUEUE_DEPTH commands in flight for `seconds`; calls `on_time(elapsed)` once past
    each whole second. Returns the completion times (time.monotonic)."""
    data = bytes(BLOCKS * 512)
    done = []
    inflight = set()
    lba = 0
    start = time.monotonic()
    ticked = 0
    while True:
        now = time.monotonic()
        if on_time and now - start >= ticked + 1:
            ticked += 1
            on_time(ticked)
        sending = now - start < seconds
        while sending and len(inflight) < QUEUE_DEPTH and s.window_open():
            lba = (lba + BLOCKS) % 65536
            if write:
                itt = s.command(write10(lba, BLOCKS), edtl=len(data), write=True, immediate=data)
            else:
                itt = s.command(read10(lba, BLOCKS), edtl=BLOCKS * 512, read=True)
            inflight.add(itt)
        if not inflight:
            return done
        p = s.recv()
        finished = p.opcode == SCSI_RSP or (p.opcode == DATA_IN and p.flags & 0x01)
        if finished and p.itt in inflight:
            if p.status != GOOD:
                raise SystemExit(f"command {p.itt:#x} failed: status {p.status:#x} {p.sense()}")
            inflight.discard(p.itt)
            done.append(time.monotonic())


def rate(times, t0, t1):
    return sum(1 for t in times if t0 <= t < t1) / (t1 - t0)


def check(what, got, want):
    off = abs(got - want) / want
    verdict = "ok" if off <= TOLERANCE else "FAIL"
    print(f"{what}: {got:.1f} IOPS, limit {want} ({off * 100:.1f} % off): {verdict}", flush=True)
    return off <= TOLERANCE


def throttled_seconds(url, target):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    want = f'spindle_qos_throttled_seconds_total{{direction="read",target="{target}"}} '
    for line in text.splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return 0.0


def main():
    host, port, iqn, manifest, pid, url, target = sys.argv[1:8]
    old, new = int(sys.argv[8]), int(sys.argv[9])
    s = Session(host, int(port), "iqn.2026-11.dev.spindle:test.qos", iqn)
    s.until_good()
    ok = True

    # The limit held: after 1 s (burst and start-up), 10 s measured.
    times = pump(s, 11)
    start = times[0]
    ok &= check(f"readIops {old}, 10 s", rate(times, start + 1, start + 11), old)

    # A live change: the manifest changed and the agent told, mid-run, on the same session.
    changed = {}

    def change(second):
        if second == 2:
            with open(manifest) as f:
                text = f.read()
            with open(manifest, "w") as f:
                f.write(text.replace(f"readIops: {old}", f"readIops: {new}"))
            changed["at"] = time.monotonic()
            os.kill(int(pid), signal.SIGHUP)

    times = pump(s, 6, on_time=change)
    at = changed["at"]
    ok &= check(f"readIops {new}, from 1 s after the change", rate(times, at + 1, at + 4), new)

    # Writes are apart: the read limit does not hold them.
    w = pump(s, 2, write=True)
    wrate = len(w) / 2
    writes_free = wrate > 1.5 * new
    print(f"writes (no write limit): {wrate:.0f} IOPS: {'ok' if writes_free else 'FAIL'}",
          flush=True)
    ok &= writes_free

    secs = throttled_seconds(url, target)
    print(f"spindle_qos_throttled_seconds_total (read): {secs:.1f}", flush=True)
    ok &= secs > 1.0
    s.logout()
    print("the session stayed up through the change", flush=True)
    if not ok:
        raise SystemExit("QoS limits not held")


if __name__ == "__main__":
    main()
