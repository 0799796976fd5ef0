"""A small iSCSI initiator on asyncio: many sessions in one process, each logging in to its own
target and reading 4 KiB blocks with READ(10), every block checked against the stamp the
harness wrote there. It speaks real iSCSI (RFC 7143: login, SCSI Command, Data-In, SCSI
Response, NOP) over TCP, without digests, for the scale benchmark (`bench/scale`), where one
libiscsi process per session would cost more than the targets under test.

Run as a worker: `python3 -m spindletools.iscsi.reader SPEC.json`. It logs every session in, prints
`ready N` on stdout, waits for a line on stdin, reads for `seconds`, prints one JSON line of
results and logs out.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

from .pdu import (
    ASYNC, BHS, CHECK_CONDITION, DATA_IN, LOGIN_RSP, LOGOUT_RSP, NO_TAG, NOP_IN, OPERATIONAL,
    REJECT, SCSI_RSP, UNIT_ATTENTION, Header, ProtocolError, login_request, login_status,
    logout_request, nop_out, pad4, parse_header, parse_sense, parse_text, read10, scsi_command,
    serial_lt)

BLOCK = 4096


def stamp(target: str, block: int) -> bytes:
    """What the harness writes at the start of `block` of `target`'s backing file, and what
    a read of that block must return."""
    return f"spindle-scale {target} block {block}\n".encode()


def read10_command(lun: int, itt: int, cmdsn: int, exp_statsn: int, lba: int, blocks: int,
                   block_size: int) -> bytes:
    """SCSI Command: READ(10) of `blocks` blocks at `lba`, final, read, simple task."""
    return scsi_command(lun, itt, cmdsn, exp_statsn, read10(lba, blocks),
                        edtl=blocks * block_size, read=True)


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank) of `values`, 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


class UnitAttention(ProtocolError):
    """CHECK CONDITION with UNIT ATTENTION (e.g. the first command of a new I_T nexus after
    a reset): the command was not run; an initiator sends it again."""


@dataclass
class TargetResult:
    """What one session did during the measured window."""

    target: str
    reads: int = 0  # completed with GOOD status, 4 KiB back, stamp checked
    bytes: int = 0
    latency_sum: float = 0.0
    latency_p99: float = 0.0  # seconds, of the reads counted
    error: str | None = None
    total_reads: int = 0  # including those outside the window (warm-up, the last ones)
    unit_attentions: int = 0  # reads answered UNIT ATTENTION and sent again
    login_retries: int = 0  # logins the target dropped before they completed, tried again


@dataclass
class Spec:
    """One worker's job, as the harness writes it."""

    host: str
    port: int
    targets: list[dict]  # {"name", "iqn", "lun"}, optionally "qd" (else the spec's)
    seconds: float
    qd: int = 1
    span_blocks: int = 16  # reads fall on blocks 0..span-1 (all stamped)
    block_size: int = 512
    initiator: str = "iqn.2026-11.dev.spindle:bench-scale"
    seed: int = 0
    login_timeout: float = 120.0
    extra: dict = field(default_factory=dict)


class Session:
    """One logged-in session to one target, reading with its target's `qd` (else the spec's)
    commands outstanding."""

    def __init__(self, spec: Spec, target: dict, index: int):
        self.spec, self.target, self.index = spec, target, index
        self.result = TargetResult(target["name"])
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.cmdsn = 1
        self.exp_statsn = 0
        self.max_cmdsn = 1
        self.window = asyncio.Event()
        self.pending: dict[int, tuple[asyncio.Future, bytearray, int, float]] = {}
        self.next_itt = 1
        self.rng = random.Random(spec.seed * 1_000_003 + index)
        self.counting = False
        self.stopping = False
        self.latencies: list[float] = []

    async def _recv(self) -> tuple[Header, bytes]:
        assert self.reader is not None
        h = parse_header(await self.reader.readexactly(BHS))
        data = await self.reader.readexactly(pad4(h.data_len)) if h.data_len else b""
        return h, data[:h.data_len]

    async def login(self, attempts: int = 5) -> None:
        """Logs in; a connection the target drops during login (as a target under a login
        storm may) is retried after a pause, as initiators do, and counted."""
        for attempt in range(attempts):
            try:
                return await self._login_once()
            except (ConnectionError, asyncio.IncompleteReadError):
                if attempt + 1 == attempts:
                    raise
                if self.writer is not None:
                    self.writer.close()
                self.result.login_retries += 1
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _login_once(self) -> None:
        s = self.spec
        self.cmdsn, self.exp_statsn = 1, 0
        self.reader, self.writer = await asyncio.open_connection(s.host, s.port)
        isid = bytes([0x80, 0, 0]) + self.index.to_bytes(3, "big")  # random-ish qualifier
        name = f"{s.initiator}-{self.index}"
        stages = [(0, 1, {"InitiatorName": name, "TargetName": self.target["iqn"],
                          "SessionType": "Normal", "AuthMethod": "None"}),
                  (1, 3, OPERATIONAL)]
        for csg, nsg, keys in stages:
            while True:
                self.writer.write(login_request(isid, 0, self.cmdsn, self.exp_statsn, csg, nsg,
                                                keys))
                await self.writer.drain()
                h, data = await self._recv()
                if h.opcode != LOGIN_RSP:
                    raise ProtocolError(f"expected a Login Response, got opcode {h.opcode:#x}")
                cls, detail = login_status(h)
                if cls != 0:
                    raise ProtocolError(f"login to {self.target['iqn']} refused: status class "
                                        f"{cls}, detail {detail} ({parse_text(data)})")
                self.exp_statsn = (h.statsn + 1) & 0xFFFFFFFF
                self.max_cmdsn = h.max_cmdsn
                transit = h.flags & 0x80 and (h.flags & 0x03) == nsg
                if transit:
                    break
                keys = {}  # the target wants another round in this stage: send nothing new

    def _send_read(self) -> asyncio.Future:
        s = self.spec
        block = self.rng.randrange(s.span_blocks)
        per = BLOCK // s.block_size
        itt = self.next_itt
        self.next_itt = (self.next_itt + 1) & 0x7FFFFFFF or 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[itt] = (fut, bytearray(), block, time.monotonic())
        assert self.writer is not None
        self.writer.write(read10_command(self.target["lun"], itt, self.cmdsn, self.exp_statsn,
                                 block * per, per, s.block_size))
        self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        return fut

    def _complete(self, itt: int, status: int, residual_under: bool,
                  sense: bytes = b"") -> None:
        fut, buf, block, t0 = self.pending.pop(itt)
        r = self.result
        want = stamp(self.target["name"], block)
        if status != 0:
            parsed = parse_sense(sense)
            kind = (UnitAttention if status == CHECK_CONDITION and parsed and parsed[0] == UNIT_ATTENTION
                    else ProtocolError)
            detail = (f", sense key {parsed[0]:#x}, ASC/ASCQ {parsed[1]:#04x}/{parsed[2]:#04x}"
                      if parsed else "")
            fut.set_exception(kind(f"READ(10) of block {block} ended with SCSI status "
                                   f"{status:#x}{detail}"))
        elif residual_under or len(buf) != BLOCK:
            fut.set_exception(ProtocolError(f"READ(10) of block {block} returned "
                                            f"{len(buf)} bytes, not {BLOCK}"))
        elif not buf.startswith(want):
            fut.set_exception(ProtocolError(f"block {block} of {self.target['name']} holds "
                                            f"{bytes(buf[:len(want)])!r}, not its stamp"))
        else:
            r.total_reads += 1
            if self.counting:
                r.reads += 1
                r.bytes += len(buf)
                took = time.monotonic() - t0
                r.latency_sum += took
                self.latencies.append(took)
            fut.set_result(None)

    async def _receive_loop(self) -> None:
        while True:  # until the Logout Response (or the connection ends)
            h, data = await self._recv()
            if serial_lt(self.max_cmdsn, h.max_cmdsn):
                self.max_cmdsn = h.max_cmdsn
                self.window.set()
            if h.opcode == DATA_IN:
                entry = self.pending.get(h.itt)
                if entry is None:
                    raise ProtocolError(f"Data-In for unknown task {h.itt:#x}")
                buf = entry[1]
                if h.offset != len(buf):
                    raise ProtocolError(f"Data-In at offset {h.offset}, expected {len(buf)}")
                buf += data
                if h.has_status:
                    self.exp_statsn = (h.statsn + 1) & 0xFFFFFFFF
                    self._complete(h.itt, h.status, h.underflow and h.residual > 0)
            elif h.opcode == SCSI_RSP:
                self.exp_statsn = (h.statsn + 1) & 0xFFFFFFFF
                if h.itt not in self.pending:
                    raise ProtocolError(f"SCSI Response for unknown task {h.itt:#x}")
                status = h.status if h.response == 0 else 0x100 | h.response
                self._complete(h.itt, status, h.underflow and h.residual > 0, data)
            elif h.opcode == NOP_IN:
                if h.ttt != NO_TAG:
                    assert self.writer is not None
                    self.writer.write(nop_out(h.ttt, h.raw[8:16], self.exp_statsn, self.cmdsn))
            elif h.opcode == LOGOUT_RSP:
                return
            elif h.opcode == REJECT:
                raise ProtocolError(f"the target rejected a PDU: {data[:BHS].hex()}")
            elif h.opcode == ASYNC:
                continue
            else:
                raise ProtocolError(f"unexpected opcode {h.opcode:#x}")

    async def _worker(self) -> None:
        while not self.stopping:
            while not serial_lt(self.cmdsn, (self.max_cmdsn + 1) & 0xFFFFFFFF):
                self.window.clear()
                await self.window.wait()
            try:
                await self._send_read()
            except UnitAttention:
                self.result.unit_attentions += 1
                if self.result.unit_attentions > 16:
                    raise

    async def run(self, go: asyncio.Event, stop: asyncio.Event) -> None:
        """Reads until `stop`; counts only between `go` and `stop`."""
        receiver = asyncio.create_task(self._receive_loop())
        qd = self.target.get("qd") or self.spec.qd
        workers = [asyncio.create_task(self._worker()) for _ in range(qd)]
        waits = [receiver, *workers]
        try:
            await go.wait()
            self.counting = True
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
            self.counting = False
            self.stopping = True
            for t in done:
                if t is not stopper and t.exception():
                    raise t.exception()
            await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
            assert self.writer is not None
            self.writer.write(logout_request(self.next_itt, self.cmdsn, self.exp_statsn))
            await self.writer.drain()
            await asyncio.wait_for(receiver, timeout=30)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError,
                ProtocolError) as err:
            self.result.error = f"{type(err).__name__}: {err}"
            self.counting = False
        finally:
            for t in waits:
                t.cancel()
            if self.writer is not None:
                self.writer.close()


async def run_worker(spec: Spec, go_line: asyncio.Future | None = None,
                     ready=lambda live: None) -> list[TargetResult]:
    """Logs every session in (all at once), reports `ready`, waits for the go, reads for
    `spec.seconds`, logs out. Sessions that fail to log in count as errors."""
    sessions = [Session(spec, t, spec.extra.get("first_index", 0) + i)
                for i, t in enumerate(spec.targets)]
    logins = await asyncio.wait_for(
        asyncio.gather(*(s.login() for s in sessions), return_exceptions=True),
        timeout=spec.login_timeout)
    live = []
    for s, outcome in zip(sessions, logins):
        if isinstance(outcome, BaseException):
            s.result.error = f"login: {type(outcome).__name__}: {outcome}"
            if s.writer is not None:
                s.writer.close()
        else:
            live.append(s)
    ready(len(live))
    if go_line is not None:
        await go_line
    go, stop = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(s.run(go, stop)) for s in live]
    await asyncio.sleep(spec.extra.get("warmup", 1.0))
    t0 = time.monotonic()
    go.set()
    await asyncio.sleep(spec.seconds)
    stop.set()
    elapsed = time.monotonic() - t0
    await asyncio.gather(*tasks)
    for s in sessions:
        s.result.latency_sum = round(s.result.latency_sum, 6)
        s.result.latency_p99 = round(p99(s.latencies), 6)
    spec.extra["elapsed"] = elapsed
    return [s.result for s in sessions]


async def _stdin_line() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)


async def _main(spec: Spec) -> None:
    results = await run_worker(spec, asyncio.ensure_future(_stdin_line()),
                               ready=lambda live: print(f"ready {live}", flush=True))
    print(json.dumps({"elapsed": spec.extra["elapsed"],
                      "results": [r.__dict__ for r in results]}), flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(_main(Spec(**json.load(f))))
