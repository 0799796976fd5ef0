"""iSCSI PDUs (RFC 7143) as bytes, sans I/O: the opcodes, the requests both of this package's
sessions send (login, SCSI Command, Data-Out, task management, NOP-Out, logout), the target's
headers parsed, text keys, sense data, and the CDBs the tests and the benchmark use. No digests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import manifests

BHS = 48
NO_TAG = 0xFFFFFFFF  # the reserved Initiator/Target Transfer Tag
IMMEDIATE = 0x40

# Opcodes (initiator → target, target → initiator).
NOP_OUT, SCSI_CMD, TMF_REQ, LOGIN_REQ, TEXT_REQ, DATA_OUT, LOGOUT_REQ = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06)
NOP_IN, SCSI_RSP, TMF_RSP, LOGIN_RSP, TEXT_RSP, DATA_IN, LOGOUT_RSP, R2T, ASYNC, REJECT = (
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F)

# Task management functions.
ABORT_TASK, ABORT_TASK_SET, CLEAR_TASK_SET = 1, 2, 4
LUN_RESET, TARGET_WARM_RESET, TARGET_COLD_RESET = 5, 6, 7

# SCSI status, and the sense key of a unit attention.
GOOD, CHECK_CONDITION, TASK_ABORTED = 0x00, 0x02, 0x40
UNIT_ATTENTION = 0x6

# Operational keys offered: what a minimal initiator needs (no digests, one connection, data in
# order, no error recovery), then the benchmark's own iSCSI parameters, the ones both targets
# are configured with (the tests' sessions offer the same).
OPERATIONAL = {
    "HeaderDigest": "None", "DataDigest": "None", "MaxConnections": "1",
    "DefaultTime2Wait": "0", "DefaultTime2Retain": "0", "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes", "ErrorRecoveryLevel": "0", **manifests.iscsi_params(),
}


class ProtocolError(RuntimeError):
    """The target answered something this initiator did not ask for or cannot use."""


def pad4(n: int) -> int:
    """`n` rounded up to a multiple of 4 (data segments are padded so)."""
    return (n + 3) & ~3


def text_data(keys: dict[str, str]) -> bytes:
    """Key=value pairs, each NUL-terminated (RFC 7143 §6.1)."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())


def parse_text(data: bytes) -> dict[str, str]:
    out = {}
    for item in data.split(b"\0"):
        if item:
            key, _, value = item.decode(errors="replace").partition("=")
            out[key] = value
    return out


def pdu(bhs: bytearray, data: bytes = b"") -> bytes:
    """A PDU: the 48-byte header with its DataSegmentLength set, then the padded data."""
    struct.pack_into(">I", bhs, 4, len(data))  # TotalAHSLength 0, then 3 length bytes
    return bytes(bhs) + data + b"\0" * (pad4(len(data)) - len(data))


def lun_field(lun: int) -> bytes:
    """SAM single-level LUN (peripheral addressing below 256, flat space above)."""
    if lun < 256:
        return bytes([0, lun, 0, 0, 0, 0, 0, 0])
    return bytes([0x40 | (lun >> 8), lun & 0xFF, 0, 0, 0, 0, 0, 0])


def login_request(isid: bytes, itt: int, cmdsn: int, exp_statsn: int, csg: int, nsg: int,
                  keys: dict[str, str], tsih: int = 0, transit: bool = True) -> bytes:
    """A Login Request in stage `csg`; with `transit` (T bit) it asks to go on to `nsg`."""
    bhs = bytearray(BHS)
    bhs[0] = LOGIN_REQ | IMMEDIATE
    bhs[1] = (0x80 if transit else 0) | (csg << 2) | nsg
    bhs[8:14] = isid
    bhs[14:16] = tsih.to_bytes(2, "big")
    struct.pack_into(">IHxxII", bhs, 16, itt, 0, cmdsn, exp_statsn)  # CID 0
    return pdu(bhs, text_data(keys))


def scsi_command(lun: int, itt: int, cmdsn: int, exp_statsn: int, cdb: bytes, edtl: int = 0,
                 read: bool = False, write: bool = False, immediate: bytes = b"",
                 final: bool = True, attr: int = 1) -> bytes:
    """A SCSI Command (task attribute `attr`, 1 = simple) with its immediate data."""
    bhs = bytearray(BHS)
    bhs[0] = SCSI_CMD
    bhs[1] = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | attr
    bhs[8:16] = lun_field(lun)
    struct.pack_into(">IIII", bhs, 16, itt, edtl, cmdsn, exp_statsn)
    bhs[32:48] = cdb.ljust(16, b"\0")
    return pdu(bhs, immediate)


def data_out(lun: int, itt: int, ttt: int, exp_statsn: int, data_sn: int, offset: int,
             data: bytes, final: bool = True) -> bytes:
    bhs = bytearray(BHS)
    bhs[0] = DATA_OUT
    bhs[1] = 0x80 if final else 0
    bhs[8:16] = lun_field(lun)
    struct.pack_into(">II", bhs, 16, itt, ttt)
    struct.pack_into(">I", bhs, 28, exp_statsn)
    struct.pack_into(">II", bhs, 36, data_sn, offset)
    return pdu(bhs, data)


def tmf_request(function: int, lun: int, itt: int, ref_itt: int, cmdsn: int,
                exp_statsn: int) -> bytes:
    bhs = bytearray(BHS)
    bhs[0] = TMF_REQ | IMMEDIATE
    bhs[1] = 0x80 | function
    bhs[8:16] = lun_field(lun)
    struct.pack_into(">IIII", bhs, 16, itt, ref_itt, cmdsn, exp_statsn)
    return pdu(bhs)


def nop_out(ttt: int, lun: bytes, exp_statsn: int, cmdsn: int) -> bytes:
    """The answer to a NOP-In that asks for one (its Target Transfer Tag echoed)."""
    bhs = bytearray(BHS)
    bhs[0] = NOP_OUT | IMMEDIATE
    bhs[1] = 0x80
    bhs[8:16] = lun
    struct.pack_into(">IIII", bhs, 16, NO_TAG, ttt, cmdsn, exp_statsn)
    return pdu(bhs)


def logout_request(itt: int, cmdsn: int, exp_statsn: int) -> bytes:
    bhs = bytearray(BHS)
    bhs[0] = LOGOUT_REQ | IMMEDIATE
    bhs[1] = 0x80  # reason 0: close the session
    struct.pack_into(">IHxxII", bhs, 16, itt, 0, cmdsn, exp_statsn)
    return pdu(bhs)


def read10(lba: int, blocks: int) -> bytes:
    """The CDB of READ(10)."""
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int, fua: bool = False) -> bytes:
    """The CDB of WRITE(10), FUA set on request."""
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)


@dataclass(frozen=True)
class Header:
    """The fields of a target's PDU header this package uses."""

    opcode: int
    flags: int
    status: int  # byte 3: SCSI status (Data-In with S, SCSI Response)
    response: int  # byte 2: iSCSI response (SCSI Response)
    data_len: int
    itt: int
    ttt: int
    statsn: int
    exp_cmdsn: int
    max_cmdsn: int
    offset: int  # Data-In buffer offset
    residual: int
    raw: bytes

    @property
    def final(self) -> bool:
        return bool(self.flags & 0x80)

    @property
    def has_status(self) -> bool:  # Data-In S bit
        return bool(self.flags & 0x01)

    @property
    def underflow(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def ahs_len(self) -> int:
        return self.raw[4] * 4


def parse_header(raw: bytes, allow_ahs: bool = False) -> Header:
    """The header's fields; an additional header segment is refused unless `allow_ahs` (the
    caller then reads and drops `ahs_len` bytes)."""
    if len(raw) != BHS:
        raise ProtocolError(f"a PDU header is {BHS} bytes, got {len(raw)}")
    if raw[4] and not allow_ahs:
        raise ProtocolError("the target sent an additional header segment")
    data_len = int.from_bytes(raw[5:8], "big")
    itt, ttt, statsn, exp_cmdsn, max_cmdsn, _datasn, offset, residual = struct.unpack_from(
        ">IIIIIIII", raw, 16)
    return Header(opcode=raw[0] & 0x3F, flags=raw[1], response=raw[2], status=raw[3],
                  data_len=data_len, itt=itt, ttt=ttt, statsn=statsn, exp_cmdsn=exp_cmdsn,
                  max_cmdsn=max_cmdsn, offset=offset, residual=residual, raw=raw)


def login_status(h: Header) -> tuple[int, int]:
    """(status class, status detail) of a Login Response (bytes 36, 37)."""
    return h.raw[36], h.raw[37]


def parse_sense(segment: bytes) -> tuple[int, int, int] | None:
    """(sense key, ASC, ASCQ) from a SCSI Response's data segment (a 2-byte length, then
    fixed or descriptor format sense data); None when there is none."""
    if len(segment) < 2:
        return None
    sense = segment[2:2 + int.from_bytes(segment[:2], "big")]
    if len(sense) >= 14 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F, sense[12], sense[13]
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    return None


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial-number comparison on 32 bits (CmdSN windows wrap)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000
