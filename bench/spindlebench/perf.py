"""The throughput phase: every workload against every subject, alternating, R times."""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import hoststat, parsers, procs, procstat, stages, workloads
from .targets import Server
from .workloads import Workload


@dataclass(frozen=True)
class Subject:
    """Something a workload runs against: an iSCSI LUN (`server` set) or a raw file."""

    key: str  # 'spindle' | 'tgt' | 'raw'
    label: str
    url_or_path: str
    server: Server | None = None
    size: int = 0  # of the raw file

    def tool(self, wl: Workload) -> str:
        return wl.client if self.server else "fio"

    def command(self, wl: Workload, seconds: int, count: int) -> list[str]:
        if self.server:
            return workloads.iscsi_command(wl, self.url_or_path, seconds, count)
        return workloads.fio_command(wl, self.url_or_path, self.size, seconds, count)


@dataclass
class RunResult:
    """One client run: its headline figures, its CPU cost, or why it failed."""

    workload: str
    subject: str
    rep: int
    command: str
    iops: float | None = None
    mib_per_s: float | None = None
    latency_us: float | None = None
    ios: float | None = None
    target_cpu_us_per_io: float | None = None
    client_cpu_us_per_io: float | None = None
    # The whole machine during the run: CPU busy % of all cores, mean requests at the disk.
    cpu_busy_pct: float | None = None
    disk_queue: float | None = None
    # Spindle only: the agent's stage histograms over this run (stages.to_json form).
    stages: dict | None = None
    stages_error: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def schedule(subjects: list[Subject], wls: tuple[Workload, ...], reps: int):
    """(rep, workload, subject) in run order: per workload the subjects alternate, and
    the first subject rotates from one repetition to the next (A B C, B C A, …)."""
    order = []
    for rep in range(reps):
        shift = rep % len(subjects) if subjects else 0
        rotated = subjects[shift:] + subjects[:shift]
        for wl in wls:
            order.extend((rep, wl, s) for s in rotated)
    return order


def run_one(subject: Subject, wl: Workload, rep: int, seconds: int, count: int,
            timeout: float, sampler: hoststat.Sampler) -> RunResult:
    cmd = subject.command(wl, seconds, count)
    result = RunResult(wl.name, subject.key, rep, shlex.join(cmd))
    try:
        metrics_url = getattr(subject.server, "metrics_url", None)
        before = _scrape(metrics_url, result)
        if subject.server:
            subject.server.check_alive()
            cpu0 = procstat.cpu_seconds(subject.server.pid)
        sampler.start()
        run = procs.run(cmd, timeout=timeout)
        host = sampler.stop()
        if subject.server:
            subject.server.check_alive()
            cpu1 = procstat.cpu_seconds(subject.server.pid)
        after = _scrape(metrics_url, result)
        if before is not None and after is not None:
            result.stages = stages.to_json(stages.delta(after, before))
        m = workloads.parse(wl, subject.tool(wl), run.stdout, seconds)
    except (procs.ClientError, parsers.ParseError, RuntimeError, OSError) as err:
        result.error = str(err)
        return result
    result.iops, result.mib_per_s, result.ios = m.iops, m.mib_per_s, m.ios
    result.latency_us = m.mean_latency_us(wl.depth)
    result.cpu_busy_pct, result.disk_queue = host.cpu_busy_pct, host.disk_queue
    client_cpu = m.tool_cpu_s if m.tool_cpu_s is not None else run.cpu_s
    result.client_cpu_us_per_io = client_cpu / m.ios * 1e6
    if subject.server:
        result.target_cpu_us_per_io = (cpu1 - cpu0) / m.ios * 1e6
    return result


def _scrape(url: str | None, result: RunResult) -> dict | None:
    """The stage histograms at `url` (None without a URL, or noted in `result` on failure:
    the scrape happens outside the timed run)."""
    if url is None:
        return None
    try:
        return stages.scrape(url)
    except OSError as err:
        result.stages_error = f"scraping {url}: {err}"
        return None


def run_all(subjects: list[Subject], wls: tuple[Workload, ...], reps: int, seconds: int,
            quick: bool, count_timeout: float, pause: float,
            backing_dir: Path) -> list[RunResult]:
    """Run the whole schedule; time-based runs may overrun `seconds` by a minute, counted
    ones get `count_timeout`. `backing_dir` holds the backing files (its disk is watched)."""
    order = schedule(subjects, wls, reps)
    sampler = hoststat.Sampler(backing_dir)
    results = []
    for i, (rep, wl, subject) in enumerate(order, 1):
        tag = f"[{i}/{len(order)}] {subject.key} {wl.name}"
        procs.log(f"{tag} …")
        slack = 30 if quick else 60
        timeout = seconds + slack if wl.client == "iscsi-perf" else count_timeout
        r = run_one(subject, wl, rep, seconds, wl.count(quick), timeout, sampler)
        if r.error:
            procs.log(f"{tag} FAILED: {r.error}")
        else:
            cpu = (f", target {r.target_cpu_us_per_io:.1f} µs CPU/IO"
                   if r.target_cpu_us_per_io is not None else "")
            disk = f", disk queue {r.disk_queue:.1f}" if r.disk_queue is not None else ""
            procs.log(f"{tag}: {r.iops:,.0f} IOPS, {r.mib_per_s:,.1f} MiB/s, "
                      f"{r.latency_us:,.0f} µs{cpu}, CPUs {r.cpu_busy_pct:.0f} % busy{disk}")
        results.append(r)
        time.sleep(pause)
    return results
