"""The benchmark workloads and the exact client command each one runs per subject."""

from __future__ import annotations

from dataclasses import dataclass

from . import parsers


@dataclass(frozen=True)
class Workload:
    """One I/O pattern, run by an iSCSI client against a target and by fio on a file.

    `client` is 'iscsi-perf' (time-based, reads only) or 'qemu-img' (a fixed count of
    requests, sequential from offset 0, wrapping at the end of the disk).
    """

    name: str
    title: str
    client: str
    write: bool
    random: bool
    block_size: int
    depth: int
    full_count: int = 0
    quick_count: int = 0

    @property
    def unit(self) -> str:
        """The headline figure: IOPS for small blocks, MiB/s for large ones."""
        return "MiB/s" if self.block_size >= 65536 else "IOPS"

    def count(self, quick: bool) -> int:
        return self.quick_count if quick else self.full_count


WORKLOADS: tuple[Workload, ...] = (
    Workload("4k-randread-qd32", "4 KiB random read, QD32", "iscsi-perf",
             write=False, random=True, block_size=4096, depth=32),
    Workload("128k-seqread-qd16", "128 KiB sequential read, QD16", "iscsi-perf",
             write=False, random=False, block_size=131072, depth=16),
    Workload("4k-seqwrite-qd32", "4 KiB sequential write, QD32", "qemu-img",
             write=True, random=False, block_size=4096, depth=32,
             full_count=200000, quick_count=4000),
    Workload("4k-seqread-qd1", "4 KiB sequential read, QD1", "qemu-img",
             write=False, random=False, block_size=4096, depth=1,
             full_count=20000, quick_count=1000),
    Workload("128k-seqwrite-qd16", "128 KiB sequential write, QD16", "qemu-img",
             write=True, random=False, block_size=131072, depth=16,
             full_count=20000, quick_count=1000),
)

# iscsi-perf counts in logical blocks of the LUN; all subjects use 512-byte blocks.
LOGICAL_BLOCK = 512


def iscsi_command(wl: Workload, url: str, seconds: int, count: int) -> list[str]:
    """The client command line for `wl` against the iSCSI LUN at `url`."""
    if wl.client == "iscsi-perf":
        cmd = ["iscsi-perf", "-m", str(wl.depth), "-b", str(wl.block_size // LOGICAL_BLOCK)]
        if wl.random:
            cmd.append("-r")
        return cmd + ["-t", str(seconds), url]
    cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-n"]
    if wl.write:
        cmd.append("-w")
    return cmd + ["-d", str(wl.depth), "-s", str(wl.block_size), "-c", str(count), url]


def fio_command(wl: Workload, path: str, size: int, seconds: int, count: int) -> list[str]:
    """The raw-file equivalent of `wl`: fio, io_uring, O_DIRECT, same size/depth/pattern.

    iscsi-perf -r picks any 512-byte-aligned LBA, so fio's random offsets are aligned to
    512 bytes too (blockalign); qemu-img bench walks from offset 0, so does fio.
    """
    rw = ("rand" if wl.random else "") + ("write" if wl.write else "read")
    cmd = [
        "fio", f"--name={wl.name}", f"--filename={path}", "--ioengine=io_uring",
        "--direct=1", f"--rw={rw}", f"--bs={wl.block_size}", f"--iodepth={wl.depth}",
        f"--size={size}", "--output-format=json",
    ]
    if wl.random:
        cmd += [f"--blockalign={LOGICAL_BLOCK}", "--norandommap"]
    if wl.client == "iscsi-perf":
        cmd += ["--time_based", f"--runtime={seconds}"]
    else:
        cmd.append(f"--io_size={count * wl.block_size}")
    return cmd


def parse(wl: Workload, tool: str, output: str, seconds: int) -> parsers.Measurement:
    """Parse the stdout of `tool` ('iscsi-perf', 'qemu-img' or 'fio') run for `wl`."""
    if tool == "fio":
        return parsers.parse_fio_json(output, "write" if wl.write else "read", wl.block_size)
    if tool == "iscsi-perf":
        return parsers.parse_iscsi_perf(output, seconds, wl.block_size)
    return parsers.parse_qemu_img_bench(output)


def select(names: str | None) -> tuple[Workload, ...]:
    """The workloads named in a comma-separated list (all when `names` is empty)."""
    if not names:
        return WORKLOADS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {wl.name: wl for wl in WORKLOADS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in wanted)
