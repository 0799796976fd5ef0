"""Turn the output of each benchmark client into one Measurement (pure functions)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class ParseError(ValueError):
    """The client output holds no usable result (error, abort, or unknown format)."""


@dataclass(frozen=True)
class Measurement:
    """What one client run did: how many I/Os of what size over how many seconds."""

    ios: float
    seconds: float
    block_size: int
    tool_cpu_s: float | None = None  # CPU the tool itself reports for the I/O phase

    @property
    def iops(self) -> float:
        return self.ios / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.iops * self.block_size / 2**20

    def mean_latency_us(self, depth: int) -> float:
        """Mean completion latency by Little's law (depth / IOPS), in microseconds."""
        return depth / self.iops * 1e6


def _checked(ios: float, seconds: float, block_size: int,
             tool_cpu_s: float | None = None) -> Measurement:
    if not (ios > 0 and seconds > 0 and block_size > 0):
        raise ParseError(f"no I/O measured (ios={ios}, seconds={seconds})")
    return Measurement(ios, seconds, block_size, tool_cpu_s)


def _tail(text: str, limit: int = 300) -> str:
    text = text.replace("\r", "\n").strip()
    return text[-limit:] if text else "(no output)"


# The final summary line of iscsi-perf; the periodic lines carry ", in_flight" after it.
_PERF_FINAL = re.compile(r"iops average (\d+) \((\d+) MB/s\)(?!,)")


def parse_iscsi_perf(output: str, seconds: float, block_size: int) -> Measurement:
    """Parse `iscsi-perf -t SECONDS` stdout: the last 'iops average N (M MB/s)' line.

    iscsi-perf prints the average IOPS over its run (the run stops once SECONDS have
    passed); the I/O count is that average times SECONDS.
    """
    if "ABORTED" in output:
        raise ParseError(f"iscsi-perf aborted: {_tail(output)}")
    if "finished." not in output:
        raise ParseError(f"iscsi-perf did not finish: {_tail(output)}")
    matches = _PERF_FINAL.findall(output)
    if not matches:
        raise ParseError(f"no 'iops average' summary in iscsi-perf output: {_tail(output)}")
    iops = int(matches[-1][0])
    return _checked(iops * seconds, float(seconds), block_size)


_QEMU_SENDING = re.compile(
    r"Sending (\d+) (read|write) requests, (\d+) bytes each, (\d+) in parallel"
)
_QEMU_DONE = re.compile(r"Run completed in ([0-9]+(?:\.[0-9]+)?) seconds\.")


def parse_qemu_img_bench(output: str) -> Measurement:
    """Parse `qemu-img bench` stdout: 'Sending N ... requests, B bytes each' and
    'Run completed in S seconds.'"""
    sending = _QEMU_SENDING.search(output)
    done = _QEMU_DONE.search(output)
    if sending is None or done is None:
        raise ParseError(f"unexpected qemu-img bench output: {_tail(output)}")
    count, block_size = int(sending.group(1)), int(sending.group(3))
    return _checked(float(count), float(done.group(1)), block_size)


def parse_fio_json(output: str, direction: str, block_size: int) -> Measurement:
    """Parse `fio --output-format=json` (first job; `direction` is 'read' or 'write').

    fio may print warnings before the JSON document; they are skipped. The CPU is the
    job's own usr+sys share of its runtime (fio's start-up is not in it).
    """
    start = output.find("{")
    if start < 0:
        raise ParseError(f"no JSON in fio output: {_tail(output)}")
    try:
        doc, _ = json.JSONDecoder().raw_decode(output, start)
        job = doc["jobs"][0]
        error = job.get("error", 0)
        stats = job[direction]
        ios = float(stats["total_ios"])
        seconds = float(stats["runtime"]) / 1000.0
        cpu_s = (float(job["usr_cpu"]) + float(job["sys_cpu"])) / 100.0 * seconds
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise ParseError(f"unexpected fio JSON ({err!r}): {_tail(output)}") from err
    if error:
        raise ParseError(f"fio job reported error {error}")
    return _checked(ios, seconds, block_size, cpu_s)
