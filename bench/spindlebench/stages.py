"""Spindle's per-stage latency: the agent's `spindle_stage_seconds{stage}` histograms, scraped
from its /metrics before and after a run; the difference is that run's commands."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import promtext

METRIC = "spindle_stage_seconds"
# In the order of a command's life (see the README's metrics section).
STAGES = ("decode", "dispatch", "io", "complete", "send", "total")


@dataclass
class Hist:
    """One stage's cumulative histogram: (upper bound in s, count ≤ bound), sum, count."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, before: Hist | None) -> Hist:
        if before is None:
            return self
        old = dict(before.buckets)
        return Hist([(le, c - old.get(le, 0.0)) for le, c in self.buckets],
                    self.sum - before.sum, self.count - before.count)

    def plus(self, other: Hist) -> Hist:
        theirs = dict(other.buckets)
        mine = dict(self.buckets)
        bounds = sorted(set(mine) | set(theirs))
        return Hist([(le, mine.get(le, 0.0) + theirs.get(le, 0.0)) for le in bounds],
                    self.sum + other.sum, self.count + other.count)

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket holding the q-th observation (as
        Prometheus' histogram_quantile); None without observations."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lower
                inside = cum - below
                frac = (rank - below) / inside if inside > 0 else 1.0
                return lower + (le - lower) * frac
            lower, below = le, cum
        return lower


def parse(text: str) -> dict[str, Hist]:
    """The stage histograms in a Prometheus text exposition."""
    out: dict[str, Hist] = {}
    for name, labels, value in promtext.samples(text):
        if not name.startswith(METRIC):
            continue
        stage = labels.get("stage")
        if stage is None:
            continue
        h = out.setdefault(stage, Hist())
        if name == METRIC + "_bucket":
            h.buckets.append((float(labels["le"]), value))
        elif name == METRIC + "_sum":
            h.sum = value
        elif name == METRIC + "_count":
            h.count = value
    for h in out.values():
        h.buckets.sort()
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[str, Hist]:
    return parse(promtext.fetch(url, timeout))


def delta(after: dict[str, Hist], before: dict[str, Hist]) -> dict[str, Hist]:
    return {s: h.minus(before.get(s)) for s, h in after.items()}


def merge(parts: list[dict[str, Hist]]) -> dict[str, Hist]:
    out: dict[str, Hist] = {}
    for p in parts:
        for s, h in p.items():
            out[s] = out[s].plus(h) if s in out else h
    return out


def to_json(h: dict[str, Hist]) -> dict:
    return {s: {"buckets": v.buckets, "sum": v.sum, "count": v.count} for s, v in h.items()}


def from_json(d: dict) -> dict[str, Hist]:
    return {s: Hist([tuple(b) for b in v["buckets"]], v["sum"], v["count"])
            for s, v in d.items()}
