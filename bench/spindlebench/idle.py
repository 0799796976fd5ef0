"""Idle targets: how long a server takes to start N of them, what they cost at rest (RSS,
threads, descriptors) and whether the server sleeps (CPU and wake-ups while nobody calls)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import fairness, procs, procstat, promtext
from .targets import Server


@dataclass
class IdleResult:
    """One server with `targets` idle targets."""

    label: str
    targets: int
    start_s: float  # launch → every target served and the last one answering
    footprint: procstat.Footprint
    open_files: int
    cpu_pct: list[float] = field(default_factory=list)  # per window, % of one core
    wakeups_per_s: list[float] = field(default_factory=list)  # per window, all threads

    def cpu(self) -> fairness.Spread:
        return fairness.Spread.of(self.cpu_pct)

    def wakeups(self) -> fairness.Spread:
        return fairness.Spread.of(self.wakeups_per_s)


def wait_for_targets(metrics_url: str, count: int, timeout: float, server: Server) -> None:
    """Until the agent's `spindle_targets` gauge reads `count`."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        server.check_alive()
        try:
            seen = promtext.gauge(promtext.fetch(metrics_url), "spindle_targets")
        except OSError:
            seen = None
        if seen is not None and seen >= count:
            return
        if time.monotonic() > deadline:
            raise procs.ClientError(f"{server.label} serves {seen} of {count} targets after "
                                    f"{timeout:.0f} s")
        time.sleep(0.2)


def measure(label: str, server: Server, targets: int, start_s: float, settle: float,
            windows: int, seconds: float) -> IdleResult:
    """Footprint after `settle` s, then CPU and wake-ups over `windows` windows."""
    time.sleep(settle)
    result = IdleResult(label, targets, start_s, procstat.footprint(server.pid),
                        procstat.open_files(server.pid))
    for _ in range(windows):
        cpu0, wake0 = procstat.cpu_seconds(server.pid), procstat.context_switches(server.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1, wake1 = procstat.cpu_seconds(server.pid), procstat.context_switches(server.pid)
        dt = time.monotonic() - t0
        result.cpu_pct.append((cpu1 - cpu0) / dt * 100)
        result.wakeups_per_s.append((wake1 - wake0) / dt)
    server.check_alive()
    procs.log(f"[idle] {label}: {targets} targets: started in {start_s:.1f} s, "
              f"{result.footprint.rss_kib / 1024:.1f} MiB RSS, {result.footprint.threads} "
              f"threads, {result.open_files} descriptors, CPU {result.cpu().text(2)} % of a "
              f"core, {result.wakeups().text(1)} wake-ups/s")
    return result
