"""How the host drains the Device under the guest's mounted file system: the agent API's
DrainDevice, called with `agentctl` as the operator would. At the start of phase drain the host
swaps the standalone agent for `spindle-agent run` on the same data folder and applies the
Device and its Target over the API (the guest's session rides it out like a restart).
DrainDevice fences that one Device and answers with the flush; the agent keeps serving, so every
later command is refused at once. (SIGTERM is no drain: a restart is not a delete.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from . import manifests
from .agent import Agent

MODES = ("api",)
API_ADDR = ("127.0.0.1", 9443)  # in the test's network namespace
# The agent registers a Lease; no apiserver runs here, and the agent keeps serving without one.
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


class ApiDrain:
    deadline = 20

    def __init__(self, agent: Agent, binary: Path, agentctl: Path, work: Path, port: int):
        self.agent, self.binary, self.agentctl = agent, binary, agentctl
        self.work, self.port = work, port
        self.certs = work / "certs"

    def ctl(self, *args: str) -> str:
        cmd = [str(self.agentctl), "--endpoint", f"{API_ADDR[0]}:{API_ADDR[1]}",
               "--certs", str(self.certs), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"agentctl {args[0]} {args[1] if len(args) > 1 else ''}: "
                               f"{(r.stderr or r.stdout).strip()}")
        return r.stdout

    def run_command(self) -> list[str]:
        kubeconfig = self.work / "kubeconfig"
        kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
        return [str(self.binary), "run", "--node-name", "kernel-host", "--kubeconfig",
                str(kubeconfig), "--data-dir", str(self.agent.data_dir),
                "--iscsi-listen", f"0.0.0.0:{self.port}",
                "--api-listen", f"{API_ADDR[0]}:{API_ADDR[1]}",
                "--tls-cert", str(self.certs / "agent.crt"),
                "--tls-key", str(self.certs / "agent.key"), "--tls-ca", str(self.certs / "ca.crt")]

    def prepare(self, device: str) -> str:
        """Swaps the standalone agent for `spindle-agent run` serving `device` (the guest is
        idle: nothing is fenced)."""
        e = manifests.by_name(device)
        subprocess.run([str(Path(__file__).resolve().parents[2] / "cluster" / "certs"),
                        str(self.certs)], check=True)
        rc, _ = self.agent.stop(signal.SIGTERM)
        if rc != 0:
            raise RuntimeError(f"the standalone agent exited {rc} on SIGTERM")
        self.agent.command = self.run_command()
        self.agent.probe, self.agent.ready = API_ADDR, "agent serving"
        t0 = time.monotonic()
        self.agent.start()
        self.ctl("apply-device", f"default/{e.name}", "--uid", f"uid-{e.name}", "--file", e.file,
                 "--size-bytes", str(e.size), "--thin")
        self.ctl("apply-target", f"default/{e.name}", "--uid", f"uid-{e.name}-target",
                 "--iqn", e.iqn, "--port", str(self.port), "--lun", f"0:{e.name}:uid-{e.name}",
                 "--initiator", manifests.INITIATOR)
        return (f"spindle-agent run serves {e.iqn} (applied with agentctl) "
                f"{time.monotonic() - t0:.2f} s after the standalone agent stopped")

    def drain(self, device: str) -> str:
        t0 = time.monotonic()
        ack = self.ctl("drain", f"default/{device}", "--uid", f"uid-{device}")
        summary = " ".join(ack.split())
        return f"DrainDevice answered in {time.monotonic() - t0:.2f} s: {summary[:200]}"


def make(mode: str, agent: Agent, *, binary: Path, agentctl: Path, work: Path,
         port: int) -> ApiDrain:
    if mode == "api":
        return ApiDrain(agent, binary, agentctl, work, port)
    raise ValueError(f"unknown drain mode {mode!r}; known: {', '.join(MODES)}")
