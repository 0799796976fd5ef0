"""Busy targets: one initiator session per target (spindletools.iscsi.reader worker processes),
all reading at once; per measured window the reads of each target, the server's CPU and
footprint, and a check of each target's read count against what came back."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spindletools.iscsi import reader

from . import fairness, procs, procstat
from .targets import Server

# The worker runs the reader module alone: its package root (e2e/) is all it needs.
TOOLS_ROOT = Path(reader.__file__).resolve().parents[2]


@dataclass(frozen=True)
class BusyTarget:
    """A target the initiator reads from: its stamp name, IQN and LUN, and the reads its
    session keeps outstanding (0: the plan's)."""

    name: str
    iqn: str
    lun: int
    qd: int = 0


def write_stamps(path: Path, name: str, span_blocks: int) -> None:
    """Stamps the first `span_blocks` 4 KiB blocks of a backing file (the rest stays sparse)."""
    with open(path, "r+b") as f:
        for block in range(span_blocks):
            f.seek(block * reader.BLOCK)
            f.write(reader.stamp(name, block))


@dataclass
class Window:
    """One measured window of the busy phase."""

    seconds: float
    reads: dict[str, int]  # per target, checked reads completed in the window
    fair: fairness.Fairness
    server_cpu_s: float
    server_wakeups: int
    client_cpu_s: float
    login_s: float  # from starting the workers to every session logged in
    footprint: procstat.Footprint  # the server during the window's end
    sessions: int  # TCP sessions established at the server before the window
    latency_ms: float  # mean read latency seen by the initiator
    login_retries: int = 0  # logins the server dropped and the initiator tried again
    p99_ms: dict[str, float] = field(default_factory=dict)  # per target, its reads' p99

    def cpu_us_per_read(self) -> float | None:
        total = sum(self.reads.values())
        return self.server_cpu_s / total * 1e6 if total else None


@dataclass
class BusyResult:
    windows: list[Window] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    total_reads: dict[str, int] = field(default_factory=dict)  # incl. warm-up, all windows


@dataclass
class BusyPlan:
    """How to load the targets."""

    seconds: float
    reps: int
    qd: int
    span_blocks: int
    workers: int
    warmup: float = 1.0
    initiator_name: str = "iqn.2026-11.dev.spindle:bench-scale"


def _worker_specs(server: Server, targets: list[BusyTarget], plan: BusyPlan, rep: int,
                  workdir: Path) -> list[Path]:
    paths = []
    count = max(1, min(plan.workers, len(targets)))
    for w in range(count):
        mine = targets[w::count]
        spec = reader.Spec(
            host=server.host, port=server.port, seconds=plan.seconds, qd=plan.qd,
            span_blocks=plan.span_blocks, initiator=f"{plan.initiator_name}-w{w}",
            seed=rep * 7919 + w, targets=[t.__dict__ for t in mine],
            login_timeout=60 + len(mine) / 5,
            extra={"warmup": plan.warmup, "first_index": w * 1_000_000})
        path = workdir / f"worker-{rep}-{w}.json"
        path.write_text(json.dumps(spec.__dict__))
        paths.append(path)
    return paths


def _read_lines(daemons: list[procs.Daemon], timeout: float, what: str) -> list[str]:
    """One line of stdout from every daemon, within `timeout` s."""
    fds = {d.proc.stdout.fileno(): d for d in daemons}
    buf = {fd: b"" for fd in fds}
    lines: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(lines) < len(fds):
        left = deadline - time.monotonic()
        if left <= 0:
            raise procs.ClientError(f"{len(fds) - len(lines)} initiator worker(s) gave no "
                                    f"{what} within {timeout:.0f} s")
        ready, _, _ = select.select([fd for fd in fds if fd not in lines], [], [],
                                    min(left, 1.0))
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                d = fds[fd]
                d.proc.wait(timeout=5)
                raise procs.ClientError(f"initiator worker ended before its {what}: "
                                        f"{d.log_tail(400)}")
            buf[fd] += chunk
            if b"\n" in buf[fd]:
                lines[fd] = buf[fd].split(b"\n", 1)[0].decode(errors="replace")
                buf[fd] = buf[fd].split(b"\n", 1)[1]
    return [lines[fd] for fd in fds]


def _window(server: Server, targets: list[BusyTarget], plan: BusyPlan, rep: int,
            workdir: Path, result: BusyResult) -> None:
    specs = _worker_specs(server, targets, plan, rep, workdir)
    env = dict(os.environ, PYTHONPATH=str(TOOLS_ROOT))
    t0 = time.monotonic()
    daemons = [procs.Daemon(f"initiator-{rep}-{i}",
                            [sys.executable, "-m", "spindletools.iscsi.reader", str(p)],
                            workdir / f"initiator-{rep}-{i}.log", stdin=subprocess.PIPE,
                            stdout_pipe=True, env=env)
               for i, p in enumerate(specs)]
    try:
        ready = _read_lines(daemons, 120 + len(targets) / 5, "ready line")
        login_s = time.monotonic() - t0
        logged_in = sum(int(line.split()[1]) for line in ready if line.startswith("ready "))
        sessions = procstat.established_to(server.host, server.port)
        if logged_in < len(targets):
            result.errors.append(f"rep {rep + 1}: only {logged_in} of {len(targets)} sessions "
                                 f"logged in")
        client0 = sum(procstat.cpu_seconds(d.pid) for d in daemons)
        for d in daemons:
            d.proc.stdin.write(b"go\n")
            d.proc.stdin.flush()
        time.sleep(plan.warmup)
        cpu0, wake0 = procstat.cpu_seconds(server.pid), procstat.context_switches(server.pid)
        time.sleep(plan.seconds)
        cpu1, wake1 = procstat.cpu_seconds(server.pid), procstat.context_switches(server.pid)
        footprint = procstat.footprint(server.pid)
        client1 = sum(procstat.cpu_seconds(d.pid) for d in daemons)
        outputs = _read_lines(daemons, 120 + len(targets) / 5, "results")
        for d in daemons:
            d.proc.wait(timeout=60)
    finally:
        for d in daemons:
            d.kill()
    server.check_alive()
    reads: dict[str, int] = {}
    p99_ms: dict[str, float] = {}
    latency, elapsed, retries = 0.0, [], 0
    for line in outputs:
        out = json.loads(line)
        elapsed.append(out["elapsed"])
        for r in out["results"]:
            reads[r["target"]] = r["reads"]
            p99_ms[r["target"]] = r.get("latency_p99", 0.0) * 1e3
            latency += r["latency_sum"]
            retries += r["login_retries"]
            result.total_reads[r["target"]] = (result.total_reads.get(r["target"], 0)
                                               + r["total_reads"])
            if r["error"]:
                result.errors.append(f"rep {rep + 1}, {r['target']}: {r['error']}")
    seconds = sum(elapsed) / len(elapsed)
    total = sum(reads.values())
    result.windows.append(Window(
        seconds=seconds, reads=reads,
        fair=fairness.fairness([reads.get(t.name, 0) for t in targets], seconds),
        server_cpu_s=cpu1 - cpu0, server_wakeups=wake1 - wake0,
        client_cpu_s=client1 - client0, login_s=login_s, footprint=footprint,
        sessions=sessions, latency_ms=latency / total * 1e3 if total else 0.0, p99_ms=p99_ms,
        login_retries=retries))


def run(server: Server, targets: list[BusyTarget], plan: BusyPlan, workdir: Path,
        label: str) -> BusyResult:
    """`plan.reps` windows; each starts fresh sessions (a login storm), warms up, measures."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = BusyResult()
    for rep in range(plan.reps):
        procs.log(f"[busy] {label}: window {rep + 1}/{plan.reps}, {len(targets)} sessions …")
        try:
            _window(server, targets, plan, rep, workdir, result)
        except (procs.ClientError, OSError, ValueError, subprocess.TimeoutExpired) as err:
            result.errors.append(f"rep {rep + 1}: {err}")
            procs.log(f"[busy] {label}: window {rep + 1} FAILED: {err}")
            continue
        w = result.windows[-1]
        procs.log(f"[busy] {label}: {w.fair.total_iops:,.0f} IOPS, slowest target "
                  f"{w.fair.worst_ratio:.2f}× its fair share, {w.fair.below_half} below half; "
                  f"server CPU {w.server_cpu_s / w.seconds * 100:.0f} %")
    return result
