"""`bench/run`: Spindle's agent beside tgt and raw fio on one machine, in one run."""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from spindletools import manifests

from . import cli, machine, memory, perf, procs, report, workloads
from .cli import SetupError, endpoint
from .targets import SpindleAgent, Tgtd, default_agent_binary, sparse_file

REPO = Path(__file__).resolve().parents[2]
LABELS = {"spindle": "Spindle", "tgt": "tgt", "raw": "raw fio"}
TGT_IQN = "iqn.2026-11.peer:tgt"


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,64,512: {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("counts must be 1 or more")
    return sorted(set(values))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark Spindle's standalone agent beside tgt (aio) and raw fio "
                    "(io_uring, O_DIRECT) on this machine. Markdown on stdout, progress on "
                    "stderr. Environment: SPINDLE_AGENT=/path/to/spindle-agent skips the "
                    "cargo build.")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke mode: short runs, 1 repetition, few targets/sessions; "
                        "exits non-zero if any subject or parser fails")
    p.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--seconds", type=int,
                   help="length of time-based runs (default 10; 1 with --quick)")
    p.add_argument("--size", type=int, default=1 << 30,
                   help="bytes per backing file (default 1 GiB)")
    p.add_argument("--subjects", default="spindle,tgt,raw",
                   help="comma-separated subset of spindle,tgt,raw (default: all)")
    p.add_argument("--workloads", default="",
                   help="comma-separated subset of: " + ", ".join(w.name for w in
                                                                  workloads.WORKLOADS))
    p.add_argument("--targets", type=_counts,
                   help="idle-target counts for the memory phase (default 1,64,512; 1,8 "
                        "with --quick)")
    p.add_argument("--sessions", type=int,
                   help="idle sessions for the per-session cost (default 64; 4 with --quick)")
    p.add_argument("--skip-perf", action="store_true", help="only the memory phase")
    p.add_argument("--skip-memory", action="store_true", help="only the throughput phase")
    cli.common_options(p)
    p.add_argument("--spindle-listen", type=endpoint, default=("127.0.0.2", 3260),
                   metavar="ADDR:PORT", help="Spindle's portal (default 127.0.0.2:3260)")
    p.add_argument("--spindle-metrics", type=endpoint, default=("127.0.0.2", 9464),
                   metavar="ADDR:PORT",
                   help="where the agent serves /metrics during the throughput phase; its "
                        "per-stage latency histograms are scraped before and after each "
                        "Spindle run (default 127.0.0.2:9464)")
    p.add_argument("--spindle-write-cache", choices=manifests.WRITE_CACHE_MODES,
                   default="writeback",
                   help="the Devices' writeCache (default writeback: WCE=1 with O_DIRECT, "
                        "as tgt's aio LUN and raw fio; writethrough syncs every write)")
    p.add_argument("--spindle-lun", type=int, default=0,
                   help="LUN number the manifests give the benchmark device (default 0)")
    p.add_argument("--tgt-portal", type=endpoint, default=("127.0.0.1", 3292),
                   metavar="ADDR:PORT", help="tgt's portal (default 127.0.0.1:3292)")
    p.add_argument("--tgt-control-port", type=int, default=3292,
                   help="tgtd -C control port, so it runs beside any other tgtd "
                        "(default 3292)")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.subjects.split(",") if k.strip()]
    if not keys or any(k not in LABELS for k in keys):
        p.error(f"--subjects takes a subset of {','.join(LABELS)}")
    args.subject_keys = [k for k in LABELS if k in keys]  # fixed column order
    try:
        args.selected = workloads.select(args.workloads)
    except ValueError as err:
        p.error(str(err))
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (1 if args.quick else 10)
    args.targets = args.targets or ([1, 8] if args.quick else [1, 64, 512])
    args.sessions = args.sessions if args.sessions is not None else (4 if args.quick else 64)
    if args.reps < 1 or args.seconds < 1 or args.size < 1 << 20 or args.size % 4096:
        p.error("--reps and --seconds must be positive; --size a multiple of 4096, >= 1 MiB")
    return args


def agent_binary(args: argparse.Namespace) -> str:
    """The agent to run: $SPINDLE_AGENT, else a fresh release build of this repo."""
    override = os.environ.get("SPINDLE_AGENT")
    if override:
        path = Path(override)
    else:
        path = default_agent_binary(REPO)
        if not args.no_build:
            procs.log("[setup] cargo build --release -p spindle-agent …")
            res = subprocess.run(["cargo", "build", "--release", "-p", "spindle-agent"],
                                 cwd=REPO, stdout=sys.stderr, check=False)
            if res.returncode:
                raise SetupError("cargo build --release -p spindle-agent failed")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SetupError(f"no executable spindle-agent at {path} (set SPINDLE_AGENT)")
    return str(path)


def prefill_command(path: Path, size: int) -> list[str]:
    """Writes the whole file once (O_DIRECT), so reads never hit holes."""
    return ["fio", "--name=prefill", f"--filename={path}", "--ioengine=io_uring",
            "--direct=1", "--rw=write", "--bs=1M", "--iodepth=8", f"--size={size}",
            "--end_fsync=1", "--output-format=terse"]


class Harness:
    """One run of the benchmark: owns the scratch folder and every server it starts."""

    def __init__(self, args: argparse.Namespace, scratch: Path):
        self.args, self.scratch = args, scratch
        self.stops: list[Callable[[], str | None]] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.commands: list[tuple[str, list[str]]] = []
        self.binary = ""

    def stop_all(self) -> None:
        while self.stops:
            stop = self.stops.pop()
            try:
                complaint = stop()
            except Exception as err:  # noqa: BLE001 - cleanup must go on
                complaint = f"cleanup: {err}"
            if complaint:
                self.problems.append(complaint)

    def _stop(self, stop: Callable[[], str | None]) -> None:
        self.stops.remove(stop)
        complaint = stop()
        if complaint:
            self.problems.append(complaint)

    # --- throughput phase -------------------------------------------------------------

    def perf_phase(self) -> list[perf.RunResult]:
        a, keys = self.args, self.args.subject_keys
        files = {"spindle": self.scratch / "spindle" / "data" / "bench.img",
                 "tgt": self.scratch / "tgt" / "tgt.img",
                 "raw": self.scratch / "raw" / "raw.img"}
        prefill = []
        for key in keys:
            files[key].parent.mkdir(parents=True, exist_ok=True)
            sparse_file(files[key], a.size)
            procs.log(f"[setup] prefilling {files[key]} …")
            cmd = prefill_command(files[key], a.size)
            procs.run(cmd, timeout=600)
            prefill.append(shlex.join(cmd))
        self.commands.append(("Backing files (each a fresh sparse file of "
                              f"{a.size} bytes, then written once)", prefill))
        subjects: list[perf.Subject] = []
        if "spindle" in keys:
            agent = SpindleAgent(self.binary, *a.spindle_listen, self.scratch / "spindle",
                                 a.spindle_write_cache, metrics=a.spindle_metrics)
            export = manifests.Export("bench", "bench.img", a.size, lun=a.spindle_lun)
            url = agent.add(export, create_file=False)
            self.stops.append(agent.stop)
            procs.log(f"[setup] starting spindle-agent on {agent.portal} …")
            agent.start(timeout=120)
            self.commands.append((f"Spindle ({agent.manifest_dir}/bench.yaml below)",
                                  agent.setup_commands
                                  + ["", manifests.render(export, a.spindle_write_cache)]))
            subjects.append(perf.Subject("spindle", LABELS["spindle"], url, server=agent))
        if "tgt" in keys:
            tgt = Tgtd(*a.tgt_portal, a.tgt_control_port, self.scratch / "tgt")
            self.stops.append(tgt.stop)
            procs.log(f"[setup] starting tgtd on {tgt.portal} …")
            tgt.start()
            url = tgt.add(TGT_IQN, files["tgt"], a.size, create_file=False)
            tgt.wait_ready([url], timeout=30)
            self.commands.append(("tgt", tgt.setup_commands))
            subjects.append(perf.Subject("tgt", LABELS["tgt"], url, server=tgt))
        if "raw" in keys:
            subjects.append(perf.Subject("raw", LABELS["raw"], str(files["raw"]), size=a.size))
        results = perf.run_all(subjects, a.selected, a.reps, a.seconds, a.quick,
                               count_timeout=60 if a.quick else 900,
                               pause=0.2 if a.quick else 1.0, backing_dir=self.scratch)
        for s in subjects:
            if s.server:
                self._stop(s.server.stop)
        lines = []
        for wl in a.selected:
            for s in subjects:
                lines.append(f"# {wl.name}, {s.label}")
                lines.append(shlex.join(s.command(wl, a.seconds, wl.count(a.quick))))
        self.commands.append(("Workloads", lines))
        self.problems += [f"{r.subject} {r.workload} (rep {r.rep + 1}): {r.error}"
                          for r in results if r.error]
        self.problems += [f"spindle {r.workload} (rep {r.rep + 1}): no stage histograms: "
                          f"{r.stages_error or 'the agent reported no commands'}"
                          for r in results if r.subject == "spindle" and not r.error
                          and not (r.stages or {}).get("total", {}).get("count")]
        return results

    # --- memory phase -----------------------------------------------------------------

    def spindle_factory(self, n: int, wd: Path):
        agent = SpindleAgent(self.binary, *self.args.spindle_listen, wd,
                             self.args.spindle_write_cache)
        exports = [manifests.Export(f"idle{i}", f"idle{i}.img", memory.SMALL_DEVICE,
                                    lun=self.args.spindle_lun) for i in range(n)]
        for e in exports:
            agent.add(e)
        first = (agent.portal, exports[0].iqn, exports[0].lun)
        return agent, first, lambda: agent.start(timeout=120 + n / 4)

    def tgt_factory(self, n: int, wd: Path):
        tgt = Tgtd(*self.args.tgt_portal, self.args.tgt_control_port, wd)
        iqns = [f"{TGT_IQN}.idle{i}" for i in range(n)]

        def start() -> None:
            tgt.start()
            urls = [tgt.add(iqn, wd / f"idle{i}.img", memory.SMALL_DEVICE, record=False)
                    for i, iqn in enumerate(iqns)]
            tgt.wait_ready([urls[0], urls[-1]], timeout=60)

        return tgt, (tgt.portal, iqns[0], Tgtd.TGT_LUN), start

    def memory_phase(self) -> dict[str, memory.MemoryResult]:
        a = self.args
        factories = {"spindle": self.spindle_factory, "tgt": self.tgt_factory}
        out = {}
        for key in a.subject_keys:
            if key in factories:
                out[key] = memory.measure(key, factories[key], a.targets, a.sessions,
                                          settle=1.0 if a.quick else 3.0,
                                          workdir=self.scratch / "memory", stops=self.stops)
                self.problems += out[key].errors
                self.notes += [f"{key}, {n} targets: {why}"
                               for n, why in out[key].limits.items()]
        if out:
            self.commands.append(("Session holders (one per session)", [
                "qemu-io -r --image-opts 'driver=raw,file.driver=iscsi,file.transport=tcp,"
                "file.portal=PORTAL,file.target=IQN,file.lun=LUN,"
                "file.initiator-name=iqn.2026-11.dev.spindle:bench-session-K'"]))
        return out


def mode_line(a: argparse.Namespace) -> str:
    memory = ("" if a.skip_memory else
              f" Memory: {', '.join(map(str, a.targets))} idle targets, {a.sessions} idle "
              f"sessions.")
    if a.skip_perf:
        return f"Mode: {'quick' if a.quick else 'full'} — memory phase only.{memory}"
    counts = "/".join(str(w.count(a.quick)) for w in a.selected if w.client == "qemu-img")
    return (f"Mode: {'quick (a smoke test, not a measurement)' if a.quick else 'full'} — "
            f"{a.reps} repetition(s); iscsi-perf and the matching fio runs last {a.seconds} s; "
            f"qemu-img bench counts {counts or '—'}; per workload the subjects alternate and "
            f"the first one rotates each repetition. Backing files: {a.size >> 20} MiB each, "
            f"written in full before the first run.{memory}")


def raise_fd_limit(want: int = 0) -> int:
    """Many targets need many descriptors: lift the soft limit to the hard one for this
    process and its children, and the hard one to `want` where allowed (root, up to
    fs.nr_open). Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            procs.log(f"[setup] cannot raise the open-file limit to {want} (hard limit "
                      f"{hard}); servers get {hard}")
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    load_start = machine.loadavg()
    harnesses: list[Harness] = []

    def body(scratch: Path) -> cli.Outcome:
        if not args.no_install:
            machine.ensure_packages()
        binary = agent_binary(args) if "spindle" in args.subject_keys else ""
        harness = Harness(args, scratch)
        harnesses.append(harness)
        harness.binary = binary
        runs = [] if args.skip_perf else harness.perf_phase()
        mem = {} if args.skip_memory else harness.memory_phase()
        harness.stop_all()
        info = machine.describe(scratch, load_start)
        if binary:
            info.append(("spindle-agent", machine.agent_version(binary, REPO)))
        rep = report.Report(
            title="Spindle benchmark: agent beside tgt and raw fio",
            mode_line=mode_line(args),
            subjects=[(k, LABELS[k]) for k in args.subject_keys],
            workloads=args.selected, runs=runs, reps=args.reps, machine=info,
            commands=harness.commands, memory=mem,
            memory_labels={k: ("Spindle" if k == "spindle" else "tgtd") for k in mem},
            problems=harness.problems, notes=harness.notes)
        return cli.Outcome(report.render(rep), harness.problems, {
            "mode": "quick" if args.quick else "full", "reps": args.reps,
            "seconds": args.seconds, "size": args.size, "machine": dict(info),
            "runs": [r.as_dict() for r in runs],
            "memory": {k: asdict(v) for k, v in mem.items()}, "notes": harness.notes})

    return cli.run(args, "spindle-bench.", body, "all subjects answered and every result parsed",
                   cleanup=lambda: [h.stop_all() for h in harnesses])


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
