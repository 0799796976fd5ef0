"""What the whole machine did during a run: how busy its CPUs were and how many requests the
disk under the backing files had in flight on average.

These two say *why* a figure is what it is: a subject that leaves the CPUs idle and the disk
under-fed is waiting (on wake-ups, the network round trip, the client), not working."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuSample:
    busy: int  # clock ticks not idle and not waiting for I/O, all CPUs
    total: int


def parse_cpu(text: str) -> CpuSample:
    """The aggregate 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal
    (guest time is already inside user). Idle and iowait count as not busy."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]
            if len(values) < 5:
                break
            idle = values[3] + values[4]
            total = sum(values)
            return CpuSample(busy=total - idle, total=total)
    raise ValueError("no aggregate cpu line in /proc/stat")


@dataclass(frozen=True)
class DiskSample:
    time_in_queue_ms: int  # field 11 of the block stat file: in-flight requests × ms


def parse_disk(text: str) -> DiskSample:
    """A /sys/block/DEV/stat (or partition) line; the 11th field is the weighted time."""
    fields = text.split()
    if len(fields) < 11:
        raise ValueError(f"short block stat line: {text[:80]!r}")
    return DiskSample(time_in_queue_ms=int(fields[10]))


def disk_stat_path(path: Path) -> Path | None:
    """The block stat file of the device holding `path`, or None (e.g. tmpfs, overlay)."""
    st = os.stat(path)
    sysfs = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    return sysfs if sysfs.exists() else None


@dataclass(frozen=True)
class HostUsage:
    cpu_busy_pct: float  # of all CPUs together
    disk_queue: float | None  # mean requests in flight at the disk


def usage(cpu0: CpuSample, cpu1: CpuSample, disk0: DiskSample | None,
          disk1: DiskSample | None, wall_s: float) -> HostUsage:
    """Usage between two samples taken `wall_s` seconds apart."""
    total = cpu1.total - cpu0.total
    busy_pct = 100.0 * (cpu1.busy - cpu0.busy) / total if total > 0 else 0.0
    queue = None
    if disk0 is not None and disk1 is not None and wall_s > 0:
        queue = (disk1.time_in_queue_ms - disk0.time_in_queue_ms) / (wall_s * 1000.0)
    return HostUsage(cpu_busy_pct=busy_pct, disk_queue=queue)


def _read(path: Path | str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


class Sampler:
    """Samples the machine before and after a run (`start`, then `stop`)."""

    def __init__(self, backing_dir: Path):
        self.disk_path = disk_stat_path(backing_dir)
        self._start: tuple[CpuSample, DiskSample | None, float] | None = None

    def _disk(self) -> DiskSample | None:
        return parse_disk(_read(self.disk_path)) if self.disk_path else None

    def start(self) -> None:
        self._start = (parse_cpu(_read("/proc/stat")), self._disk(), time.monotonic())

    def stop(self) -> HostUsage:
        if self._start is None:
            raise RuntimeError("Sampler.stop() without start()")
        cpu0, disk0, t0 = self._start
        return usage(cpu0, parse_cpu(_read("/proc/stat")), disk0, self._disk(),
                     time.monotonic() - t0)
