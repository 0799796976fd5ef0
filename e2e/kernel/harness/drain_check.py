"""After a drain: every write the guest's fswriter got success for is in the backing file. The
writer's log names the file's extents (file offset -> disk offset, from FIEMAP) and each
write's outcome (see guest/fswriter.c)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 4096


@dataclass
class WriterLog:
    extents: list[tuple[int, int, int]] = field(default_factory=list)  # (file, disk, length)
    good: list[int] = field(default_factory=list)
    failed: list[tuple[int, int, int]] = field(default_factory=list)  # (block, errno, ms)
    end: tuple[int, int] | None = None


class DrainCheckError(ValueError):
    pass


def parse(text: str) -> WriterLog:
    log = WriterLog()
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        try:
            if f[:1] == ["EXTENT"] and len(f) == 4:
                log.extents.append((int(f[1]), int(f[2]), int(f[3])))
            elif f[:1] == ["G"] and len(f) == 2:
                log.good.append(int(f[1]))
            elif f[:1] == ["E"] and len(f) == 4:
                log.failed.append((int(f[1]), int(f[2]), int(f[3])))
            elif f[:1] == ["END"] and len(f) == 3:
                log.end = (int(f[1]), int(f[2]))
            elif line.strip():
                raise ValueError
        except ValueError:
            raise DrainCheckError(f"writer log line {n} is not understood: {line!r}") from None
    return log


def disk_offset(extents: list[tuple[int, int, int]], file_offset: int) -> int:
    for logical, physical, length in extents:
        if logical <= file_offset and file_offset + BLOCK <= logical + length:
            return physical + file_offset - logical
    raise DrainCheckError(f"file offset {file_offset} is in no extent of the writer's file")


def expected(block: int) -> bytes:
    return b"SPKDRAIN" + block.to_bytes(8, "little") + bytes([block & 0xFF]) * (BLOCK - 16)


def check(log: WriterLog, backing: Path) -> str:
    """Raises DrainCheckError naming what is wrong; returns a one-line summary."""
    if log.end is None:
        raise DrainCheckError("the writer log has no END line (truncated upload?)")
    if log.end != (len(log.good), len(log.failed)):
        raise DrainCheckError(f"END says {log.end}, the log lists {len(log.good)} good "
                              f"and {len(log.failed)} failed writes")
    if not log.good:
        raise DrainCheckError("no write succeeded before the drain")
    lost = []
    with open(backing, "rb") as f:
        for block in log.good:
            f.seek(disk_offset(log.extents, block * BLOCK))
            if f.read(BLOCK) != expected(block):
                lost.append(block)
    if lost:
        raise DrainCheckError(f"{len(lost)} of {len(log.good)} acknowledged writes are not in "
                              f"the backing file, e.g. blocks {lost[:8]}")
    return (f"all {len(log.good)} acknowledged writes are in the backing file; "
            f"{len(log.failed)} writes failed after the drain")
