"""The two iSCSI target servers under test: Spindle's standalone agent and tgtd."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from spindletools import manifests

from . import procs, procstat


class TargetError(RuntimeError):
    """A target server could not be started, configured or reached."""


class TargetLimit(TargetError):
    """The machine's limits (not the harness, not the target's code) stopped the setup."""


def sparse_file(path: Path, size: int) -> None:
    """A fresh sparse file of `size` bytes (any old content is dropped)."""
    with open(path, "wb") as f:
        f.truncate(size)


class Server:
    """Common part of a target daemon: process, portal, readiness, footprint."""

    label = "server"

    def __init__(self, host: str, port: int, workdir: Path):
        self.host, self.port, self.workdir = host, port, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.daemon: procs.Daemon | None = None
        self.setup_commands: list[str] = []

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.daemon is None:
            raise TargetError(f"{self.label} is not running")
        return self.daemon.pid

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def check_alive(self) -> None:
        if self.daemon is None:
            raise TargetError(f"{self.label} was not started")
        code = self.daemon.proc.poll()
        if code is not None:
            raise TargetError(f"{self.label} exited with status {code}; log: "
                              f"{self.daemon.log_tail() or '(empty)'}")

    def url(self, iqn: str, lun: int) -> str:
        return f"iscsi://{self.portal}/{iqn}/{lun}"

    def _launch(self, name: str, cmd: list[str]) -> None:
        if not procstat.port_free(self.host, self.port):
            raise TargetError(f"{self.portal} is already in use; pick another address/port")
        self.setup_commands.append(shlex.join(cmd) + " &")
        self.daemon = procs.Daemon(name, cmd, self.workdir / f"{name}.log")

    def wait_ready(self, urls: list[str], timeout: float) -> None:
        """Wait until the portal accepts and each URL answers a login + INQUIRY."""
        deadline = time.monotonic() + timeout
        pending = list(urls)
        last = ""
        while pending:
            self.check_alive()
            if time.monotonic() > deadline:
                raise TargetError(f"{self.label} not ready after {timeout:.0f} s: {last}")
            if procstat.accepts(self.host, self.port):
                try:
                    procs.run(["iscsi-inq", pending[0]], timeout=15)
                    pending.pop(0)
                    continue
                except procs.ClientError as err:
                    last = str(err)
            time.sleep(0.3)


class SpindleAgent(Server):
    """`spindle-agent standalone` serving Device/Target manifests from a folder."""

    label = "spindle-agent"

    def __init__(self, binary: str, host: str, port: int, workdir: Path,
                 write_cache: str = "writeback", metrics: tuple[str, int] | None = None,
                 prefix: tuple[str, ...] = ()):
        super().__init__(host, port, workdir)
        self.binary = binary
        self.prefix = prefix  # runs the agent under this command (e.g. prlimit)
        self.write_cache = write_cache
        self.metrics = metrics
        self.manifest_dir = workdir / "manifests"
        self.data_dir = workdir / "data"
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.exports: list[manifests.Export] = []

    def add(self, export: manifests.Export, create_file: bool = True) -> str:
        """Write the manifest of `export` (and its sparse backing file); returns its URL."""
        if create_file:
            sparse_file(self.data_dir / export.file, export.size_bytes)
        (self.manifest_dir / f"{export.name}.yaml").write_text(
            manifests.render(export, self.write_cache))
        self.exports.append(export)
        return self.url(export.iqn, export.lun)

    def start(self, timeout: float = 60.0,
              probe: list[manifests.Export] | None = None) -> None:
        """Launch the agent; wait until the `probe` exports answer (default: the first and
        the last one added)."""
        cmd = [*self.prefix, self.binary, "standalone", "--manifests", str(self.manifest_dir),
               "--data-dir", str(self.data_dir), "--listen", self.portal]
        if self.metrics:
            cmd += ["--metrics", f"{self.metrics[0]}:{self.metrics[1]}"]
        self._launch("spindle-agent", cmd)
        if probe is None:
            probe = [self.exports[0], self.exports[-1]] if self.exports else []
        self.wait_ready([self.url(e.iqn, e.lun) for e in dict.fromkeys(probe)], timeout)

    @property
    def metrics_url(self) -> str | None:
        """The agent's Prometheus endpoint, when it serves one."""
        if not self.metrics:
            return None
        return f"http://{self.metrics[0]}:{self.metrics[1]}/metrics"

    def stop(self, grace: float = 10.0) -> str | None:
        if self.daemon is None:
            return None
        complaint = self.daemon.stop(grace=grace)
        self.daemon = None
        return complaint


class Tgtd(Server):
    """tgtd on its own portal and control port, with aio (O_DIRECT) LUNs."""

    label = "tgtd"
    TGT_LUN = 1  # tgt keeps LUN 0 for its controller device

    def __init__(self, host: str, port: int, control_port: int, workdir: Path):
        super().__init__(host, port, workdir)
        self.control_port = control_port
        self.tids: list[int] = []
        self.sockets = [Path(f"/var/run/tgtd/socket.{control_port}"),
                        Path(f"/var/run/tgtd/socket.{control_port}.lock")]

    def _adm(self, *args: str, record: bool = False) -> None:
        cmd = ["tgtadm", "-C", str(self.control_port), *args]
        if record:
            self.setup_commands.append(shlex.join(cmd))
        procs.run(cmd, timeout=30)

    def start(self, timeout: float = 30.0) -> None:
        if self.sockets[0].exists() and self._control_answers():
            raise TargetError(f"a tgtd already uses control port {self.control_port}")
        for sock in self.sockets:  # stale leftovers of a killed tgtd
            sock.unlink(missing_ok=True)
        self._launch("tgtd", ["tgtd", "-f", "-C", str(self.control_port),
                              "--iscsi", f"portal={self.portal}"])
        deadline = time.monotonic() + timeout
        while not self._control_answers():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TargetError(f"tgtd control port {self.control_port} not answering")
            time.sleep(0.2)

    def _control_answers(self) -> bool:
        return subprocess.run(
            ["tgtadm", "-C", str(self.control_port), "--op", "show", "--mode", "sys"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        ).returncode == 0

    def add(self, iqn: str, path: Path, size: int, create_file: bool = True,
            record: bool = True) -> str:
        """A new target with one aio LUN on `path`; returns its URL."""
        if create_file:
            sparse_file(path, size)
        tid = len(self.tids) + 1
        try:
            self._adm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", str(tid),
                      "-T", iqn, record=record)
            self.tids.append(tid)
            self._adm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid",
                      str(tid), "--lun", str(self.TGT_LUN), "-b", str(path), "--bstype", "aio",
                      record=record)
            self._adm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", str(tid),
                      "-I", "ALL", record=record)
            # The same iSCSI parameters as Spindle's targets offer.
            for key, value in manifests.iscsi_params().items():
                self._adm("--lld", "iscsi", "--op", "update", "--mode", "target", "--tid",
                          str(tid), "--name", key, "--value", value, record=record)
        except procs.ClientError as err:
            tail = self.daemon.log_tail(300) if self.daemon else ""
            if "failed to create aio context" in tail:
                raise TargetLimit(
                    f"tgtd could not open aio LUN {tid}: the kernel's aio event limit is "
                    f"used up (fs.aio-max-nr={_sysctl('fs/aio-max-nr')}, each aio LUN takes "
                    f"128); raise it with sysctl to measure tgt at this count") from err
            last = tail.splitlines()[-1] if tail else ""
            raise TargetError(f"{err}; tgtd says: {last}") from err
        return self.url(iqn, self.TGT_LUN)

    def stop(self) -> str | None:
        """tgtd ignores SIGTERM while it has targets: delete them, then the system."""
        if self.daemon is None:
            return None
        complaint = None
        try:
            if self.alive():
                for tid in reversed(self.tids):
                    self._adm("--lld", "iscsi", "--op", "delete", "--mode", "target",
                              "--tid", str(tid), "--force")
                self._adm("--op", "delete", "--mode", "system")
                self.daemon.proc.wait(timeout=10)
        except (procs.ClientError, subprocess.TimeoutExpired) as err:
            complaint = f"tgtd did not shut down cleanly ({err}); killed"
        self.daemon.kill()
        self.daemon = None
        self.tids.clear()
        for sock in self.sockets:
            sock.unlink(missing_ok=True)
        return complaint


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return "?"


def default_agent_binary(repo: Path) -> Path:
    """Where `cargo build --release -p spindle-agent` puts the agent."""
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    if not target_dir.is_absolute():
        target_dir = repo / target_dir
    return target_dir / "release" / "spindle-agent"
