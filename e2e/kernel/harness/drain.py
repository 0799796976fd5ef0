"""How the host drains a Device under the guest's feet. Standalone mode has one trigger:
SIGTERM drains every Device (fence, finish accepted commands, flush) and the agent exits 0
after the flush. The agent API's DrainDevice (fences one Device and answers with the flush,
the agent keeps serving) is the other, through its command-line client once there is one."""

from __future__ import annotations

import signal
from collections.abc import Callable

from .agent import Agent

MODES = ("signal",)


def by_signal(agent: Agent) -> Callable[[str], str]:
    def drain(device: str) -> str:
        rc, seconds = agent.stop(signal.SIGTERM)
        if rc != 0:
            raise RuntimeError(f"the agent exited {rc} after SIGTERM: {agent.tail(5)}")
        if "drain: flushed" not in agent.log_of_last_start():
            raise RuntimeError("the agent exited without logging the flush acknowledgement")
        return f"SIGTERM: {device} (and every other Device) drained and flushed, agent exited " \
               f"0 after {seconds:.2f} s"
    return drain


def make(mode: str, agent: Agent) -> Callable[[str], str]:
    if mode == "signal":
        return by_signal(agent)
    raise ValueError(f"unknown drain mode {mode!r}; known: {', '.join(MODES)}")


def deadline(mode: str, replacement_timeout: int) -> int:
    """Seconds the guest's writers may take to fail after the drain answer. With SIGTERM the
    agent is gone after the flush: commands that missed the fence fail only when the
    initiator's replacement timeout ends the session."""
    return replacement_timeout + 30 if mode == "signal" else 20
