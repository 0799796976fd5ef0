"""A small iSCSI initiator speaking raw PDUs (RFC 7143), for tests that need what no real
initiator does on purpose: withholding Data-Out, odd negotiation values, several sessions
from one name, task management across sessions.

Only what the tests use: login without authentication, SCSI commands with immediate data,
Data-Out on R2T, Data-In, task management, NOP-In answers, logout. No digests.
"""
import socket
import struct
import time

RESERVED = 0xFFFFFFFF

# Opcodes (initiator -> target, target -> initiator).
NOP_OUT, SCSI_CMD, TMF_REQ, LOGIN_REQ, TEXT_REQ, DATA_OUT, LOGOUT_REQ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
NOP_IN, SCSI_RSP, TMF_RSP, LOGIN_RSP, TEXT_RSP, DATA_IN, LOGOUT_RSP, R2T, ASYNC, REJECT = (
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F)

# Task management functions.
ABORT_TASK, ABORT_TASK_SET, CLEAR_TASK_SET = 1, 2, 4
LUN_RESET, TARGET_WARM_RESET, TARGET_COLD_RESET = 5, 6, 7
TASK_ABORTED = 0x40
CHECK_CONDITION = 0x02
GOOD = 0x00


class Closed(Exception):
    """The target closed the connection."""


def pad4(n):
    return (4 - n % 4) % 4


def lun_field(lun):
    return struct.pack(">Q", (lun & 0xFF) << 48 if lun < 256 else lun)


class Pdu:
    """A received PDU: its BHS fields as attributes and its data segment."""

    def __init__(self, bhs, data):
        self.bhs = bhs
        self.data = data
        self.opcode = bhs[0] & 0x3F
        self.flags = bhs[1]
        self.itt = struct.unpack(">I", bhs[16:20])[0]
        self.ttt = struct.unpack(">I", bhs[20:24])[0]
        self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn = struct.unpack(">III", bhs[24:36])
        self.status = bhs[3]
        self.response = bhs[2]

    def sense(self):
        """(key, asc, ascq) of a SCSI Response carrying fixed-format sense data."""
        if len(self.data) < 2:
            return None
        n = struct.unpack(">H", self.data[:2])[0]
        s = self.data[2:2 + n]
        if len(s) < 14:
            return None
        return (s[2] & 0x0F, s[12], s[13])

    def __repr__(self):
        return f"Pdu(op={self.opcode:#x} itt={self.itt:#x} status={self.status:#x} len={len(self.data)})"


class Session:
    """One connection, one session (ErrorRecoveryLevel 0)."""

    def __init__(self, host, port, initiator, target, isid=0x400001370000, tsih=0,
                 keys=None, timeout=30.0):
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
        self.login(keys or {})

    # -- framing ---------------------------------------------------------------------------
    def send(self, bhs, data=b""):
        bhs = bytearray(bhs)
        bhs[5:8] = len(data).to_bytes(3, "big")
        self.sock.sendall(bytes(bhs) + data + b"\0" * pad4(len(data)))

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
            data = self.recv_exact(dlen + pad4(dlen))[:dlen]
            p = Pdu(bhs, data)
            counts = p.opcode in (SCSI_RSP, TMF_RSP, TEXT_RSP, LOGOUT_RSP, REJECT, ASYNC) \
                or (p.opcode == DATA_IN and p.flags & 0x01) \
                or (p.opcode == NOP_IN and p.itt != RESERVED)
            if counts:
                self.exp_stat_sn = (p.stat_sn + 1) & 0xFFFFFFFF
            if p.opcode != LOGIN_RSP:
                self.max_cmd_sn = max(self.max_cmd_sn, p.max_cmd_sn)
            if p.opcode == NOP_IN and p.ttt != RESERVED:
                self.nop_out(ttt=p.ttt)
                continue
            if p.opcode == NOP_IN and p.itt == RESERVED:
                continue  # a window update
            return p

    def next_itt(self):
        itt = self.itt
        self.itt += 1
        return itt

    # -- login -----------------------------------------------------------------------------
    def login(self, overrides):
        keys = {
            "InitiatorName": self.initiator, "TargetName": self.target,
            "SessionType": "Normal", "AuthMethod": "None",
        }
        self.login_step(0, 1, keys)
        op = {
            "HeaderDigest": "None", "DataDigest": "None", "MaxRecvDataSegmentLength": "262144",
            "InitialR2T": "No", "ImmediateData": "Yes", "FirstBurstLength": "262144",
            "MaxBurstLength": "1048576", "MaxOutstandingR2T": "1", "DataPDUInOrder": "Yes",
            "DataSequenceInOrder": "Yes", "ErrorRecoveryLevel": "0", "MaxConnections": "1",
            "DefaultTime2Wait": "0", "DefaultTime2Retain": "0",
        }
        op.update(overrides)
        rsp = self.login_step(1, 3, op)
        for k, v in op.items():
            self.params.setdefault(k, v)
        self.max_cmd_sn = rsp.max_cmd_sn
        self.exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF

    def login_step(self, csg, nsg, keys):
        text = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
        bhs = bytearray(48)
        bhs[0] = 0x40 | LOGIN_REQ
        bhs[1] = 0x80 | (csg << 2) | nsg
        bhs[8:14] = self.isid.to_bytes(6, "big")
        bhs[14:16] = self.tsih.to_bytes(2, "big")
        bhs[16:20] = struct.pack(">I", self.next_itt())
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs, text)
        rsp = self.recv()
        if rsp.opcode != LOGIN_RSP or rsp.bhs[36] != 0:
            raise RuntimeError(f"login refused: class {rsp.bhs[36]} detail {rsp.bhs[37]}")
        for kv in rsp.data.split(b"\0"):
            if b"=" in kv:
                k, v = kv.decode().split("=", 1)
                self.params[k] = v
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
        bhs = bytearray(48)
        bhs[0] = SCSI_CMD
        bhs[1] = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | attr
        bhs[8:16] = lun_field(lun)
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", edtl)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        bhs[32:48] = cdb.ljust(16, b"\0")
        self.cmd_sn += 1
        self.send(bhs, immediate)
        return itt

    def data_out(self, itt, ttt, offset, data, data_sn=0, final=True, lun=0):
        bhs = bytearray(48)
        bhs[0] = DATA_OUT
        bhs[1] = 0x80 if final else 0
        bhs[8:16] = lun_field(lun)
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", ttt)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        bhs[36:40] = struct.pack(">I", data_sn)
        bhs[40:44] = struct.pack(">I", offset)
        self.send(bhs, data)

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

    def tmf(self, function, lun=0, ref_itt=RESERVED):
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x40 | TMF_REQ
        bhs[1] = 0x80 | function
        bhs[8:16] = lun_field(lun)
        bhs[16:20] = struct.pack(">I", itt)
        bhs[20:24] = struct.pack(">I", ref_itt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs)
        return itt

    def nop_out(self, ttt=RESERVED):
        bhs = bytearray(48)
        bhs[0] = 0x40 | NOP_OUT
        bhs[1] = 0x80
        bhs[16:20] = struct.pack(">I", RESERVED)
        bhs[20:24] = struct.pack(">I", ttt)
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs)

    def logout(self):
        bhs = bytearray(48)
        bhs[0] = 0x40 | LOGOUT_REQ
        bhs[1] = 0x80
        bhs[16:20] = struct.pack(">I", self.next_itt())
        bhs[24:28] = struct.pack(">I", self.cmd_sn)
        bhs[28:32] = struct.pack(">I", self.exp_stat_sn)
        self.send(bhs)
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


def read10(lba, blocks):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba, blocks, fua=False):
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)


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
