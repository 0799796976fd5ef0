"""What a scale run measured: one point per server and size, and the descriptor-limit check
(made by scale.py, rendered by scalereport.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .busy import BusyResult
from .idle import IdleResult
from .procstat import Footprint


@dataclass
class Point:
    """One server serving `served` targets, `busy` of them read at once."""

    key: str  # spindle | tgt
    served: int
    busy_count: int
    idle: IdleResult | None = None
    busy: BusyResult | None = None
    mixed: BusyResult | None = None  # the same targets, some of them reading deeper
    heavy: frozenset[str] = frozenset()  # the targets that did, in `mixed`
    after: Footprint | None = None  # idle again, the sessions gone
    stop_s: float | None = None
    checked: bool = False  # per-target read counts compared with the server's own
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    limit: str | None = None  # why the machine did not let it get this far
    disk_kib: int = 0  # what the backing files take on disk


@dataclass
class FdCheck:
    """An agent whose RLIMIT_NOFILE is too small for its Devices."""

    limit: int
    targets: int
    served: int | None = None
    refusals: int = 0  # log lines naming RLIMIT_NOFILE
    message: str = ""
    answered: bool = False  # a served target still answers (sessions have descriptors)
    exit_status: int | None = None
    errors: list[str] = field(default_factory=list)
