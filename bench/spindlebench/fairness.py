"""Statistics of the scale benchmark: the spread of a set of figures, and how fairly a server
shared its I/O among targets that all asked for the same thing."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100), linear between the closest ranks (as numpy's
    default); a ValueError on no values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
    """Minimum, 1st/50th/99th percentile, maximum and mean of a set of figures."""

    n: int
    min: float
    p1: float
    median: float
    p99: float
    max: float
    mean: float

    @staticmethod
    def of(values: list[float]) -> Spread:
        if not values:
            raise ValueError("spread of no values")
        return Spread(n=len(values), min=min(values), p1=percentile(values, 1),
                      median=statistics.median(values), p99=percentile(values, 99),
                      max=max(values), mean=statistics.fmean(values))

    def text(self, digits: int = 0, unit: str = "") -> str:
        """`median (min–max)`, the form every report figure takes."""
        f = f"{{:,.{digits}f}}"
        return f"{f.format(self.median)}{unit} ({f.format(self.min)}–{f.format(self.max)})"


@dataclass(frozen=True)
class Fairness:
    """How one window's reads were shared among `n` targets with the same demand."""

    n: int
    total_iops: float
    fair_share: float  # total ÷ n: what each target gets when the server shares evenly
    per_target: Spread  # IOPS of each target
    worst_ratio: float  # the slowest target's IOPS ÷ fair share
    below_half: int  # targets under half their fair share
    starved: int  # targets that completed no read at all
    jain: float  # Jain's index: 1.0 is perfectly even, 1/n is one target taking everything

    @property
    def fair(self) -> bool:
        """The benchmark's bar: no target below half its fair share."""
        return self.below_half == 0


def fairness(reads: list[int], seconds: float) -> Fairness:
    """Fairness of one window: `reads` completed per target in `seconds`."""
    if not reads:
        raise ValueError("fairness of no targets")
    if seconds <= 0:
        raise ValueError("the window must last longer than 0 s")
    iops = [r / seconds for r in reads]
    total = sum(iops)
    share = total / len(iops)
    squares = sum(x * x for x in iops)
    return Fairness(
        n=len(iops), total_iops=total, fair_share=share, per_target=Spread.of(iops),
        worst_ratio=min(iops) / share if share else 0.0,
        below_half=sum(1 for x in iops if x < share / 2),
        starved=sum(1 for r in reads if r == 0),
        jain=total * total / (len(iops) * squares) if squares else 0.0)


def mismatches(client: dict[str, int], server: dict[str, int]) -> list[str]:
    """Targets whose read count differs between what the initiator got back (`client`) and
    what the target server says it completed (`server`), as report lines."""
    out = []
    for name in sorted(set(client) | set(server)):
        c, s = client.get(name, 0), server.get(name, 0)
        if c != s:
            out.append(f"{name}: the initiator checked {c} reads, the agent counted {s}")
    return out
