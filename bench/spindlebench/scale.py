"""`bench/scale`: many targets on one node. Spindle's agent with thousands of idle targets and a
thousand busy ones beside tgt where tgt can go: start time, memory, threads, idle CPU, and how
fairly the busy ones share the node; then an agent whose open-file limit is too small for its
Devices, which must refuse the excess and keep serving."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from spindletools import manifests

from . import (
    busy,
    cli,
    fairness,
    idle,
    machine,
    procs,
    procstat,
    promtext,
    scalereport,
)
from .cli import byte_size, endpoint
from .scalepoints import FdCheck, Point
from .main import REPO, agent_binary, raise_fd_limit
from .targets import SpindleAgent, TargetError, TargetLimit, Tgtd, sparse_file

TGT_IQN = "iqn.2026-11.peer:scale"
PREFIX = "scale"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/scale",
        description="Many targets on one node: Spindle's standalone agent serving --targets "
                    "idle targets of which --busy are read by one initiator session each "
                    "(an asyncio iSCSI initiator, every block checked), beside tgt (aio) at "
                    "--tgt-targets; then an agent under a small open-file limit. Markdown on "
                    "stdout, progress on stderr. Run it under `flock /tmp/spindle-e2e.lock` so "
                    "no other measurement overlaps. SPINDLE_AGENT=/path skips the build.")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke mode: 200 targets, 20 busy, 2 s windows, tgt at 20, the "
                        "open-file check at 128; exits non-zero on any failure")
    p.add_argument("--targets", type=int, help="targets the agent serves (default 10000)")
    p.add_argument("--busy", type=int, help="of them, read at once (default 1000)")
    p.add_argument("--tgt-targets", type=int,
                   help="targets (all busy) for the side-by-side point, Spindle and tgt "
                        "(default 500: tgt's aio LUNs need 128 of fs.aio-max-nr each; 0 skips)")
    p.add_argument("--seconds", type=float, help="length of a measured window (default 10)")
    p.add_argument("--reps", type=int, help="measured windows per busy run, each with "
                                            "fresh sessions (default 3)")
    p.add_argument("--qd", type=int, default=1, help="reads outstanding per session (1)")
    p.add_argument("--heavy-every", type=int, default=10,
                   help="mixed demand: after the even run, the largest Spindle point runs again "
                        "with every Nth busy target reading at --heavy-qd (default 10; 0 skips)")
    p.add_argument("--heavy-qd", type=int, default=8,
                   help="reads outstanding per heavy session (default 8)")
    p.add_argument("--span", type=int, default=16,
                   help="4 KiB blocks each busy target reads from, all stamped (16)")
    p.add_argument("--size", type=byte_size, default=16 << 20,
                   help="bytes per backing file, sparse (default 16MiB)")
    p.add_argument("--workers", type=int, default=2,
                   help="initiator processes sharing the sessions (default 2, one per core)")
    p.add_argument("--idle-windows", type=int, help="idle CPU windows (default 3)")
    p.add_argument("--idle-seconds", type=float, help="length of each (default 5)")
    p.add_argument("--fd-limit", type=int,
                   help="RLIMIT_NOFILE of the open-file check's agent (default 256; 0 skips)")
    p.add_argument("--listen", type=endpoint, default=("127.0.14.1", 3260),
                   metavar="ADDR:PORT", help="Spindle's portal (default 127.0.14.1:3260)")
    p.add_argument("--metrics", type=endpoint, default=("127.0.14.1", 9465),
                   metavar="ADDR:PORT", help="the agent's /metrics (default 127.0.14.1:9465)")
    p.add_argument("--tgt-portal", type=endpoint, default=("127.0.14.2", 3260),
                   metavar="ADDR:PORT", help="tgt's portal (default 127.0.14.2:3260)")
    p.add_argument("--tgt-control-port", type=int, default=3294,
                   help="tgtd -C control port (default 3294)")
    cli.common_options(p)
    a = p.parse_args(argv)
    q = a.quick
    a.targets = a.targets or (200 if q else 10000)
    a.busy = a.busy if a.busy is not None else (20 if q else 1000)
    a.tgt_targets = a.tgt_targets if a.tgt_targets is not None else (20 if q else 500)
    a.seconds = a.seconds or (2.0 if q else 10.0)
    a.reps = a.reps or (1 if q else 3)
    a.idle_windows = a.idle_windows or (2 if q else 3)
    a.idle_seconds = a.idle_seconds or (1.0 if q else 5.0)
    a.fd_limit = a.fd_limit if a.fd_limit is not None else (128 if q else 256)
    if not 1 <= a.busy <= a.targets:
        p.error("--busy must be between 1 and --targets")
    if a.qd < 1 or a.span < 1 or a.workers < 1 or a.seconds <= 0 or a.reps < 1:
        p.error("--qd, --span, --workers, --reps and --seconds must be positive")
    if a.heavy_every < 0 or a.heavy_qd < 1:
        p.error("--heavy-every must be 0 (skip) or more, --heavy-qd positive")
    if a.size % 4096 or a.size < a.span * 4096:
        p.error("--size must be a multiple of 4096 holding --span blocks")
    if a.fd_limit and a.fd_limit < 64:
        p.error("--fd-limit must be 0 (skip) or at least 64")
    return a


# What the agent does with descriptors (node-agent/src/store/fdlimit.rs): each served Device
# holds one (the node and the Target's ring share it), and an eighth of the limit (at least 32)
# stays free for sessions and the rest.
FDS_PER_TARGET = 1
FDS_BASE = 64  # rings, listeners, the metrics endpoint, logs: a generous bound


def fd_reserve(limit: int) -> int:
    return max(limit // 8, 32)


def fds_needed(targets: int) -> int:
    """The RLIMIT_NOFILE an agent needs to serve `targets` one-Device targets."""
    need = FDS_PER_TARGET * targets + FDS_BASE
    return max(need + 32, -(-need * 8 // 7) + 8)


def targets_within(limit: int) -> int:
    """How many one-Device targets an agent serves under RLIMIT_NOFILE `limit`."""
    return max(0, (limit - fd_reserve(limit) - FDS_BASE) // FDS_PER_TARGET)


def busy_indices(served: int, busy_count: int) -> list[int]:
    """Which of `served` targets are busy: spread evenly over them (and so over the rings,
    which take targets in turn)."""
    return sorted({i * served // busy_count for i in range(busy_count)})


def mixed_targets(targets: list[busy.BusyTarget], every: int,
                  qd: int) -> list[busy.BusyTarget]:
    """The busy targets with every `every`-th (the first, then each `every` on) reading at `qd`:
    heavy neighbours spread among light ones."""
    return [replace(t, qd=qd) if k % every == 0 else t for k, t in enumerate(targets)]


def disk_kib(folder: Path) -> int:
    """Blocks the files under `folder` really take (sparse files count what they hold)."""
    return sum(p.stat().st_blocks for p in folder.rglob("*") if p.is_file()) // 2


class ScaleHarness:
    def __init__(self, args: argparse.Namespace, scratch: Path, binary: str):
        self.args, self.scratch, self.binary = args, scratch, binary
        self.commands: list[tuple[str, list[str]]] = []
        self.plan = busy.BusyPlan(seconds=args.seconds, reps=args.reps, qd=args.qd,
                                  span_blocks=args.span, workers=args.workers,
                                  warmup=0.5 if args.quick else 1.0)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.args.metrics[0]}:{self.args.metrics[1]}/metrics"

    def spindle(self, served: int, busy_count: int, mixed: bool = False) -> Point:
        a = self.args
        point = Point("spindle", served, busy_count)
        wd = self.scratch / f"spindle-{served}"
        agent = SpindleAgent(self.binary, *a.listen, wd, metrics=a.metrics)
        procs.log(f"[setup] Spindle: {served} manifests and sparse files …")
        exports = [manifests.Export(f"{PREFIX}{i}", f"{PREFIX}{i}.img", a.size)
                   for i in range(served)]
        for e in exports:
            agent.add(e)
        targets = [busy.BusyTarget(exports[i].name, exports[i].iqn, exports[i].lun)
                   for i in busy_indices(served, busy_count)]
        for t in targets:
            busy.write_stamps(agent.data_dir / f"{t.name}.img", t.name, a.span)
        point.disk_kib = disk_kib(agent.data_dir)
        try:
            t0 = time.monotonic()
            agent.start(timeout=120 + served / 10)
            idle.wait_for_targets(self.metrics_url, served, 120 + served / 10, agent)
            start_s = time.monotonic() - t0
            point.idle = idle.measure(f"Spindle, {served}", agent, served, start_s,
                                      settle=1.0 if a.quick else 3.0,
                                      windows=a.idle_windows, seconds=a.idle_seconds)
            before = promtext.reads_by_target(promtext.fetch(self.metrics_url))
            point.busy = busy.run(agent, targets, self.plan, wd / "initiators",
                                  f"Spindle, {busy_count} of {served}")
            client = dict(point.busy.total_reads)
            if mixed:
                heavy = mixed_targets(targets, a.heavy_every, a.heavy_qd)
                point.heavy = frozenset(t.name for t in heavy if t.qd)
                point.mixed = busy.run(agent, heavy, self.plan, wd / "mixed",
                                       f"Spindle, {busy_count} of {served}, "
                                       f"{len(point.heavy)} at QD {a.heavy_qd}")
                for name, n in point.mixed.total_reads.items():
                    client[name] = client.get(name, 0) + n
            after = promtext.reads_by_target(promtext.fetch(self.metrics_url))
            ns = manifests.NAMESPACE + "/"
            server = {k.removeprefix(ns): v - before.get(k, 0) for k, v in after.items()
                      if v - before.get(k, 0)}
            point.mismatches = fairness.mismatches(client, server)
            point.checked = True
            time.sleep(1.0 if a.quick else 3.0)
            agent.check_alive()
            point.after = procstat.footprint(agent.pid)
        except (TargetError, procs.ClientError, OSError) as err:
            point.errors.append(f"Spindle, {served} targets: {err}")
            procs.log(f"[spindle] FAILED: {err}")
        finally:
            t0 = time.monotonic()
            complaint = agent.stop(grace=60 + served / 50)
            point.stop_s = time.monotonic() - t0
            if complaint:
                point.errors.append(complaint)
        for r in (point.busy, point.mixed):
            if r:
                point.errors += r.errors
        self.commands.append((f"Spindle with {served} targets", agent.setup_commands + [
            f"# {served} files like {agent.manifest_dir}/{exports[0].name}.yaml:", "",
            manifests.render(exports[0])]))
        return point

    def tgt(self, served: int) -> Point:
        a = self.args
        point = Point("tgt", served, served)
        wd = self.scratch / f"tgt-{served}"
        tgt = Tgtd(*a.tgt_portal, a.tgt_control_port, wd)
        targets = [busy.BusyTarget(f"{PREFIX}{i}", f"{TGT_IQN}.{PREFIX}{i}", Tgtd.TGT_LUN)
                   for i in range(served)]
        for t in targets:
            sparse_file(wd / f"{t.name}.img", a.size)
            busy.write_stamps(wd / f"{t.name}.img", t.name, a.span)
        point.disk_kib = disk_kib(wd)
        try:
            t0 = time.monotonic()
            tgt.start()
            procs.log(f"[setup] tgt: {served} targets through tgtadm …")
            urls = [tgt.add(t.iqn, wd / f"{t.name}.img", a.size, create_file=False,
                            record=i == 0) for i, t in enumerate(targets)]
            tgt.wait_ready([urls[0], urls[-1]], timeout=60)
            start_s = time.monotonic() - t0
            point.idle = idle.measure(f"tgt, {served}", tgt, served, start_s,
                                      settle=1.0 if a.quick else 3.0,
                                      windows=a.idle_windows, seconds=a.idle_seconds)
            point.busy = busy.run(tgt, targets, self.plan, wd / "initiators",
                                  f"tgt, {served} of {served}")
            time.sleep(1.0 if a.quick else 3.0)
            tgt.check_alive()
            point.after = procstat.footprint(tgt.pid)
        except TargetLimit as err:
            point.limit = str(err)
            procs.log(f"[tgt] {served} targets not measured: {err}")
        except (TargetError, procs.ClientError, OSError) as err:
            point.errors.append(f"tgt, {served} targets: {err}")
            procs.log(f"[tgt] FAILED: {err}")
        finally:
            t0 = time.monotonic()
            complaint = tgt.stop()
            point.stop_s = time.monotonic() - t0
            if complaint:
                point.errors.append(complaint)
        if point.busy:
            point.errors += point.busy.errors
        self.commands.append((f"tgt with {served} targets (the first; the others alike)",
                              tgt.setup_commands))
        return point

    def fd_check(self) -> FdCheck:
        """An agent under `prlimit --nofile=L` with L + 64 Devices: it must serve what fits,
        refuse the rest naming the limit, keep answering, and stop cleanly."""
        a = self.args
        check = FdCheck(limit=a.fd_limit, targets=a.fd_limit + 64)
        wd = self.scratch / "fd-check"
        prefix = ("prlimit", f"--nofile={a.fd_limit}:{a.fd_limit}", "--")
        agent = SpindleAgent(self.binary, *a.listen, wd, metrics=a.metrics, prefix=prefix)
        exports = [manifests.Export(f"fd{i}", f"fd{i}.img", 1 << 20)
                   for i in range(check.targets)]
        for e in exports:
            agent.add(e)
        procs.log(f"[fd-check] {check.targets} targets under RLIMIT_NOFILE {a.fd_limit} …")
        try:
            agent.start(timeout=120, probe=[exports[0]])
            check.answered = True  # start() waited for the first target's INQUIRY
            last, stable_since = None, time.monotonic()
            while time.monotonic() - stable_since < 2.0:  # until the count stops moving
                agent.check_alive()
                n = promtext.gauge(promtext.fetch(self.metrics_url), "spindle_targets")
                if n != last:
                    last, stable_since = n, time.monotonic()
                time.sleep(0.2)
            check.served = int(last or 0)
            log = agent.daemon.log_path.read_text(errors="replace") if agent.daemon else ""
            lines = [ln for ln in log.splitlines() if "RLIMIT_NOFILE" in ln and "raise" in ln]
            check.refusals = len(lines)
            check.message = lines[0] if lines else ""
            procs.run(["iscsi-inq", agent.url(exports[0].iqn, 0)], timeout=15)
        except (TargetError, procs.ClientError, OSError) as err:
            check.errors.append(f"open-file check: {err}")
        finally:
            complaint = agent.stop()
            if agent.daemon is None and complaint is None:
                check.exit_status = 0
            if complaint:
                check.errors.append(f"open-file check: {complaint}")
        if check.served is not None and not 0 < check.served < check.targets:
            check.errors.append(f"open-file check: the agent served {check.served} of "
                                f"{check.targets} targets under a limit of {check.limit}")
        if check.served is not None and check.refusals < check.targets - check.served:
            check.errors.append(f"open-file check: {check.targets - check.served} targets "
                                f"not served but only {check.refusals} errors name the limit")
        self.commands.append(("Open-file check", [" ".join(agent.setup_commands)]))
        return check


def problems_of(points: list[Point], fd: FdCheck | None) -> list[str]:
    out = []
    for p in points:
        out += p.errors
        out += [f"{p.key}: read count mismatch: {m}" for m in p.mismatches]
        for run, result in (("", p.busy), (" (mixed demand)", p.mixed)):
            for i, w in enumerate(result.windows if result else []):
                if w.fair.starved:
                    out.append(f"{p.key}, {p.served} targets{run}, window {i + 1}: "
                               f"{w.fair.starved} busy target(s) completed no read")
    if fd:
        out += fd.errors
    return out


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit(fds_needed(args.targets))
    asked, notes = args.targets, []
    if targets_within(fd_limit) < args.targets:
        args.targets = targets_within(fd_limit)
        args.busy = min(args.busy, args.targets)
        notes.append(
            f"{asked:,} targets need an open-file limit of {fds_needed(asked):,} (each served "
            f"Device holds one descriptor in the agent, which keeps an eighth of its limit "
            f"for sessions); this machine's hard limit is {fd_limit:,} and could not be raised, "
            f"so the agent serves {args.targets:,}.")
        procs.log(f"[setup] {notes[-1]}")
    load_start = machine.loadavg()

    def body(scratch: Path) -> cli.Outcome:
        if not args.no_install:
            machine.ensure_packages()
        binary = agent_binary(args)
        disk_free = shutil.disk_usage(scratch).free
        h = ScaleHarness(args, scratch, binary)
        points = [h.spindle(args.targets, args.busy, mixed=args.heavy_every > 0)]
        if args.tgt_targets:
            points.append(h.spindle(args.tgt_targets, args.tgt_targets))
            points.append(h.tgt(args.tgt_targets))
        fd = h.fd_check() if args.fd_limit else None
        info = machine.describe(scratch, load_start)
        info.append(("spindle-agent", machine.agent_version(binary, REPO)))
        info.append(("free disk at start", f"{disk_free / 2**30:.1f} GiB"))
        info.append(("open-file limit of the servers (RLIMIT_NOFILE)", f"{fd_limit:,}"))
        problems = problems_of(points, fd)
        return cli.Outcome(
            scalereport.render(args, points, fd, info, h.commands, problems, notes), problems, {
                "args": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in vars(args).items()},
                "machine": dict(info), "points": [asdict(p) for p in points],
                "fd_check": asdict(fd) if fd else None, "notes": notes})

    return cli.run(args, "spindle-scale.", body,
                   "every target answered and every read was checked")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
