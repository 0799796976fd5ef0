"""Protocol checks against a running agent with raw iSCSI sessions (spindletools.iscsi).

  python3 -m spindletools.standalone.protocol_checks HOST:PORT IQN CHECK

CHECK is one of
  vpd           print the LUN's VPD 80h serial and 83h designators, one a line (for comparing)
  large-reads   a session declaring MaxRecvDataSegmentLength=8192 reads 1 MiB at a time,
                many at once, slowly: every read arrives whole on a connection that stays
  tmf           LUN RESET from one session aborts another session's waiting writes with
                TASK ABORTED before FUNCTION COMPLETE; both nexuses get the unit attention
  preempt       PREEMPT AND ABORT ends the preempted nexus's write with TASK ABORTED; its
                late Data-Out never lands
  reinstate     a second login with the same initiator name and ISID (TSIH 0) closes the
                first session, whose RESERVE(6) goes with it
  slowloris     100 connections that send one byte a second do not keep another initiator
                from logging in, and the target closes them within its login timeout
Exits non-zero (with a message) when the target does not behave so.
"""
import struct
import sys
import time

from spindletools.iscsi import pdu
from spindletools.iscsi import session as r

BLOCK = 512
MIB = 1 << 20


def fail(msg):
    sys.exit(f"protocol_checks: {msg}")


def session(addr, iqn, name, **keys):
    host, port = addr.rsplit(":", 1)
    isid = 0x400000000000 | (abs(hash(name)) & 0xFFFFFF)
    s = r.Session(host, int(port), f"iqn.2026-11.dev.spindle:test.{name}", iqn, isid=isid,
                  keys={k: str(v) for k, v in keys.items()})
    s.until_good()
    return s


def vpd(addr, iqn):
    s = session(addr, iqn, "vpd")
    p, serial = s.run(struct.pack(">BBBHB", 0x12, 1, 0x80, 255, 0), edtl=255, read=True)
    if p.status != pdu.GOOD:
        fail("INQUIRY VPD 80h failed")
    print("serial", serial[4:4 + serial[3]].decode())
    p, d = s.run(struct.pack(">BBBHB", 0x12, 1, 0x83, 1024, 0), edtl=1024, read=True)
    if p.status != pdu.GOOD:
        fail("INQUIRY VPD 83h failed")
    end = 4 + struct.unpack(">H", d[2:4])[0]
    at = 4
    lu_naa = None
    while at < end:
        assoc_type, length = d[at + 1], d[at + 3]
        value = d[at + 4:at + 4 + length]
        print(f"designator assoc/type={assoc_type:#04x} {value.hex()}")
        if assoc_type & 0x3F == 0x03 and lu_naa is None:
            lu_naa = value
        at += 4 + length
    if lu_naa is None or len(lu_naa) != 8 or lu_naa[0] >> 4 != 3:
        fail(f"the logical unit's NAA designator is not NAA 3 (locally assigned, 8 bytes): {lu_naa!r}")
    s.logout()


def large_reads(addr, iqn):
    s = session(addr, iqn, "largereads", MaxRecvDataSegmentLength=8192, MaxBurstLength=1048576)
    blocks = MIB // BLOCK
    count = 32
    # A known pattern in the first 32 MiB.
    for i in range(count):
        data = bytes([i + 1]) * MIB
        p, _ = s.run(pdu.write10(i * blocks, blocks), data=data)
        if p.status != pdu.GOOD:
            fail(f"write {i} failed: {p.status:#x}")
    pending = {}
    sent = 0
    done = 0
    slow = True
    while done < count:
        while sent < count and s.window_open():
            itt = s.command(pdu.read10(sent * blocks, blocks), edtl=MIB, read=True)
            pending[itt] = (sent, bytearray(MIB))
            sent += 1
        if slow:
            # Let the target queue many small Data-In PDUs before reading any.
            time.sleep(1.0)
            slow = False
        try:
            p = s.recv()
        except (r.Closed, ConnectionError) as e:
            fail(f"the target dropped the connection after {done} of {count} reads: {e!r}")
        if p.itt not in pending:
            fail(f"unexpected {p}")
        i, buf = pending[p.itt]
        if p.opcode == pdu.DATA_IN:
            off = struct.unpack(">I", p.bhs[40:44])[0]
            if len(p.data) > 8192:
                fail(f"Data-In of {len(p.data)} bytes exceeds MaxRecvDataSegmentLength 8192")
            buf[off:off + len(p.data)] = p.data
            if not p.flags & 0x01:
                continue
        if p.status != pdu.GOOD:
            fail(f"read {i} ended with status {p.status:#x}")
        if buf != bytes([i + 1]) * MIB:
            fail(f"read {i} returned wrong data")
        del pending[p.itt]
        done += 1
    if s.until_good():
        fail("unit attention after the reads")
    s.logout()
    print(f"large-reads: {count} reads of 1 MiB in 8 KiB Data-In PDUs arrived whole")


def collect_responses(s, itts, timeout=10):
    """Reads `s` until every ITT of `itts` has a SCSI Response; R2Ts are ignored."""
    got = {}
    s.sock.settimeout(timeout)
    while len(got) < len(itts):
        p = s.recv()
        if p.opcode == pdu.SCSI_RSP and p.itt in itts:
            got[p.itt] = p
        elif p.opcode not in (pdu.R2T,):
            fail(f"unexpected {p} while waiting for responses")
    return got


def start_waiting_writes(s, n, first_lba):
    """Sends `n` 64 KiB writes whose data it never sends (InitialR2T=Yes, no immediate data):
    they wait in the target for Data-Out. Returns their ITTs and the R2Ts seen so far."""
    itts = []
    for i in range(n):
        itts.append(s.command(pdu.write10(first_lba + i * 128, 128), edtl=65536, write=True))
    return itts


def tmf(addr, iqn):
    keys = dict(InitialR2T="Yes", ImmediateData="No")
    a = session(addr, iqn, "tmf-a", **keys)
    b = session(addr, iqn, "tmf-b", **keys)
    waiting = start_waiting_writes(a, 4, 1000)
    time.sleep(0.3)
    itt = b.tmf(pdu.LUN_RESET, lun=0)
    b.sock.settimeout(10)
    rsp = b.recv()
    if rsp.opcode != pdu.TMF_RSP or rsp.itt != itt or rsp.response != 0:
        fail(f"LUN RESET: expected FUNCTION COMPLETE, got {rsp} response {rsp.response}")
    try:
        got = collect_responses(a, set(waiting), timeout=5)
    except OSError:
        fail("the other session's waiting writes got no answer after the LUN RESET")
    statuses = sorted({p.status for p in got.values()})
    if statuses != [pdu.TASK_ABORTED]:
        fail(f"the other session's writes ended with {statuses}, not TASK ABORTED (TAS=1)")
    # Their late Data-Out is dropped quietly: the connection stays usable.
    a.data_out(waiting[0], 1, 0, b"\0" * 8192, final=True)
    for who, s in (("the other nexus", a), ("the issuer", b)):
        uas = s.until_good()
        if (6, 0x29, 0x03) not in uas:
            fail(f"{who} did not get BUS DEVICE RESET FUNCTION OCCURRED after the LUN RESET: {uas}")
    a.logout()
    b.logout()
    print("tmf: LUN RESET aborted the other session's 4 waiting writes with TASK ABORTED; "
          "both nexuses got 29h/03h")


def prout(s, sa, kind, key, sa_key):
    data = struct.pack(">QQ", key, sa_key) + b"\0" * 8
    p, _ = s.run(struct.pack(">BBBxxxxxBx", 0x5F, sa, kind, 24), data=data)
    return p


def preempt(addr, iqn):
    keys = dict(InitialR2T="Yes", ImmediateData="No")
    a = session(addr, iqn, "pr-a", **keys)
    b = session(addr, iqn, "pr-b", **keys)
    for s, k in ((a, 0xA), (b, 0xB)):
        p = prout(s, 0, 0, 0, k)
        if p.status != pdu.GOOD:
            fail(f"REGISTER failed: {p.status:#x}")
    p = prout(a, 1, 1, 0xA, 0)
    if p.status != pdu.GOOD:
        fail("RESERVE (WRITE EXCLUSIVE) failed")
    lba = 200000  # past the 32 MiB the large reads wrote
    data = b"\xAB" * 65536
    itt = a.command(pdu.write10(lba, 128), edtl=len(data), write=True)
    a.sock.settimeout(10)
    r2t = a.recv()
    if r2t.opcode != pdu.R2T:
        fail(f"expected an R2T, got {r2t}")
    # Half the data now, the rest never before the preempt.
    half = len(data) // 2
    a.data_out(itt, r2t.ttt, 0, data[:half], data_sn=0, final=False)
    time.sleep(0.2)
    p = prout(b, 5, 1, 0xB, 0xA)
    if p.status != pdu.GOOD:
        fail(f"PREEMPT AND ABORT failed: {p.status:#x}")
    try:
        got = collect_responses(a, {itt}, timeout=5)
    except OSError:
        fail("the preempted nexus's write got no answer after PREEMPT AND ABORT")
    if got[itt].status != pdu.TASK_ABORTED:
        fail(f"the preempted write ended with {got[itt].status:#x}, not TASK ABORTED")
    # The rest of its data arrives late; it must never land.
    a.data_out(itt, r2t.ttt, half, data[half:], data_sn=1, final=True)
    time.sleep(0.2)
    p, back = b.run(pdu.read10(lba, 128), edtl=65536, read=True)
    if p.status != pdu.GOOD:
        fail(f"reading the block back failed: status {p.status:#x} sense {p.sense()}")
    if back != b"\0" * 65536:
        fail("the preempted nexus's write landed after PREEMPT AND ABORT")
    uas = a.until_good()
    if (6, 0x2A, 0x05) not in uas:
        fail(f"the preempted nexus was not told REGISTRATIONS PREEMPTED: {uas}")
    p, _ = a.run(pdu.write10(lba, 1), data=b"\1" * BLOCK)
    if p.status != 0x18:
        fail(f"the preempted nexus may still write: status {p.status:#x}")
    prout(b, 3, 0, 0xB, 0)  # CLEAR
    a.logout()
    b.logout()
    print("preempt: PREEMPT AND ABORT ended the preempted write with TASK ABORTED; its late "
          "data never landed")


def reinstate(addr, iqn):
    host, port = addr.rsplit(":", 1)
    name = "iqn.2026-11.dev.spindle:test.reinstate"
    other = session(addr, iqn, "reinstate-other")
    first = r.Session(host, int(port), name, iqn, isid=0x400000AB0001)
    first.until_good()
    p, _ = first.run(bytes([0x16, 0, 0, 0, 0, 0]))  # RESERVE(6)
    if p.status != pdu.GOOD:
        fail(f"RESERVE(6) failed: {p.status:#x}")
    p, _ = other.run(bytes([0x16, 0, 0, 0, 0, 0]))
    if p.status != 0x18:
        fail(f"another initiator could reserve a reserved LUN: {p.status:#x}")
    # The initiator reconnects after losing the connection: same name, same ISID, TSIH 0.
    second = r.Session(host, int(port), name, iqn, isid=0x400000AB0001)
    first.sock.settimeout(5)
    try:
        while True:
            first.recv()
    except r.Closed:
        pass
    except OSError as e:
        fail(f"the old session was not closed by the reinstatement: {e!r}")
    second.until_good()
    p, _ = other.run(bytes([0x16, 0, 0, 0, 0, 0]))
    if p.status != pdu.GOOD:
        fail(f"the old session's RESERVE(6) outlived it: {p.status:#x}")
    other.run(bytes([0x17, 0, 0, 0, 0, 0]))  # RELEASE(6)
    second.logout()
    other.logout()
    print("reinstate: the second login closed the first session and its reservation")


def slowloris(addr, iqn):
    import socket
    host, port = addr.rsplit(":", 1)
    slow = [socket.create_connection((host, int(port)), timeout=5) for _ in range(100)]
    start = time.monotonic()
    logins = 0
    closed = set()
    while time.monotonic() - start < 20:
        for i, c in enumerate(slow):
            if i in closed:
                continue
            try:
                c.send(b"\x43")  # a Login Request's first byte, then the next, ...
            except OSError:
                closed.add(i)
        if time.monotonic() - start < 8:
            t0 = time.monotonic()
            s = session(addr, iqn, f"slowloris-{logins}")
            s.logout()
            if time.monotonic() - t0 > 3:
                fail("a login took more than 3 s beside the slow connections")
            logins += 1
        time.sleep(1)
        if len(closed) == len(slow):
            break
    elapsed = time.monotonic() - start
    open_left = 0
    for i, c in enumerate(slow):
        if i in closed:
            continue
        c.settimeout(0.2)
        try:
            if c.recv(1) != b"":
                open_left += 1
        except socket.timeout:
            open_left += 1
        except OSError:
            pass
    if open_left:
        fail(f"{open_left} slow connections still open after {elapsed:.0f} s")
    print(f"slowloris: {logins} logins went through beside 100 slow connections; the target "
          f"closed all of these within {elapsed:.0f} s")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    addr, iqn, check = sys.argv[1:4]
    checks = {"vpd": vpd, "large-reads": large_reads, "tmf": tmf, "preempt": preempt,
              "reinstate": reinstate, "slowloris": slowloris}
    checks[check](addr, iqn)


if __name__ == "__main__":
    main()
