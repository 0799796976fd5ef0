"""Hold K idle iSCSI sessions open: one read-only `qemu-io` per session, sitting at its
prompt after it has logged in, sent INQUIRY and READ CAPACITY."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from pathlib import Path

from . import procs

PROMPT = b"qemu-io>"
INITIATOR_PREFIX = "iqn.2026-11.dev.spindle:bench-session"


def image_opts(portal: str, iqn: str, lun: int, initiator: str) -> str:
    """qemu's --image-opts for one iSCSI LUN with its own initiator name (so each
    holder is a distinct I_T nexus, not a reinstatement of the previous one)."""
    return (f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={portal},"
            f"file.target={iqn},file.lun={lun},file.initiator-name={initiator}")


class Sessions:
    """K qemu-io processes, each holding one logged-in session to the same LUN."""

    def __init__(self, portal: str, iqn: str, lun: int, count: int, workdir: Path):
        self.portal, self.iqn, self.lun, self.count = portal, iqn, lun, count
        self.workdir = workdir
        self.holders: list[procs.Daemon] = []

    def command(self, index: int) -> list[str]:
        initiator = f"{INITIATOR_PREFIX}-{index}"
        return ["qemu-io", "-r", "--image-opts",
                image_opts(self.portal, self.iqn, self.lun, initiator)]

    def open(self, timeout: float) -> None:
        """Start all holders and wait until every one shows its prompt."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            self.holders.append(procs.Daemon(
                f"qemu-io-{i}", self.command(i), self.workdir / f"qemu-io-{i}.log",
                stdin=subprocess.PIPE, stdout_pipe=True))
        buffers = {h.proc.stdout.fileno(): b"" for h in self.holders}
        by_fd = {h.proc.stdout.fileno(): h for h in self.holders}
        waiting = set(buffers)
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise procs.ClientError(
                    f"{len(waiting)} of {self.count} qemu-io sessions not open after "
                    f"{timeout:.0f} s")
            ready, _, _ = select.select(list(waiting), [], [], min(left, 1.0))
            for fd in ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    holder = by_fd[fd]
                    holder.proc.wait(timeout=5)
                    raise procs.ClientError(
                        f"qemu-io exited before its prompt: {holder.log_tail(300)}")
                buffers[fd] += chunk
                if PROMPT in buffers[fd]:
                    waiting.discard(fd)

    def close(self) -> None:
        """Quit every holder (logging its session out), killing stragglers."""
        for holder in self.holders:
            if holder.alive() and holder.proc.stdin is not None:
                try:
                    holder.proc.stdin.write(b"quit\n")
                    holder.proc.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        for holder in self.holders:
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            holder.kill()
        self.holders.clear()
