"""Memory of a target server: RSS with N idle targets, and the cost of idle sessions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import procs, procstat
from .sessions import Sessions
from .targets import Server, TargetError, TargetLimit

SMALL_DEVICE = 1 << 20  # each idle target's LUN: a 1 MiB sparse file


@dataclass
class MemoryResult:
    """What the memory phase measured for one server (kB figures are RSS in KiB)."""

    counts: list[int] = field(default_factory=list)  # the N tried, measured or not
    targets: dict[int, procstat.Footprint] = field(default_factory=dict)
    sessions: int = 0
    before_sessions: procstat.Footprint | None = None
    with_sessions: procstat.Footprint | None = None
    after_sessions: procstat.Footprint | None = None
    errors: list[str] = field(default_factory=list)
    limits: dict[int, str] = field(default_factory=dict)  # N -> why the machine refused

    def per_session_kib(self) -> float | None:
        if self.before_sessions is None or self.with_sessions is None or not self.sessions:
            return None
        return (self.with_sessions.rss_kib - self.before_sessions.rss_kib) / self.sessions


# Prepares a server with `n` idle targets in `workdir`; returns it, the (portal, iqn, lun)
# of its first target, and the function that starts it and waits until it answers.
Factory = Callable[[int, Path], tuple[Server, tuple[str, str, int], Callable[[], None]]]


def measure(label: str, factory: Factory, counts: list[int], sessions: int, settle: float,
            workdir: Path, stops: list[Callable[[], str | None]]) -> MemoryResult:
    """For each N in `counts` start a fresh server with N idle targets and read its RSS;
    on the smallest N also open `sessions` idle sessions and read it again."""
    result = MemoryResult(counts=list(counts), sessions=sessions)
    smallest = min(counts) if counts else 0
    for n in counts:
        procs.log(f"[memory] {label}: {n} idle target(s) …")
        server = None
        try:
            server, first, start = factory(n, workdir / f"{label}-{n}")
            stops.append(server.stop)
            start()
            time.sleep(settle)
            result.targets[n] = procstat.footprint(server.pid)
            procs.log(f"[memory] {label}: {n} idle target(s): "
                      f"{result.targets[n].rss_kib} KiB RSS, {result.targets[n].threads} threads")
            if n == smallest and sessions > 0:
                _sessions(label, server, first, sessions, settle, workdir, result)
        except TargetLimit as err:
            result.limits[n] = str(err)
            procs.log(f"[memory] {label}: {n} idle target(s) not measured: {err}")
        except (TargetError, procs.ClientError, ProcessLookupError, OSError) as err:
            result.errors.append(f"{label}, {n} targets: {err}")
            procs.log(f"[memory] {label}: {n} idle target(s) FAILED: {err}")
        finally:
            if server is not None:
                stops.remove(server.stop)
                complaint = server.stop()
                if complaint:
                    result.errors.append(complaint)
    return result


def _sessions(label: str, server: Server, first: tuple[str, str, int], count: int,
              settle: float, workdir: Path, result: MemoryResult) -> None:
    portal, iqn, lun = first
    result.before_sessions = procstat.footprint(server.pid)
    holders = Sessions(portal, iqn, lun, count, workdir / f"{label}-sessions")
    try:
        holders.open(timeout=60 + count)
        open_now = procstat.established_to(server.host, server.port)
        if open_now < count:
            raise procs.ClientError(f"only {open_now} of {count} TCP sessions established")
        server.check_alive()
        time.sleep(settle)
        result.with_sessions = procstat.footprint(server.pid)
    finally:
        holders.close()
    time.sleep(settle)
    server.check_alive()
    result.after_sessions = procstat.footprint(server.pid)
    procs.log(f"[memory] {label}: {count} idle session(s): "
              f"{result.with_sessions.rss_kib} KiB RSS "
              f"({result.per_session_kib():.0f} KiB per session)")
