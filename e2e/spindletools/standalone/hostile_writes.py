"""Hostile initiators against the agent's write memory bound.

  python3 -m spindletools.standalone.hostile_writes HOST:PORT IQN AGENT_PID --sessions N
      --seconds S --bound-mib B --honest 'COMMAND ...'

N sessions each keep their CmdSN window full of 8 MiB writes and send all of each write's
data but the last 512 bytes (so the target holds the data and can never finish the write).
Meanwhile the agent's resident memory is sampled. The honest command (a real initiator's
writes) runs once before the attack and once during it; its elapsed times are compared.

Prints one line of figures; exits non-zero when the agent's RSS went past
baseline + B MiB + slack, when memory did not come back after the attackers left, or when
the honest writer ran at less than a third of its speed. Kills the agent if its RSS passes
1.5 GiB (a target without a bound would take the machine down).
"""
import argparse
import os
import subprocess
import sys
import threading
import time

from spindletools.iscsi import pdu
from spindletools.iscsi import session as r

WRITE = 8 << 20
BLOCK = 512
SAFETY_KIB = 1536 * 1024


def attacker(addr, iqn, n, stop, stats):
    host, port = addr.rsplit(":", 1)
    try:
        s = r.Session(host, int(port), f"iqn.2026-11.dev.spindle:test.hostile{n}", iqn,
                      isid=0x400000100000 + n,
                      keys={"InitialR2T": "No", "ImmediateData": "Yes",
                            "FirstBurstLength": "262144", "MaxBurstLength": "1048576"})
    except Exception as e:  # noqa: BLE001
        stats["login_errors"] += 1
        print(f"hostile {n}: login failed: {e!r}", file=sys.stderr)
        return
    data = bytes(WRITE)
    imm = min(s.param("FirstBurstLength"), s.param("MaxRecvDataSegmentLength"))
    s.sock.settimeout(0.2)
    lba = (64 << 20) // BLOCK + n * 64 * (WRITE // BLOCK)
    while not stop.is_set():
        while s.window_open() and not stop.is_set():
            s.command(pdu.write10(lba % (1 << 21), WRITE // BLOCK), edtl=WRITE, write=True,
                      immediate=data[:imm])
            stats["writes"] += 1
            lba += WRITE // BLOCK
        try:
            p = s.recv()
        except TimeoutError:
            continue
        except (r.Closed, OSError):
            stats["closed"] += 1
            return
        if p.opcode == pdu.R2T:
            off = int.from_bytes(p.bhs[40:44], "big")
            length = int.from_bytes(p.bhs[44:48], "big")
            last = off + length == WRITE
            s.sock.settimeout(30)
            s.answer_r2t(p, data, withhold=512 if last else 0)
            s.sock.settimeout(0.2)
            stats["r2t"] += 1
    s.sock.close()


def timed(cmd):
    t0 = time.monotonic()
    rc = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL).returncode
    if rc != 0:
        sys.exit(f"hostile_writes: the honest writer failed (exit {rc}): {cmd}")
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("iqn")
    ap.add_argument("pid", type=int)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--bound-mib", type=int, required=True)
    ap.add_argument("--honest", required=True)
    a = ap.parse_args()

    base = r.vm_rss_kib(a.pid)
    honest_alone = timed(a.honest)
    stop = threading.Event()
    stats = {"writes": 0, "r2t": 0, "closed": 0, "login_errors": 0}
    threads = [threading.Thread(target=attacker, args=(a.addr, a.iqn, n, stop, stats), daemon=True)
               for n in range(a.sessions)]
    for t in threads:
        t.start()
    peak = base
    killed = False

    def sample(until):
        nonlocal peak, killed
        while time.monotonic() < until:
            rss = r.vm_rss_kib(a.pid)
            peak = max(peak, rss)
            if rss > SAFETY_KIB:
                os.kill(a.pid, 9)
                killed = True
                return
            time.sleep(0.1)

    sample(time.monotonic() + a.seconds / 2)
    honest_during = None
    if not killed:
        done = {}
        th = threading.Thread(target=lambda: done.setdefault("t", timed(a.honest)))
        th.start()
        while th.is_alive() and not killed:
            sample(time.monotonic() + 0.5)
        th.join()
        honest_during = done.get("t")
        sample(time.monotonic() + a.seconds / 2)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    after = None
    if not killed:
        # The attackers are gone: their memory goes back.
        time.sleep(3)
        after = r.vm_rss_kib(a.pid)
    mib = lambda k: k / 1024  # noqa: E731
    print(f"hostile_writes: sessions={a.sessions} writes_sent={stats['writes']} r2ts={stats['r2t']} "
          f"rss_base={mib(base):.0f}MiB rss_peak={mib(peak):.0f}MiB "
          f"rss_after={mib(after or 0):.0f}MiB bound={a.bound_mib}MiB "
          f"honest_alone={honest_alone:.2f}s honest_during={honest_during or 0:.2f}s")
    if killed:
        sys.exit(f"hostile_writes: agent RSS passed {SAFETY_KIB // 1024} MiB; killed it")
    if stats["login_errors"]:
        sys.exit("hostile_writes: some attackers could not log in")
    slack = 48 * 1024
    if peak > base + a.bound_mib * 1024 + slack:
        sys.exit(f"hostile_writes: RSS peaked at {mib(peak):.0f} MiB, past the bound")
    if after > base + slack:
        sys.exit(f"hostile_writes: RSS {mib(after):.0f} MiB after the attackers left: memory not given back")
    if honest_during > 3 * honest_alone + 1:
        sys.exit("hostile_writes: the honest writer lost more than two thirds of its speed")


if __name__ == "__main__":
    main()
