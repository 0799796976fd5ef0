"""The agent's /metrics: Prometheus text exposition, read into samples."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

_LINE = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(metric name, labels, value) of every sample line; comments and junk are skipped."""
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            yield m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))


def fetch(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def reads_by_target(text: str) -> dict[str, int]:
    """READ commands the agent completed with GOOD status, by target (`namespace/name`)."""
    out: dict[str, int] = {}
    for name, labels, value in samples(text):
        if (name == "spindle_scsi_commands_total" and labels.get("opcode", "").startswith("READ")
                and labels.get("status") == "GOOD"):
            target = labels.get("target", "")
            out[target] = out.get(target, 0) + int(value)
    return out


def gauge(text: str, metric: str) -> float | None:
    """The value of an unlabelled gauge, None when absent."""
    for name, labels, value in samples(text):
        if name == metric and not labels:
            return value
    return None
