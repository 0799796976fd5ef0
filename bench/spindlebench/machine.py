"""The machine the benchmark ran on, and the Debian packages it needs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from . import procs

PACKAGES = ("tgt", "libiscsi-bin", "qemu-utils", "qemu-block-extra", "fio")
COMMANDS = ("tgtd", "tgtadm", "iscsi-perf", "iscsi-inq", "qemu-img", "qemu-io", "fio")


def _installed(package: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                         capture_output=True, text=True, check=False)
    return res.returncode == 0 and res.stdout.strip() == "install ok installed"


def ensure_packages() -> None:
    """apt-get install whatever of PACKAGES is missing (quietly; nothing when all are)."""
    missing = [p for p in PACKAGES if not _installed(p)]
    if missing:
        if os.geteuid() != 0:
            raise RuntimeError(f"missing packages {' '.join(missing)}; run as root or "
                               f"apt-get install them")
        procs.log(f"[setup] apt-get install {' '.join(missing)} …")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                           check=False)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    absent = [c for c in COMMANDS if shutil.which(c) is None]
    if absent:
        raise RuntimeError(f"commands not found after install: {' '.join(absent)}")


def package_versions() -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n", *PACKAGES],
                         capture_output=True, text=True, check=False)
    return ", ".join(line for line in res.stdout.splitlines() if line.strip())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def filesystem_of(path: Path) -> str:
    """'fstype on device (mount point)' for the mount holding `path`."""
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[0]):
                best = (mnt, dev, fstype)
    except OSError:
        pass
    return f"{best[2]} on {best[1]} ({best[0] or '?'})"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def agent_version(binary: str, repo: Path) -> str:
    parts = [binary]
    res = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False)
    if res.returncode == 0:
        parts.append(f"repo {res.stdout.strip()}")
    try:
        res = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False, timeout=10)
        if res.returncode == 0 and res.stdout.strip():
            parts.append(res.stdout.strip().splitlines()[0])
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ", ".join(parts)


def describe(workdir: Path, load_start: str) -> list[tuple[str, str]]:
    return [
        ("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
        ("CPU", f"{cpu_model()}, nproc {os.cpu_count()} (usable "
                f"{len(os.sched_getaffinity(0))})"),
        ("memory", mem_total()),
        ("kernel", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("load average (1/5/15 min) at start → end", f"{load_start} → {loadavg()}"),
        ("packages", package_versions()),
        ("backing files", f"in {workdir}, {filesystem_of(workdir)}"),
    ]
