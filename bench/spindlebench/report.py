"""Render the results as one Markdown document (medians, ratios, memory, machine)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from spindletools import manifests

from . import stages
from .memory import MemoryResult
from .perf import RunResult
from .workloads import Workload

DASH = "—"


@dataclass
class Report:
    """Everything one harness run learned, ready to render."""

    title: str
    mode_line: str
    subjects: list[tuple[str, str]]  # (key, label) in column order
    workloads: Sequence[Workload]
    runs: list[RunResult]
    reps: int
    machine: list[tuple[str, str]]
    commands: list[tuple[str, list[str]]]  # (heading, command lines)
    memory: dict[str, MemoryResult] = field(default_factory=dict)  # key -> result
    memory_labels: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def median_of(runs: list[RunResult], wl: str, subject: str,
              metric: Callable[[RunResult], float | None]) -> float | None:
    """Median of `metric` over the successful runs of one workload on one subject."""
    values = [v for r in runs if r.workload == wl and r.subject == subject
              and r.error is None and (v := metric(r)) is not None]
    return statistics.median(values) if values else None


def paired_ratios(runs: list[RunResult], wl: str, a: str, b: str,
                  metric: Callable[[RunResult], float | None]) -> list[float]:
    """`a`'s metric ÷ `b`'s for each repetition where both succeeded. Within a repetition
    the subjects run back to back, so these ratios shrug off slow drifts of the machine."""
    def by_rep(key: str) -> dict[int, float]:
        return {r.rep: v for r in runs if r.workload == wl and r.subject == key
                and r.error is None and (v := metric(r)) is not None}
    mine, other = by_rep(a), by_rep(b)
    return [mine[rep] / other[rep] for rep in sorted(mine) if other.get(rep)]


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return DASH
    return f"{a / b:.2f}"


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


Metric = Callable[[RunResult], float | None]


def headline(wl: Workload) -> tuple[Metric, int]:
    """The figure a workload is judged by, and its decimals."""
    if wl.unit == "MiB/s":
        return (lambda r: r.mib_per_s), 1
    return (lambda r: r.iops), 0


class _Renderer:
    def __init__(self, rep: Report):
        self.rep = rep
        self.keys = [k for k, _ in rep.subjects]
        self.labels = dict(rep.subjects)
        has_spindle = "spindle" in self.keys
        self.others = [k for k in ("tgt", "raw") if k in self.keys] if has_spindle else []

    def med(self, wl: Workload, key: str, metric) -> float | None:
        return median_of(self.rep.runs, wl.name, key, metric)

    def per_subject_table(self, metric_for: Callable[[Workload], tuple[Metric, int]],
                          with_unit: bool) -> list[str]:
        """One row per workload: the median per subject, then the Spindle ratios."""
        header = ["workload"] + (["unit"] if with_unit else [])
        header += [self.labels[k] for k in self.keys]
        header += [f"Spindle/{self.labels[o]}" for o in self.others]
        rows = []
        for wl in self.rep.workloads:
            m, d = metric_for(wl)
            values = {k: self.med(wl, k, m) for k in self.keys}
            row = [wl.title] + ([wl.unit] if with_unit else [])
            row += [fmt(values[k], d) if values[k] is not None else self.failed(wl, k)
                    for k in self.keys]
            row += [ratio(values["spindle"], values[o]) for o in self.others]
            rows.append(row)
        return markdown_table(header, rows, right_from=2 if with_unit else 1)

    def failed(self, wl: Workload, key: str) -> str:
        ran = [r for r in self.rep.runs if r.workload == wl.name and r.subject == key]
        return "FAILED" if ran else DASH

    def cpu_table(self) -> list[str]:
        servers = [k for k in self.keys if k != "raw"]
        names = {"spindle": "Spindle agent", "tgt": "tgtd"}
        header = ["workload"] + [names[k] for k in servers]
        if "spindle" in servers and "tgt" in servers:
            header.append("Spindle/tgt")
        header += [f"client of {self.labels[k]}" if k != "raw" else "fio on the raw file"
                   for k in self.keys]
        rows = []
        for wl in self.rep.workloads:
            target = {k: self.med(wl, k, lambda r: r.target_cpu_us_per_io) for k in servers}
            client = {k: self.med(wl, k, lambda r: r.client_cpu_us_per_io) for k in self.keys}
            row = [wl.title] + [fmt(target[k], 2) for k in servers]
            if "spindle" in servers and "tgt" in servers:
                row.append(ratio(target["spindle"], target["tgt"]))
            row += [fmt(client[k], 2) for k in self.keys]
            rows.append(row)
        return markdown_table(header, rows)

    def host_table(self) -> list[str]:
        """Mean requests at the disk and CPU busy % of the machine, per subject."""
        header = (["workload", "queue depth"]
                  + [f"disk queue, {self.labels[k]}" for k in self.keys]
                  + [f"CPUs busy %, {self.labels[k]}" for k in self.keys])
        rows = []
        for wl in self.rep.workloads:
            queue = [fmt(self.med(wl, k, lambda r: r.disk_queue), 1) for k in self.keys]
            busy = [fmt(self.med(wl, k, lambda r: r.cpu_busy_pct), 0) for k in self.keys]
            rows.append([wl.title, str(wl.depth)] + queue + busy)
        return markdown_table(header, rows)

    def paired_table(self) -> list[str]:
        """Spindle ÷ each other subject per repetition: median and range."""
        header = ["workload"] + [f"Spindle/{self.labels[o]}: median (min–max)"
                                 for o in self.others]
        rows = []
        for wl in self.rep.workloads:
            metric, _ = headline(wl)
            row = [wl.title]
            for o in self.others:
                rs = paired_ratios(self.rep.runs, wl.name, "spindle", o, metric)
                row.append(f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"
                           if rs else DASH)
            rows.append(row)
        return markdown_table(header, rows)

    def stages_tables(self) -> list[str]:
        """Per workload, Spindle's stage histograms summed over its repetitions."""
        out = []
        for wl in self.rep.workloads:
            parts = [stages.from_json(r.stages) for r in self.rep.runs
                     if r.workload == wl.name and r.subject == "spindle" and r.error is None
                     and r.stages]
            if not parts:
                continue
            merged = stages.merge(parts)
            total = merged.get("total")
            total_mean = total.mean() if total else None
            rows = []
            for name in stages.STAGES:
                h = merged.get(name)
                if h is None or h.count <= 0:
                    continue
                mean = h.mean()
                share = (f"{100 * mean / total_mean:.0f} %"
                         if name != "total" and total_mean and mean is not None else "")
                rows.append([name, f"{h.count:,.0f}", fmt(_us(mean), 1),
                             fmt(_us(h.quantile(0.5)), 1), fmt(_us(h.quantile(0.99)), 1),
                             share])
            out += [f"{wl.name}:", ""]
            out += markdown_table(["stage", "commands", "mean µs", "p50 µs", "p99 µs", "of total mean"],
                          rows) + [""]
        return out

    def runs_table(self) -> list[str]:
        header = ["workload", "unit"] + [self.labels[k] for k in self.keys]
        rows = []
        for wl in self.rep.workloads:
            metric, digits = headline(wl)
            row = [wl.title, wl.unit]
            for k in self.keys:
                cells = [("FAILED" if r.error else fmt(metric(r), digits))
                         for r in self.rep.runs if r.workload == wl.name and r.subject == k]
                row.append(" / ".join(cells) or DASH)
            rows.append(row)
        return markdown_table(header, rows, right_from=2)

    def memory_tables(self) -> list[str]:
        mem = self.rep.memory
        if not mem:
            return []
        keys = list(mem)
        names = [self.rep.memory_labels.get(k, k) for k in keys]
        counts = sorted({n for m in mem.values() for n in [*m.counts, *m.targets]})
        out = ["## Memory: idle targets", "",
               "RSS of the target's process tree after it serves N targets, each a 1 MiB "
               "file-backed LUN, with no session open.", ""]
        header = ["idle targets"]
        for name in names:
            header += [f"{name} RSS (MiB)", f"{name} threads"]
        rows = []
        for n in counts:
            row = [str(n)]
            for k in keys:
                fp = mem[k].targets.get(n)
                missing = "n/a (limit)" if n in mem[k].limits else "FAILED"
                row += [fmt(fp.rss_kib / 1024, 1) if fp else missing,
                        str(fp.threads) if fp else DASH]
            rows.append(row)
        out += markdown_table(header, rows) + [""]
        k_sessions = max((m.sessions for m in mem.values()), default=0)
        if k_sessions:
            out += [f"## Memory: idle sessions ({k_sessions} on one target)", "",
                    "Each session is a read-only `qemu-io` that logged in, read the capacity "
                    "and sits at its prompt (distinct initiator names; the target sees one "
                    "ESTABLISHED TCP connection per session).", ""]
            rows = []
            for title, get in (
                ("RSS, no session (MiB)", lambda m: m.before_sessions),
                (f"RSS, {k_sessions} sessions (MiB)", lambda m: m.with_sessions),
                ("RSS after they logged out (MiB)", lambda m: m.after_sessions),
            ):
                rows.append([title] + [fmt(get(mem[k]).rss_kib / 1024, 1) if get(mem[k])
                                       else "FAILED" for k in keys])
            rows.append(["per session (KiB)"] + [fmt(mem[k].per_session_kib(), 0)
                                                 if mem[k].per_session_kib() is not None
                                                 else "FAILED" for k in keys])
            out += markdown_table([""] + names, rows) + [""]
        return out

    def render(self) -> str:
        rep = self.rep
        out = [f"# {rep.title}", "", rep.mode_line, ""]
        if self.others:
            out += ["Ratios are Spindle ÷ the other subject: above 1 is better for "
                    "throughput, below 1 is better for latency and CPU.", ""]
        if rep.runs:
            out += [f"## Throughput (median of {rep.reps})", ""]
            out += self.per_subject_table(headline, with_unit=True) + [""]
            out += ["## Mean latency, µs (queue depth ÷ IOPS, median)", ""]
            out += self.per_subject_table(lambda _wl: ((lambda r: r.latency_us), 0),
                                          with_unit=False) + [""]
            out += ["## CPU time per I/O, µs (median)", "",
                    "Target: utime+stime of the target's process tree (/proc/PID/stat, "
                    "10 ms resolution) over the run ÷ I/Os done. Client: user+system CPU of "
                    "the client command, start-up and login included; for fio on the raw "
                    "file, the job's own usr+sys, which is all the work of that I/O.", ""]
            out += self.cpu_table() + [""]
            if self.others:
                out += ["## Ratios per repetition (median, min–max)", "",
                        "Each repetition runs the subjects of a workload back to back; "
                        "the headline figure of Spindle ÷ the other subject's in the same "
                        "repetition. Less sensitive to a machine that speeds up or slows "
                        "down during the run than the ratio of medians above.", ""]
                out += self.paired_table() + [""]
            out += ["## What the machine did (median)", "",
                    "Disk queue: mean requests in flight at the disk under the backing files "
                    "(weighted time in queue from its /sys/block stat ÷ run time). For random "
                    "I/O the client keeps 'queue depth' commands outstanding, so the difference "
                    "is how many were elsewhere (client, network, target); sequential I/O is "
                    "merged by the block layer into fewer, larger requests, so compare those "
                    "between subjects only. CPUs busy: all cores together, "
                    "from /proc/stat (idle and iowait count as not busy). A subject with idle "
                    "CPUs and an under-fed disk is waiting, not working.", ""]
            out += self.host_table() + [""]
            staged = self.stages_tables()
            if staged:
                out += ["## Where Spindle's time goes (per stage, all repetitions)", "",
                        "The agent's `spindle_stage_seconds{stage}` histograms, scraped before "
                        "and after each Spindle run: decode = PDU received → command decoded, "
                        "dispatch → store I/O submitted to the ring, io → I/O completed, "
                        "complete → response queued, send → response written to the socket; "
                        "total = received → written. Commands without store I/O count in "
                        "decode, send and total only. Quantiles are interpolated in buckets "
                        "a factor √2 apart.", ""]
                out += staged
            out += ["## Every run (headline figure, in run order)", ""]
            out += self.runs_table() + [""]
        out += self.memory_tables()
        out += ["## iSCSI parameters", "",
                 "Both targets offer the same: " + manifests.iscsi_params_text() + "", ""]
        out += ["## Machine", ""]
        out += markdown_table(["", ""], [[k, v] for k, v in rep.machine], right_from=99) + [""]
        out += ["## Commands", ""]
        for heading, lines in rep.commands:
            out += [f"{heading}:", "", "```", *lines, "```", ""]
        if rep.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
        if rep.problems:
            out += ["## Problems", ""] + [f"- {p}" for p in rep.problems] + [""]
        return "\n".join(out)


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def render(rep: Report) -> str:
    """The whole report as Markdown."""
    return _Renderer(rep).render()
