"""Drives one boot of the guest: answers its requests (restart the agent, drain, how much of
the backing file is allocated, check the drained file) and records each phase's outcome."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import drain_check, netns
from .agent import Agent
from .channel import Channel, ChannelClosed
from .drain import ApiDrain
from .guest import Guest
from .phases import Phase

BOOT_TIMEOUT = 180.0


@dataclass
class Outcome:
    phase: Phase
    ok: bool | None = None  # None: did not run or did not finish
    seconds: float = 0.0
    message: str = ""


@dataclass
class Boot:
    outcomes: dict[str, Outcome]
    boot_seconds: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    error: str = ""


class Conductor:
    def __init__(self, channel: Channel, guest: Guest, agent: Agent, phases: list[Phase],
                 drain: ApiDrain, port: int, log: Callable[[str], None]):
        self.channel, self.guest, self.agent = channel, guest, agent
        self.phases = phases
        self.drain = drain
        self.port = port
        self.log = log
        self.boot = Boot({p.name: Outcome(p) for p in phases})
        self.current: Outcome | None = None
        self.started = 0.0

    # --- requests from the guest ------------------------------------------------------------

    def backing(self, device: str) -> Path:
        return self.agent.data_dir / f"{device}.img"

    def ask_connections(self, _args: list[str]) -> str:
        pairs = netns.connections(self.port)
        return ", ".join(f"{local} {peer}" for local, peer in pairs) or "none"

    def ask_allocated(self, args: list[str]) -> str:
        return str(self.backing(args[0]).stat().st_blocks * 512)

    def ask_restart(self, args: list[str]) -> str:
        sig = {"term": signal.SIGTERM, "kill": signal.SIGKILL}[args[0]]
        rc, stop_s = self.agent.stop(sig)
        if sig == signal.SIGTERM and rc != 0:
            raise RuntimeError(f"the agent exited {rc} on SIGTERM: {self.agent.tail(5)}")
        # Started at once: a killed agent's listening socket outlives it for a moment (the
        # kernel tears its io_uring down asynchronously); the new agent waits for the port.
        start_s = self.agent.start()
        return f"stopped in {stop_s:.2f} s (exit {rc}), serving again {start_s:.2f} s later"

    def ask_prepare_drain(self, args: list[str]) -> str:
        return self.drain.prepare(args[0])

    def ask_drain(self, args: list[str]) -> str:
        return self.drain.drain(args[0])

    def ask_check_drain(self, args: list[str]) -> str:
        text = self.boot.files.get("drain.log")
        if text is None:
            raise RuntimeError("the guest sent no drain.log")
        return drain_check.check(drain_check.parse(text), self.backing(args[0]))

    def answer(self, request: str) -> str:
        verb, *args = request.split()
        handler = getattr(self, "ask_" + verb.replace("-", "_"), None)
        if handler is None:
            return f"NO unknown request {verb!r}"
        try:
            return "OK " + handler(args)
        except Exception as err:  # noqa: BLE001 - any failure goes back to the guest's phase
            return f"NO {err}"

    # --- the boot ---------------------------------------------------------------------------

    def run(self) -> Boot:
        self.started = time.monotonic()
        try:
            self._accept()
            self._converse()
        except TimeoutError:
            where = f"phase {self.current.phase.name}" if self.current else "boot"
            self._fail_current(f"no word from the guest for too long in the {where}")
            self.boot.error = f"the guest went silent in the {where}"
            self.guest.kill()
        except ChannelClosed as err:
            self._fail_current(str(err))
            self.boot.error = str(err)
            self.guest.kill()
        if self.guest.wait(60) is None:
            self.guest.kill()
            self.boot.error = self.boot.error or "the guest did not power off"
        return self.boot

    def _accept(self) -> None:
        """Waits for QEMU to connect the guest's control port (at its start)."""
        self.channel.accept_while(self.guest.running)

    def _fail_current(self, message: str) -> None:
        if self.current is not None and self.current.ok is None:
            self.current.ok = False
            self.current.message = message
            self.current.seconds = time.monotonic() - self._phase_t0

    def _converse(self) -> None:
        self._phase_t0 = 0.0
        while True:
            timeout = self.current.phase.timeout if self.current else BOOT_TIMEOUT
            line = self.channel.readline(timeout)
            verb, _, rest = line.partition(" ")
            if verb == "PHASE":
                if self.boot.boot_seconds is None:
                    self.boot.boot_seconds = time.monotonic() - self.started
                    self.log(f"guest up after {self.boot.boot_seconds:.1f} s")
                self.current = self.boot.outcomes.get(rest)
                if self.current is None:
                    raise ChannelClosed(f"the guest runs a phase nobody asked for: {rest}")
                self._phase_t0 = time.monotonic()
                self.log(f"phase {rest}: {self.current.phase.what}")
            elif verb == "END":
                name, _, result = rest.partition(" ")
                outcome = self.boot.outcomes[name]
                outcome.seconds = time.monotonic() - self._phase_t0
                status, _, message = result.partition(" ")
                outcome.ok = status == "ok"
                outcome.message = "" if outcome.ok else message
                self.log(f"phase {name}: {'ok' if outcome.ok else 'FAILED: ' + message} "
                         f"({outcome.seconds:.1f} s)")
                self.current = None
            elif verb == "ASK":
                reply = self.answer(rest)
                self.log(f"  {rest} -> {reply}")
                self.channel.send(reply)
            elif verb == "FILE":
                lines = []
                while (part := self.channel.readline(60)) != "EOF":
                    lines.append(part)
                self.boot.files[rest] = "\n".join(lines) + "\n"
            elif verb == "BYE":
                return
            else:
                self.log(f"  (guest said: {line})")
