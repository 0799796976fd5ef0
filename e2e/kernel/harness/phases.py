"""The phases the guest runs (guest/phases.sh has one function per name), in order, each with
how long the guest may stay silent in it and what its kernel log may contain."""

from __future__ import annotations

from dataclasses import dataclass

from .dmesg import PROBLEMS, Rules

# Each agent restart breaks the connection once: the initiator says so, then recovers (a restart
# phase restarts the agent RESTARTS times, see e2e/kernel/run).
RESTARTS = 3
RESTART = Rules(allowed={"connection error": RESTARTS, "ping timeout": RESTARTS},
                extra_power_on=RESTARTS)
# A refused login may end with the kernel seeing its connection closed, once per refusal (five
# in phase chap: no CHAP, a wrong secret, each way with mutual CHAP, MD5 where it is off).
CHAP = Rules(allowed={"connection error": 5})
# A drain fences the LUN: commands fail with ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED
# (25h/00h), which must show; everything that follows from failed writes is expected.
DRAIN = Rules(allowed={name: None for name in PROBLEMS}, required=(r"Logical unit not supported",))


@dataclass(frozen=True)
class Phase:
    name: str
    what: str
    timeout: float  # seconds without a word from the guest
    rules: Rules = Rules()
    needs: tuple[str, ...] = ("discovery",)  # phases that must run before (node records, fs)


PHASES = (
    Phase("discovery", "SendTargets on a wildcard listener answers the portal the guest "
          "reached; login through it", 120, needs=()),
    Phase("disk", "write cache, FUA, discard, size", 60),
    Phase("fs", "mkfs.ext4, files with checksums, fsck, remount, verify", 600),
    Phase("fio", "fio randwrite 4k-128k QD16 O_DIRECT with crc32c verification", 600,
          needs=("discovery", "fs")),
    Phase("fstrim", "files removed + fstrim shrink the backing file; fsck clean", 300,
          needs=("discovery", "fs")),
    Phase("chap", "CHAP one-way and mutual; wrong secrets and no CHAP refused; SHA256 and "
          "SHA3-256 one-way and mutual, MD5 refused where it is off", 300, CHAP),
    Phase("mrdsl", "MaxRecvDataSegmentLength=8192, 1 MiB reads at depth 32, verified", 600),
    Phase("restart-term", f"{RESTARTS} × SIGTERM + restart under one fio verify on a mounted fs", 600, RESTART),
    Phase("restart-kill", f"{RESTARTS} × SIGKILL + restart under one fio verify on a mounted fs", 600, RESTART),
    Phase("drain", "drain under O_DIRECT writes on a mounted fs: fenced, acknowledged "
          "writes in the file", 600, DRAIN),
)


def select(names: list[str] | None) -> list[Phase]:
    """The named phases and those they need, in the order of PHASES."""
    if not names:
        return list(PHASES)
    known = {p.name: p for p in PHASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(known)}")
    wanted = set(names)
    for n in names:
        wanted.update(known[n].needs)
    return [p for p in PHASES if p.name in wanted]
