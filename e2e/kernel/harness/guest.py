"""The guest: Debian's kernel and the cached initramfs (e2e/kernel/build-image), plus a small
second initramfs with this run's scripts, booted under QEMU on the namespace's tap device."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .netns import TAP
from .procs import child_dies_with_parent


def accelerator() -> list[str]:
    """KVM where the host has a real hypervisor module; TCG otherwise (a nested, paravirtual
    /dev/kvm boots a stock kernel too slowly to use)."""
    if Path("/dev/kvm").exists() and any(Path(f"/sys/module/{m}").exists()
                                          for m in ("kvm_intel", "kvm_amd")):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def stripped(src: Path, work: Path) -> bytes:
    """The binary without its debug sections (the guest's initramfs lives in RAM)."""
    out = work / (src.name + ".stripped")
    subprocess.run(["objcopy", "--strip-debug", str(src), str(out)], check=True)
    return out.read_bytes()


def runtime_initrd(files: dict[str, tuple[bytes, int]], out: Path) -> None:
    """A cpio archive (newc) with `files` ({path: (content, mode)}), to append to the image's
    initramfs: the kernel unpacks concatenated archives in order."""
    stage = out.with_suffix(".d")
    shutil.rmtree(stage, ignore_errors=True)
    for path, (content, mode) in files.items():
        p = stage / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, check=True,
                          input="\n".join(names).encode(), capture_output=True).stdout
    out.write_bytes(cpio)
    shutil.rmtree(stage)


class Guest:
    def __init__(self, image: Path, work: Path, memory_mib: int = 1024, cpus: int = 2):
        self.image, self.work = image, work
        self.memory_mib, self.cpus = memory_mib, cpus
        self.console = work / "console.log"
        self.control = work / "control.sock"
        self.initrd = work / "initrd.img"
        self.proc: subprocess.Popen | None = None

    def prepare(self, files: dict[str, tuple[bytes, int]]) -> None:
        extra = self.work / "runtime.cpio"
        runtime_initrd(files, extra)
        with open(self.initrd, "wb") as out:
            for part in (self.image / "initrd.img", extra):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)

    def command(self, mac: str) -> list[str]:
        append = "console=ttyS0 ignore_loglevel printk.time=1 panic=-1 8250.nr_uarts=2"
        return [
            "qemu-system-x86_64", *accelerator(), "-smp", str(self.cpus),
            "-m", str(self.memory_mib), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-kernel", str(self.image / "vmlinux"), "-initrd", str(self.initrd),
            "-append", append,
            "-chardev", f"file,id=con,path={self.console}", "-serial", "chardev:con",
            "-chardev", f"socket,id=ctl,path={self.control}", "-serial", "chardev:ctl",
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
        ]

    def start(self, mac: str = "52:54:00:fb:00:02") -> None:
        with open(self.work / "qemu.log", "w") as log:
            self.proc = subprocess.Popen(
                self.command(mac), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=child_dies_with_parent)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Waits for QEMU to exit (the guest powers off); None if it is still running."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def qemu_log(self) -> str:
        try:
            return (self.work / "qemu.log").read_text(errors="replace")
        except OSError:
            return ""


def qemu_missing() -> str | None:
    return None if shutil.which("qemu-system-x86_64") else \
        "qemu-system-x86_64 is missing (e2e/install-deps installs qemu-system-x86)"


def cpus_for_guest() -> int:
    return max(1, min(2, os.cpu_count() or 1))
