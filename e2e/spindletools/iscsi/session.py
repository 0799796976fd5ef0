"""A small blocking iSCSI initiator speaking raw PDUs (RFC 7143), for tests that need what no
real initiator does on purpose: withholding Data-Out, odd negotiation values, several sessions
from one name, task management across sessions.

Only what the tests use: login without authentication or with CHAP (chap.py: MD5, SHA-1,
SHA-256, SHA3-256, one-way or mutual), SCSI commands with immediate data,
Data-Out on R2T, Data-In, task management, NOP-In answers, logout. No digests. The PDUs are
pdu.py's, the ones the benchmark's reader (reader.py) sends too.
"""
import socket
import struct
import time

from .chap import Exchange
from .pdu import (
    ASYNC, DATA_IN, GOOD, LOGIN_RSP, LOGOUT_RSP, NO_TAG, NOP_IN, OPERATIONAL, R2T, REJECT,
    SCSI_RSP, TEXT_RSP, TMF_RSP, data_out, logout_request, login_request, nop_out, pad4,
    parse_header, parse_sense, parse_text, scsi_command, tmf_request)


class Closed(Exception):
    """The target closed the connection."""


class LoginRefused(RuntimeError):
    """A Login Response with a non-zero status (RFC 7143 section 11.13.5)."""

    def __init__(self, status_class, detail):
        super().__init__(f"login refused: class {status_class} detail {detail}")
        self.status = (status_class << 8) | detail


class Pdu:
    """A received PDU: its BHS fields as attributes and its data segment."""

    def __init__(self, bhs, data):
        h = parse_header(bhs, allow_ahs=True)
        self.bhs = bhs
        self.data = data
        self.opcode = h.opcode
        self.flags = h.flags
        self.itt = h.itt
        self.ttt = h.ttt
        self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn = h.statsn, h.exp_cmdsn, h.max_cmdsn
        self.status = h.status
        self.response = h.response

    def sense(self):
        """(key, asc, ascq) of a SCSI Response carrying sense data."""
        return parse_sense(self.data)

    def __repr__(self):
        return f"Pdu(op={self.opcode:#x} itt={self.itt:#x} status={self.status:#x} len={len(self.data)})"


class Session:
    """One connection, one session (ErrorRecoveryLevel 0)."""

    def __init__(self, host, port, initiator, target, isid=0x400001370000, tsih=0,
                 keys=None, timeout=30.0, chap=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.initiator = initiator
        self.target = target
        self.isid = isid
        self.tsih = tsih
        self.itt = 1
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.max_cmd_sn = 0
        self.params = {}
        self.chap_algorithm = None
        try:
            self.login(keys or {}, chap)
        except BaseException:
            self.sock.close()
            raise

    # -- framing ---------------------------------------------------------------------------
    def send(self, raw):
        self.sock.sendall(raw)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return bytes(buf)

    def recv(self):
        """The next PDU; updates the sequence numbers; answers NOP-In pings itself."""
        while True:
            bhs = self.recv_exact(48)
            ahs = bhs[4] * 4
            dlen = int.from_bytes(bhs[5:8], "big")
            if ahs:
                self.recv_exact(ahs)
            data = self.recv_exact(pad4(dlen))[:dlen]
            p = Pdu(bhs, data)
            counts = p.opcode in (SCSI_RSP, TMF_RSP, TEXT_RSP, LOGOUT_RSP, REJECT, ASYNC) \
                or (p.opcode == DATA_IN and p.flags & 0x01) \
                or (p.opcode == NOP_IN and p.itt != NO_TAG)
            if counts:
                self.exp_stat_sn = (p.stat_sn + 1) & 0xFFFFFFFF
            if p.opcode != LOGIN_RSP:
                self.max_cmd_sn = max(self.max_cmd_sn, p.max_cmd_sn)
            if p.opcode == NOP_IN and p.ttt != NO_TAG:
                self.nop_out(ttt=p.ttt)
                continue
            if p.opcode == NOP_IN and p.itt == NO_TAG:
                continue  # a window update
            return p

    def next_itt(self):
        itt = self.itt
        self.itt += 1
        return itt

    # -- login -----------------------------------------------------------------------------
    def login(self, overrides, chap=None):
        keys = {
            "InitiatorName": self.initiator, "TargetName": self.target,
            "SessionType": "Normal", "AuthMethod": "CHAP" if chap else "None",
        }
        if chap:
            self.authenticate(keys, Exchange(chap))
        else:
            self.login_step(0, 1, keys)
        op = dict(OPERATIONAL)
        op.update(overrides)
        rsp = self.login_step(1, 3, op)
        for k, v in op.items():
            self.params.setdefault(k, v)
        self.max_cmd_sn = rsp.max_cmd_sn
        self.exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF

    def authenticate(self, keys, exchange):
        """The security stage with CHAP: AuthMethod, CHAP_A, then CHAP_N/CHAP_R (with CHAP_I and
        CHAP_C for mutual CHAP); raises LoginRefused or chap.ChapFailed."""
        # T=1 on the first and last PDU, T=0 on CHAP_A: libiscsi's sequence.
        rsp = self.login_step(0, 1, keys)
        if parse_text(rsp.data).get("AuthMethod") != "CHAP":
            raise RuntimeError(f"target did not agree to CHAP: {parse_text(rsp.data)}")
        rsp = self.login_step(0, 1, exchange.offer(), transit=False)
        rsp = self.login_step(0, 1, exchange.answer(parse_text(rsp.data)))
        exchange.check(parse_text(rsp.data))
        self.chap_algorithm = exchange.algorithm

    def login_step(self, csg, nsg, keys, transit=True):
        self.send(login_request(self.isid.to_bytes(6, "big"), self.next_itt(), self.cmd_sn,
                                self.exp_stat_sn, csg, nsg, keys, tsih=self.tsih,
                                transit=transit))
        rsp = self.recv()
        if rsp.opcode != LOGIN_RSP:
            raise RuntimeError(f"not a Login Response: {rsp}")
        if rsp.bhs[36] != 0:
            raise LoginRefused(rsp.bhs[36], rsp.bhs[37])
        self.params.update(parse_text(rsp.data))
        self.exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF
        self.tsih = int.from_bytes(rsp.bhs[14:16], "big")
        return rsp

    def param(self, key):
        return int(self.params[key])

    # -- requests --------------------------------------------------------------------------
    def window_open(self):
        return self.cmd_sn <= self.max_cmd_sn

    def command(self, cdb, lun=0, edtl=0, read=False, write=False, immediate=b"",
                final=True, attr=1):
        """Sends a SCSI Command; returns its ITT."""
        itt = self.next_itt()
        self.send(scsi_command(lun, itt, self.cmd_sn, self.exp_stat_sn, cdb, edtl=edtl,
                               read=read, write=write, immediate=immediate, final=final,
                               attr=attr))
        self.cmd_sn += 1
        return itt

    def data_out(self, itt, ttt, offset, data, data_sn=0, final=True, lun=0):
        self.send(data_out(lun, itt, ttt, self.exp_stat_sn, data_sn, offset, data, final))

    def answer_r2t(self, r2t, data, withhold=0):
        """Sends the data an R2T asks for (from `data`, the whole write), in segments of the
        target's MaxRecvDataSegmentLength; `withhold` bytes at the end are never sent."""
        offset = struct.unpack(">I", r2t.bhs[40:44])[0]
        length = struct.unpack(">I", r2t.bhs[44:48])[0]
        seg = self.param("MaxRecvDataSegmentLength") if "MaxRecvDataSegmentLength" in self.params else 8192
        end = offset + length - withhold
        sn = 0
        at = offset
        while at < end:
            n = min(seg, end - at)
            self.data_out(r2t.itt, r2t.ttt, at, data[at:at + n], data_sn=sn,
                          final=(at + n == offset + length))
            at += n
            sn += 1

    def tmf(self, function, lun=0, ref_itt=NO_TAG):
        itt = self.next_itt()
        self.send(tmf_request(function, lun, itt, ref_itt, self.cmd_sn, self.exp_stat_sn))
        return itt

    def nop_out(self, ttt=NO_TAG):
        self.send(nop_out(ttt, bytes(8), self.exp_stat_sn, self.cmd_sn))

    def logout(self):
        self.send(logout_request(self.next_itt(), self.cmd_sn, self.exp_stat_sn))
        while self.recv().opcode != LOGOUT_RSP:
            pass
        self.sock.close()

    # -- whole commands --------------------------------------------------------------------
    def wait_for(self, itt, data_in=None):
        """Reads until the status of `itt` arrives; Data-In goes into `data_in` (a bytearray).
        Returns the PDU with the status (SCSI Response, or Data-In with S)."""
        while True:
            p = self.recv()
            if p.itt != itt:
                raise RuntimeError(f"unexpected {p} while waiting for {itt:#x}")
            if p.opcode == DATA_IN:
                if data_in is not None:
                    off = struct.unpack(">I", p.bhs[40:44])[0]
                    data_in[off:off + len(p.data)] = p.data
                if p.flags & 0x01:
                    return p
            elif p.opcode in (SCSI_RSP, TMF_RSP, REJECT):
                return p

    def run(self, cdb, edtl=0, read=False, data=None, lun=0, attr=1):
        """One command to completion: (status PDU, Data-In)."""
        first = self.param("FirstBurstLength")
        seg = self.param("MaxRecvDataSegmentLength")
        immediate = b""
        if data is not None:
            immediate = data[:min(first, seg, len(data))] if self.params.get("ImmediateData") == "Yes" else b""
        itt = self.command(cdb, lun=lun, edtl=edtl or (len(data) if data else 0), read=read,
                           write=data is not None, immediate=immediate, attr=attr)
        buf = bytearray(edtl) if read else None
        while True:
            p = self.recv()
            if p.opcode == R2T and p.itt == itt:
                self.answer_r2t(p, data)
                continue
            if p.itt != itt:
                raise RuntimeError(f"unexpected {p}")
            if p.opcode == DATA_IN:
                off = struct.unpack(">I", p.bhs[40:44])[0]
                buf[off:off + len(p.data)] = p.data
                if p.flags & 0x01:
                    return p, bytes(buf)
            elif p.opcode in (SCSI_RSP, REJECT):
                return p, bytes(buf) if buf is not None else b""

    def until_good(self, cdb=b"\0" * 6, lun=0, tries=8):
        """Repeats a command (TEST UNIT READY) until GOOD; returns the sense of each UA seen."""
        seen = []
        for _ in range(tries):
            p, _ = self.run(cdb, lun=lun)
            if p.status == GOOD:
                return seen
            seen.append(p.sense())
        raise RuntimeError(f"never GOOD: {seen}")


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(cond, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
