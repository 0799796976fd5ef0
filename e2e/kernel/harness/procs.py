"""Process helpers: children that never outlive the runner."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def child_dies_with_parent() -> None:
    """preexec_fn: the kernel kills the child if the runner dies (no stray QEMU or agent)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
