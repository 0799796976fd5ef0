"""Checks of a failed store through raw iSCSI sessions (spindletools.iscsi).

  python3 -m spindletools.standalone.fault_checks HOST:PORT IQN STEP

STEP is one of
  write-ok        a WRITE and a SYNCHRONIZE CACHE answer GOOD
  sync-fails      SYNCHRONIZE CACHE answers MEDIUM ERROR
  write-fails     a WRITE answers MEDIUM ERROR
  failed          the unit stays failed: WRITE and SYNCHRONIZE CACHE answer MEDIUM ERROR
                  (the flush would now succeed: Linux reports a writeback error once), and
                  READ still answers GOOD
"""
import struct
import sys

from spindletools.iscsi import pdu
from spindletools.iscsi import session as r

SYNC10 = struct.pack(">BBIBHB", 0x35, 0, 0, 0, 0, 0)
MEDIUM_ERROR = 3


def session(addr, iqn):
    host, port = addr.rsplit(":", 1)
    s = r.Session(host, int(port), "iqn.2026-11.dev.spindle:test.faults", iqn)
    s.until_good()
    return s


def expect(what, p, status, key=None):
    sense = p.sense() if p.status == pdu.CHECK_CONDITION else None
    if p.status != status or (key is not None and (sense or (None,))[0] != key):
        sys.exit(f"fault_checks: {what}: status {p.status:#x} sense {sense}, expected "
                 f"{status:#x}{'' if key is None else f' key {key}'}")


def main():
    addr, iqn, step = sys.argv[1:4]
    s = session(addr, iqn)
    data = b"\x5A" * 4096
    if step == "write-ok":
        expect("WRITE", s.run(pdu.write10(8, 8), data=data)[0], pdu.GOOD)
        expect("SYNCHRONIZE CACHE", s.run(SYNC10)[0], pdu.GOOD)
    elif step == "sync-fails":
        expect("SYNCHRONIZE CACHE", s.run(SYNC10)[0], pdu.CHECK_CONDITION, MEDIUM_ERROR)
    elif step == "write-fails":
        expect("WRITE", s.run(pdu.write10(16, 8), data=data)[0], pdu.CHECK_CONDITION, MEDIUM_ERROR)
    elif step == "failed":
        expect("WRITE after the failure", s.run(pdu.write10(24, 8), data=data)[0],
               pdu.CHECK_CONDITION, MEDIUM_ERROR)
        expect("SYNCHRONIZE CACHE after the failure", s.run(SYNC10)[0], pdu.CHECK_CONDITION,
               MEDIUM_ERROR)
        p, back = s.run(pdu.read10(8, 8), edtl=4096, read=True)
        expect("READ after the failure", p, pdu.GOOD)
    else:
        sys.exit(__doc__)
    s.logout()


if __name__ == "__main__":
    main()
