"""What every benchmark entry point does around its measurements: signals, the scratch folder,
publishing the report, the exit status, and cleaning up whatever happens."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import procs
from .targets import TargetError


def endpoint(text: str) -> tuple[str, int]:
    """An ADDRESS:PORT option's value."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected ADDRESS:PORT, got {text!r}")
    return host, int(port)


def byte_size(text: str) -> int:
    """A size option's value: bytes, or with a unit (16MiB, 1g, 64k)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a size like 16MiB, got {text!r}") from err


class SetupError(RuntimeError):
    """The harness cannot start (missing tool, bad option, build failure)."""


@dataclass
class Outcome:
    """What a benchmark produced: the Markdown report, its problems, the JSON record."""

    text: str
    problems: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)


def common_options(p: argparse.ArgumentParser) -> None:
    """The options every benchmark entry point takes: outputs, scratch folder, setup."""
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--json", type=Path, help="write every measurement as JSON here")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the scratch folder (backing files, logs) is made (default "
                        "/tmp); all subjects' files live there, on one filesystem")
    p.add_argument("--keep-workdir", action="store_true",
                   help="leave the scratch folder (logs, manifests) behind")
    p.add_argument("--no-install", action="store_true", help="do not apt-get missing packages")
    p.add_argument("--no-build", action="store_true",
                   help="do not run cargo build (use the agent binary as it is)")


def run(args: argparse.Namespace, prefix: str, body: Callable[[Path], Outcome],
        done: str, cleanup: Callable[[], None] = lambda: None) -> int:
    """Runs `body` in a fresh scratch folder under `args.workdir`, prints its report (and
    writes `args.out`, `args.json`), and returns the exit status: 0, 1 with problems, 2 when
    it could not run, 130 when interrupted. `cleanup` and every child end in all cases."""
    procs.install_signal_handlers()
    scratch = None
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=args.workdir))
        out = body(scratch)
        print(out.text)
        if args.out:
            args.out.write_text(out.text + "\n")
        if args.json:
            args.json.write_text(json.dumps({**out.record, "problems": out.problems},
                                            indent=2, default=str) + "\n")
        if out.problems:
            procs.log(f"[done] {len(out.problems)} problem(s):")
            for p in out.problems:
                procs.log(f"  - {p}")
            return 1
        procs.log(f"[done] {done}")
        return 0
    except procs.Interrupted as sig:
        procs.log(f"[abort] {sig}: cleaning up")
        return 130
    except (SetupError, TargetError, procs.ClientError, RuntimeError, OSError,
            subprocess.SubprocessError) as err:
        procs.log(f"[error] {err}")
        return 2
    finally:
        procs.ignore_signals()
        cleanup()
        procs.kill_all()
        if scratch is not None:
            if args.keep_workdir:
                procs.log(f"[cleanup] kept {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
