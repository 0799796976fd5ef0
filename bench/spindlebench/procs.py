"""Start, run and stop child processes; remember every one so cleanup can end them all."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_LIVE: list[subprocess.Popen] = []


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


class ClientError(RuntimeError):
    """A client command failed to run (non-zero exit or timeout)."""


@dataclass(frozen=True)
class ClientRun:
    """Output and cost of one finished client command."""

    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    cpu_s: float  # user + system CPU of the client and its children


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], timeout: float, stdin: int | None = subprocess.DEVNULL,
        check: bool = True) -> ClientRun:
    """Run `cmd` to the end (killing it after `timeout` s) and return its output.

    The CPU time is the growth of this process's reaped-children usage, so only one
    command may run at a time through this function (the harness is sequential). The
    command gets its own process group, so a timeout ends all of it.
    """
    cpu0, t0 = _children_cpu(), time.monotonic()
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True)
    _LIVE.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        _kill_group(proc)  # fio's job processes too, or they keep the pipes open
        out, err = proc.communicate()
        raise ClientError(f"{cmd[0]} timed out after {timeout:.0f} s; last output: "
                          f"{_last_words(err, out)}") from expired
    except BaseException:  # interrupted: the client must not outlive the harness
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        _LIVE.remove(proc)
    result = ClientRun(out, err, proc.returncode, time.monotonic() - t0, _children_cpu() - cpu0)
    if check and proc.returncode != 0:
        raise ClientError(f"{cmd[0]} exited with {proc.returncode}: {_last_words(err, out)}")
    return result


def _last_words(err: str, out: str, limit: int = 300) -> str:
    """The end of what a command printed (stderr first), progress carriage returns folded."""
    text = " | ".join(t.replace("\r", "\n").strip() for t in (err, out) if t.strip())
    text = " ".join(text.split())
    return text[-limit:] if text else "(nothing)"


class Daemon:
    """A long-running child (a target or a session holder) with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, stdin: int | None = None,
                 stdout_pipe: bool = False, env: dict[str, str] | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log,
            start_new_session=True, env=env,
        )
        _LIVE.append(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]

    def stop(self, grace: float = 10.0) -> str | None:
        """SIGTERM, then SIGKILL after `grace` s. Returns a complaint if it did not stop
        cleanly (killed, or a failing exit status), else None."""
        complaint = None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
                self.proc.wait()
                complaint = f"{self.name} did not stop within {grace:.0f} s of SIGTERM; killed"
        code = self.proc.returncode
        if complaint is None and code not in (0, -signal.SIGTERM):
            complaint = f"{self.name} exited with status {code}"
        self._close()
        return complaint

    def kill(self) -> None:
        if self.alive():
            _kill_group(self.proc)
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc in _LIVE:
            _LIVE.remove(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._log.close()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def kill_all() -> None:
    """End every child still running, with its process group (the cleanup path)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
        _LIVE.remove(proc)


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived; unwind and clean up."""


def install_signal_handlers() -> None:
    def handler(signum, _frame):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not break cleanup
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def ignore_signals() -> None:
    """Called once cleanup starts, so it runs to the end."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
