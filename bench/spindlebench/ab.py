"""A/B of two spindle-agent binaries on one prefilled file, rounds alternating.

    bench/ab --a NEW_AGENT --b OLD_AGENT [--rounds 4] [--seconds 5] [--workloads ...]

Each round starts agent A, runs every workload, stops it, then does the same with B (the
order swaps every round, so drift hits both alike; the rounds must be even, so each agent goes
first equally often). Before each agent starts, the file is flushed to the disk and the machine
given 2 s: the other agent's writes (or the prefill) still on their way to the host would
otherwise slow whichever agent reads next — in an A/A run of one binary with 3 rounds and no
flush, the agent that went first read 128 KiB blocks at 0.85× the other. Even so, an A/A run
of one binary on this VM still favoured the B slot by ~5 % (cause not found): run it both ways
(--a NEW --b OLD, then --a OLD --b NEW) and take √(ratio₁ ÷ ratio₂), as docs/benchmarks.md does. Both serve the same 1 GiB file,
written once before the first round, with the same manifest and the same clients as
bench/run. Prints per workload each agent's median (min–max) and the A/B ratio per round.
Needs the same packages as bench/run (libiscsi-bin, qemu-utils, fio); root is not needed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from spindletools import manifests

from . import hoststat, perf, procs, workloads
from .main import prefill_command
from .targets import SpindleAgent, sparse_file


def settle(img: Path) -> None:
    """Flushes the file (a cache flush reaches the disk under it) and lets the machine settle,
    so no agent starts while the previous one's writes are still being written back."""
    fd = os.open(img, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.sync()
    time.sleep(2)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="agent binary A (the candidate)")
    ap.add_argument("--b", required=True, help="agent binary B (the reference)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5, help="length of iscsi-perf runs")
    ap.add_argument("--workloads", default=None, help="subset, as bench/run --workloads")
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--listen", default="127.0.0.2:3260")
    ap.add_argument("--workdir", default="/tmp")
    a = ap.parse_args()
    if a.rounds < 2 or a.rounds % 2:
        ap.error("--rounds must be even (each agent goes first in half of them)")
    wls = workloads.select(a.workloads)
    host, port = a.listen.rsplit(":", 1)
    scratch = Path(tempfile.mkdtemp(prefix="spindle-ab.", dir=a.workdir))
    data = scratch / "data"
    data.mkdir()
    img = data / "bench.img"
    sparse_file(img, a.size)
    procs.log(f"[setup] prefilling {img} …")
    procs.run(prefill_command(img, a.size), timeout=600)
    export = manifests.Export("bench", "bench.img", a.size, lun=0)
    sampler = hoststat.Sampler(scratch)
    figures: dict[tuple[str, str], list[float]] = {}
    failed = 0
    try:
        for rnd in range(a.rounds):
            order = [("A", a.a), ("B", a.b)]
            if rnd % 2:
                order.reverse()
            for name, binary in order:
                wd = scratch / f"agent-{name}-{rnd}"
                agent = SpindleAgent(binary, host, int(port), wd)
                agent.data_dir = data  # the one prefilled file, shared by both agents
                url = agent.add(export, create_file=False)
                settle(img)
                try:
                    agent.start(timeout=120)
                    for wl in wls:
                        subject = perf.Subject("spindle", name, url, server=agent)
                        timeout = a.seconds + 60 if wl.client == "iscsi-perf" else 900
                        r = perf.run_one(subject, wl, rnd, a.seconds, wl.count(False),
                                         timeout, sampler)
                        if r.error:
                            failed += 1
                            procs.log(f"[{rnd + 1}] {name} {wl.name} FAILED: {r.error}")
                            continue
                        value = r.latency_us if wl.depth == 1 else (
                            r.iops if wl.block_size <= 4096 else r.mib_per_s)
                        figures.setdefault((wl.name, name), []).append(value)
                        procs.log(f"[{rnd + 1}] {name} {wl.name}: {value:,.1f} "
                                  f"(target {r.target_cpu_us_per_io:.1f} µs CPU/IO, "
                                  f"CPUs {r.cpu_busy_pct:.0f} %)")
                finally:
                    complaint = agent.stop()
                    if complaint:
                        procs.log(f"[{rnd + 1}] {name}: {complaint}")
                        failed += 1
    finally:
        procs.run(["rm", "-rf", str(scratch)], timeout=60)
    print("| workload | unit | A median (min–max) | B median (min–max) | A/B per round: "
          "geometric mean (each round) |")
    print("|---|---|---|---|---|")
    for wl in wls:
        fa, fb = figures.get((wl.name, "A"), []), figures.get((wl.name, "B"), [])
        if not fa or not fb:
            print(f"| {wl.name} | | FAILED | FAILED | |")
            continue
        unit = "µs" if wl.depth == 1 else ("IOPS" if wl.block_size <= 4096 else "MiB/s")
        ratios = [x / y for x, y in zip(fa, fb)]
        cell = lambda v: f"{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})"  # noqa: E731
        print(f"| {wl.name} | {unit} | {cell(fa)} | {cell(fb)} | "
              f"{gmean(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) |")
    return 1 if failed else 0


def gmean(values: list[float]) -> float:
    """Geometric mean: the fair average of ratios (A/B and B/A average to reciprocals)."""
    return math.exp(statistics.fmean(math.log(v) for v in values))


if __name__ == "__main__":
    sys.exit(main())
