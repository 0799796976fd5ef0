"""The agent under test: `spindle-agent standalone`, started, stopped with a signal and started
again on the same manifests and data (its log continues across restarts)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from .netns import HOST_ADDR
from .procs import child_dies_with_parent


class AgentError(RuntimeError):
    pass


class Agent:
    def __init__(self, binary: Path, manifests: Path, data_dir: Path, listen: str, log: Path):
        self.binary, self.manifests, self.data_dir = binary, manifests, data_dir
        self.listen, self.log = listen, log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> float:
        """Starts the agent and waits until its portal accepts connections; returns seconds."""
        t0 = time.monotonic()
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "standalone", "--manifests", str(self.manifests),
                 "--data-dir", str(self.data_dir), "--listen", self.listen],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_dies_with_parent)
        host, port = self.probe_address()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AgentError(
                    f"the agent exited {self.proc.returncode} at start: {self.tail(3)}")
            # "Target ready" comes after the bind: a connection then reaches this agent, not
            # the listener of one that was just killed.
            if "Target ready" in self.log_of_last_start():
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    return time.monotonic() - t0
                except OSError:
                    pass
            time.sleep(0.05)
        raise AgentError(f"the agent does not listen on {self.listen} after {timeout} s")

    def probe_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        # A wildcard listener is reached through the address the guest uses.
        return (HOST_ADDR if host in ("0.0.0.0", "[::]") else host.strip("[]")), int(port)

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
        return text[text.rfind(f"--- start {self.starts}\n"):]

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
