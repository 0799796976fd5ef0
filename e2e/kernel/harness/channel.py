"""The control channel to the guest: QEMU connects the guest's second serial port (ttyS1) to a
Unix socket the runner listens on; both sides speak lines (see guest/lib.sh)."""

from __future__ import annotations

import socket
import time
from pathlib import Path


class ChannelClosed(RuntimeError):
    pass


class Channel:
    def __init__(self, path: Path):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.conn: socket.socket | None = None
        self.buf = b""

    def accept(self, timeout: float) -> None:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()

    def accept_while(self, running, timeout: float = 60) -> None:
        """Waits for QEMU to connect the guest's control port: ChannelClosed as soon as
        `running()` says QEMU exited, TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.accept(timeout=0.5)
                return
            except TimeoutError:
                if not running():
                    raise ChannelClosed("QEMU exited before the guest started") from None
                if time.monotonic() > deadline:
                    raise

    def readline(self, timeout: float) -> str:
        """The next line from the guest; TimeoutError after `timeout` seconds of silence."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            if not data:
                raise ChannelClosed("the guest closed the control channel (QEMU exited)")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def send(self, line: str) -> None:
        assert self.conn is not None
        self.conn.sendall(line.replace("\n", " ").encode() + b"\n")

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()
