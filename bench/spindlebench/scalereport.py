"""The scale benchmark's Markdown report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spindletools import manifests

from .fairness import Spread
from .report import DASH, markdown_table

if TYPE_CHECKING:
    import argparse

    from .scalepoints import FdCheck, Point

LABELS = {"spindle": "Spindle", "tgt": "tgt"}


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def _spread(values: list[float], digits: int = 0, unit: str = "") -> str:
    return Spread.of(values).text(digits, unit) if values else DASH


def idle_rows(points: list[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        i = p.idle
        if i is None:
            rows.append([LABELS[p.key], f"{p.served:,}", p.limit or "not measured"] +
                        [DASH] * 7)
            continue
        per = i.footprint.rss_kib / p.served
        rows.append([
            LABELS[p.key], f"{p.served:,}", f"{i.start_s:.1f}",
            _mib(i.footprint.rss_kib), f"{per:.1f}", str(i.footprint.threads),
            f"{i.open_files:,}", _spread(i.cpu_pct, 2), _spread(i.wakeups_per_s, 1),
            f"{p.stop_s:.1f}" if p.stop_s is not None else DASH])
    return rows


def busy_rows(points: list[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        ws = p.busy.windows if p.busy else []
        if not ws:
            rows.append([LABELS[p.key], f"{p.busy_count:,} of {p.served:,}",
                         p.limit or "not measured"] + [DASH] * 10)
            continue
        rows.append([
            LABELS[p.key], f"{p.busy_count:,} of {p.served:,}",
            _spread([w.login_s for w in ws], 1) + f" / {max(w.login_retries for w in ws)}",
            _spread([w.fair.total_iops for w in ws]),
            _spread([w.fair.per_target.median for w in ws]),
            _spread([w.fair.per_target.min for w in ws]) + " / "
            + _spread([w.fair.per_target.max for w in ws]),
            _spread([w.fair.worst_ratio for w in ws], 2),
            str(max(w.fair.below_half for w in ws)),
            _spread([w.fair.jain for w in ws], 3),
            _spread([w.server_cpu_s / w.seconds * 100 for w in ws]),
            _spread([v for w in ws if (v := w.cpu_us_per_read()) is not None], 1),
            _spread([w.latency_ms for w in ws], 2), _p99(ws)])
    return rows


def _group(w, names) -> tuple[float, float, float]:
    """Median and slowest IOPS of the targets `names` in window `w`, and the slowest ÷ the
    window's fair share."""
    iops = [n / w.seconds for name, n in w.reads.items() if name in names]
    if not iops:
        return 0.0, 0.0, 0.0
    slowest = min(iops)
    return Spread.of(iops).median, slowest, slowest / w.fair.fair_share


def _p99(ws, names=None) -> str:
    """The targets' read p99 (ms) over windows `ws`: the median target's / the worst one's."""
    figures = [[v for n, v in getattr(w, "p99_ms", {}).items() if names is None or n in names]
               for w in ws]
    figures = [f for f in figures if f]
    if not figures:
        return DASH
    return (_spread([Spread.of(f).median for f in figures], 2) + " / "
            + _spread([max(f) for f in figures], 2))


def mixed_rows(points: list[Point], heavy_qd: int) -> list[list[str]]:
    rows = []
    for p in points:
        ws = p.mixed.windows if p.mixed else []
        if not ws:
            continue
        groups = []
        for heavy in (False, True):
            figures = [_group(w, {n for n in w.reads if (n in p.heavy) == heavy}) for w in ws]
            groups.append(_spread([f[0] for f in figures]) + " / "
                          + _spread([f[1] for f in figures]))
            groups.append(_spread([f[2] for f in figures], 2))
        p99s = [_p99(ws, {n for n in ws[0].reads if (n in p.heavy) == heavy})
                for heavy in (False, True)]
        rows.append([
            LABELS[p.key], f"{p.busy_count:,} of {p.served:,}",
            f"{len(p.heavy):,} at QD {heavy_qd}",
            _spread([w.fair.total_iops for w in ws]), *groups,
            str(max(w.fair.below_half for w in ws)),
            _spread([w.fair.jain for w in ws], 3),
            _spread([w.latency_ms for w in ws], 2), *p99s])
    return rows


def memory_rows(points: list[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        ws = p.busy.windows if p.busy else []
        if p.idle is None:
            continue
        rows.append([
            LABELS[p.key], f"{p.served:,}", _mib(p.idle.footprint.rss_kib),
            _spread([w.footprint.rss_kib / 1024 for w in ws], 1),
            _mib(p.after.rss_kib) if p.after else DASH,
            str(p.idle.footprint.threads),
            _spread([w.footprint.threads for w in ws]) if ws else DASH,
            _spread([w.client_cpu_s / w.seconds * 100 for w in ws]) if ws else DASH])
    return rows


def _check_lines(points: list[Point]) -> list[str]:
    out = []
    for p in points:
        if not p.busy:
            continue
        reads = sum(p.busy.total_reads.values())
        how = (f"each target's count equals the agent's own `spindle_scsi_commands_total` "
               f"(READ, GOOD): {'yes' if not p.mismatches else f'no, {len(p.mismatches)} differ'}"
               if p.checked else "tgt keeps no per-target counter to compare with")
        out.append(f"- {LABELS[p.key]}, {p.served:,} targets: {reads:,} reads, every one "
                   f"4,096 bytes with GOOD status and its block's stamp; {how}.")
    return out


def _fd_lines(fd: FdCheck | None) -> list[str]:
    if fd is None:
        return ["Skipped (`--fd-limit 0`)."]
    verdict = "passed" if not fd.errors else "FAILED: " + "; ".join(fd.errors)
    lines = [
        f"`prlimit --nofile={fd.limit}:{fd.limit}` with {fd.targets} Devices and Targets: the "
        f"agent served {fd.served if fd.served is not None else DASH}, refused the rest with "
        f"{fd.refusals} error lines naming the limit, answered INQUIRY on a served target "
        f"(sessions keep descriptors of their own) and "
        f"{'stopped cleanly' if fd.exit_status == 0 else 'did not stop cleanly'} — {verdict}."]
    if fd.message:
        lines += ["", "```", fd.message.strip()[:600], "```"]
    return lines


def render(args: argparse.Namespace, points: list[Point], fd: FdCheck | None,
           machine: list[tuple[str, str]], commands: list[tuple[str, list[str]]],
           problems: list[str], notes: list[str]) -> str:
    out = ["# Spindle scale benchmark: many targets on one node", ""]
    out.append(
        f"Mode: {'quick (a smoke test, not a measurement)' if args.quick else 'full'}. "
        f"Spindle serves {args.targets:,} targets (one {args.size >> 20} MiB sparse file each, "
        f"O_DIRECT, writeback cache); {args.busy:,} of them, spread evenly, are read at once, "
        f"one session per target, {args.qd} read(s) of 4 KiB outstanding per session, random "
        f"among the first {args.span} blocks (each stamped and checked). "
        f"{'Side by side: Spindle and tgt (aio LUNs) with ' + format(args.tgt_targets, ',') + ' targets, all busy. ' if args.tgt_targets else ''}"
        f"{args.reps} measured window(s) of {args.seconds:g} s per busy run, each with fresh "
        f"sessions logging in at once; idle CPU over {args.idle_windows} window(s) of "
        f"{args.idle_seconds:g} s. Initiator: spindletools.iscsi.reader (asyncio, real iSCSI over "
        f"TCP) in {args.workers} process(es). iSCSI parameters offered by both targets: "
        f"{manifests.iscsi_params_text()}. Figures: median (min–max) over windows.")
    out += [f"\n{n}" for n in notes]
    out += ["", "## Idle targets", ""]
    out += markdown_table(["server", "targets", "start (s)", "RSS (MiB)", "KiB per target", "threads",
                   "descriptors", "idle CPU (% of a core)", "wake-ups/s", "stop (s)"],
                  idle_rows(points), right_from=1)
    out += ["", "Start: from launching the server to every target served and the last one "
                "answering INQUIRY (tgt: including one `tgtadm` call per setting). Wake-ups: "
                "context switches of all its threads."]
    out += ["", "## Busy targets: fairness", ""]
    out += markdown_table(["server", "busy", "logins (s) / retried (worst window)", "total IOPS", "median target IOPS",
                   "slowest / fastest target IOPS", "slowest ÷ fair share",
                   "below half (worst window)", "Jain index", "server CPU (% of a core)",
                   "server CPU µs per read", "read latency (ms)",
                   "read p99 (ms): median / worst target"],
                  busy_rows(points), right_from=1)
    out += ["", "Logins: from starting the initiators to every session logged in (all at once); "
                "retried: logins the server dropped before they completed (a full login table), "
                "tried again after a pause as initiators do. "
                "Fair share: a window's total IOPS ÷ busy targets (every busy target asks for "
                "the same). The bar: no target below half its fair share. Jain index: 1.0 when "
                "every target gets the same. The initiator shares the two cores with the "
                "server, so total IOPS measure the pair, not the server alone."]
    mixed = mixed_rows(points, args.heavy_qd)
    if mixed:
        out += ["", "## Busy targets: mixed demand", ""]
        out += markdown_table(["server", "busy", "heavy", "total IOPS",
                       "light target IOPS: median / slowest", "slowest light ÷ fair share",
                       "heavy target IOPS: median / slowest", "slowest heavy ÷ fair share",
                       "below half (worst window)", "Jain index", "read latency (ms)",
                       "light read p99 (ms): median / worst target",
                       "heavy read p99 (ms): median / worst target"],
                      mixed, right_from=1)
        out += ["", f"The same busy targets as above, every {args.heavy_every}th of them "
                    f"(spread among the rest) now keeping {args.heavy_qd} reads outstanding "
                    f"instead of {args.qd}: heavy neighbours beside light ones. Fair share: the "
                    f"window's total IOPS ÷ busy targets, as above; the bar is the same (no "
                    f"target below half of it). A server that serves every outstanding command "
                    f"alike gives a light target about busy ÷ (all reads outstanding) of that "
                    f"share; one that shares per target gives each the whole share."]
    out += ["", "## Memory and threads", ""]
    out += markdown_table(["server", "targets", "RSS idle (MiB)", "RSS busy (MiB)",
                   "RSS after the sessions left (MiB)", "threads idle", "threads busy",
                   "initiator CPU (% of a core)"], memory_rows(points), right_from=1)
    disk = ", ".join(f"{LABELS[p.key]} {p.served:,}: {_mib(p.disk_kib)} MiB"
                     for p in points)
    out += ["", f"Backing files on disk (sparse): {disk}."]
    out += ["", "## Reads checked", ""] + _check_lines(points)
    out += ["", "## Open-file limit", ""] + _fd_lines(fd)
    out += ["", "## Machine", ""]
    out += markdown_table(["", ""], [[k, v] for k, v in machine], right_from=2)
    out += ["", "## Commands", ""]
    for heading, lines in commands:
        out += [f"{heading}:", "", "```", *lines, "```", ""]
    if problems:
        out += ["## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(out).rstrip()

