"""The agent under test as a process: started, stopped with a signal, started again on the same
data (its log continues across restarts); first `spindle-agent standalone` on the manifests,
and `spindle-agent run` when the drain goes through the agent API."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from .procs import child_dies_with_parent


class AgentError(RuntimeError):
    pass


def standalone(binary: Path, manifests: Path, data_dir: Path, listen: str) -> list[str]:
    return [str(binary), "standalone", "--manifests", str(manifests), "--data-dir",
            str(data_dir), "--listen", listen]


class Agent:
    def __init__(self, command: list[str], data_dir: Path, log: Path,
                 probe: tuple[str, int], ready: str = "Target ready"):
        """`ready` is the log line that comes after the agent's listeners are bound; `probe` is
        an address that then accepts connections."""
        self.command, self.data_dir, self.log = command, data_dir, log
        self.probe, self.ready = probe, ready
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> float:
        """Starts the agent and waits until it serves; returns the seconds that took."""
        t0 = time.monotonic()
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"--- start {self.starts}: {' '.join(self.command[1:3])}\n")
            log.flush()
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=child_dies_with_parent)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AgentError(
                    f"the agent exited {self.proc.returncode} at start: {self.tail(3)}")
            # The ready line comes after the bind: a connection then reaches this agent, not
            # the listener of one that was just killed.
            if self.ready in self.log_of_last_start():
                try:
                    socket.create_connection(self.probe, timeout=1).close()
                    return time.monotonic() - t0
                except OSError:
                    pass
            time.sleep(0.05)
        raise AgentError(f"the agent does not serve after {timeout} s: {self.tail(3)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[int, float]:
        """Sends `sig` and waits for the exit; returns (exit status, seconds)."""
        if self.proc is None:
            raise AgentError("the agent is not running")
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AgentError(f"the agent did not exit {timeout} s after signal {sig}") from None
        self.proc = None
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_of_last_start(self) -> str:
        text = self.log.read_text(errors="replace")
        return text[text.rfind(f"--- start {self.starts}:"):]

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
