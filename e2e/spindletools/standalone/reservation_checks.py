"""Persistent reservations as two cluster hosts use them (fencing), with raw iSCSI sessions.

  python3 -m spindletools.standalone.reservation_checks HOST:PORT IQN STEP [ARGS]

Two hosts, A and B, each one initiator port (fixed initiator name and ISID, the same in every
run, so a restarted agent meets the same I_T nexuses). STEP is one of
  register APTPL PTPL_A
                   A and B REGISTER (keys 0xA, 0xB) with APTPL=APTPL (0 or 1); A reserves
                   WRITE EXCLUSIVE - REGISTRANTS ONLY; REPORT CAPABILITIES says PTPL_C=1 and
                   PTPL_A=PTPL_A (the Device may persist whatever APTPL says)
  preempt          B PREEMPTs A's key (taking the reservation, same type)
  aptpl-off        B REGISTER AND IGNORE EXISTING KEY with APTPL=0: PTPL_A=0 after it
  expect KEYS HOLDER
                   READ KEYS lists KEYS (comma-separated hosts, or "none"), READ RESERVATION
                   names HOLDER's key with type WRITE EXCLUSIVE - REGISTRANTS ONLY ("none": no
                   reservation), READ FULL STATUS names each registered host's initiator port
                   (with its ISID); each host's WRITE is GOOD when registered (or when there is
                   no reservation), RESERVATION CONFLICT otherwise
  wce              prints the caching mode page's WCE bit (0 or 1)
Prints the generation (expect) and exits non-zero (with a message) when the target does not
behave so.
"""
import struct
import sys

from spindletools.iscsi import pdu
from spindletools.iscsi import session as r

CONFLICT = 0x18
WE_RO = 5
HOSTS = {
    "a": ("iqn.2026-11.dev.spindle:test.pr-host-a", 0x400000000A01, 0xA),
    "b": ("iqn.2026-11.dev.spindle:test.pr-host-b", 0x400000000B01, 0xB),
}
LBA = 4096


def fail(msg):
    sys.exit(f"reservation_checks: {msg}")


def session(addr, iqn, host):
    h, port = addr.rsplit(":", 1)
    name, isid, _ = HOSTS[host]
    s = r.Session(h, int(port), name, iqn, isid=isid)
    s.until_good()
    return s


def prout(s, sa, kind, key, sa_key, aptpl=0):
    data = struct.pack(">QQ4xB3x", key, sa_key, aptpl)
    p, _ = s.run(struct.pack(">BBBxxxxxBx", 0x5F, sa, kind, 24), data=data)
    return p


def prin(s, sa, alloc=4096):
    p, d = s.run(struct.pack(">BBxxxxxHx", 0x5E, sa, alloc), edtl=alloc, read=True)
    if p.status != pdu.GOOD:
        fail(f"PERSISTENT RESERVE IN {sa} failed: status {p.status:#x} sense {p.sense()}")
    return d


def ptpl(s):
    d = prin(s, 2, 8)
    return d[2] & 1, d[3] & 1


def good(p, what):
    if p.status != pdu.GOOD:
        fail(f"{what} failed: status {p.status:#x} sense {p.sense()}")


def register(addr, iqn, aptpl, ptpl_a):
    a, b = session(addr, iqn, "a"), session(addr, iqn, "b")
    if ptpl(a)[0] != 1:
        fail("REPORT CAPABILITIES: PTPL_C is 0 (reservations cannot persist through power loss)")
    for s, host in ((a, "a"), (b, "b")):
        good(prout(s, 0, 0, 0, HOSTS[host][2], aptpl), f"REGISTER of {host} with APTPL={aptpl}")
    good(prout(a, 1, WE_RO, 0xA, 0), "RESERVE (WRITE EXCLUSIVE - REGISTRANTS ONLY) by a")
    got = ptpl(b)
    if got != (1, ptpl_a):
        fail(f"REPORT CAPABILITIES after REGISTER with APTPL={aptpl}: (PTPL_C, PTPL_A) = {got}, "
             f"expected (1, {ptpl_a})")
    print(f"register: a and b registered with APTPL={aptpl}, a reserved; PTPL_A={got[1]}")


def preempt(addr, iqn):
    b = session(addr, iqn, "b")
    good(prout(b, 4, WE_RO, 0xB, 0xA), "PREEMPT of a's key by b")
    print("preempt: b preempted a")


def aptpl_off(addr, iqn):
    b = session(addr, iqn, "b")
    good(prout(b, 6, 0, 0, 0xB, 0), "REGISTER AND IGNORE EXISTING KEY with APTPL=0")
    if ptpl(b) != (1, 0):
        fail(f"PTPL_A is still set after APTPL=0: {ptpl(b)}")
    print("aptpl-off: PTPL_A=0")


def expect(addr, iqn, keys_arg, holder):
    want = [] if keys_arg == "none" else keys_arg.split(",")
    sessions = {h: session(addr, iqn, h) for h in HOSTS}
    s = sessions["b"]
    d = prin(s, 0)
    generation, length = struct.unpack(">II", d[:8])
    keys = sorted(struct.unpack(">Q", d[8 + 8 * i:16 + 8 * i])[0] for i in range(length // 8))
    if keys != sorted(HOSTS[h][2] for h in want):
        fail(f"READ KEYS: {[hex(k) for k in keys]}, expected those of {want}")
    d = prin(s, 1)
    if holder == "none":
        if struct.unpack(">I", d[4:8])[0] != 0:
            fail(f"READ RESERVATION shows a reservation: {d[:24].hex()}")
    else:
        if struct.unpack(">I", d[4:8])[0] != 16:
            fail("READ RESERVATION shows no reservation")
        key, kind = struct.unpack(">Q", d[8:16])[0], d[21] & 0x0F
        if (key, kind) != (HOSTS[holder][2], WE_RO):
            fail(f"READ RESERVATION: key {key:#x} type {kind}, expected {holder}'s, type {WE_RO}")
    full = prin(s, 3)
    for h in want:
        port = f"{HOSTS[h][0]},i,0x{HOSTS[h][1]:012x}".encode()
        if port not in full:
            fail(f"READ FULL STATUS does not name {h}'s initiator port {port.decode()}")
    for h, sess in sessions.items():
        p, _ = sess.run(pdu.write10(LBA, 1), data=bytes([0x40 + len(h)]) * 512)
        allowed = holder == "none" or h in want
        if allowed and p.status != pdu.GOOD:
            fail(f"{h} may write but got status {p.status:#x} sense {p.sense()}")
        if not allowed and p.status != CONFLICT:
            fail(f"{h} is fenced but its WRITE got status {p.status:#x}, not RESERVATION CONFLICT")
    for sess in sessions.values():
        sess.logout()
    print(f"expect: keys of {want or 'nobody'}, held by {holder}, generation {generation}; "
          "writes as the reservation allows")


def wce(addr, iqn):
    s = session(addr, iqn, "a")
    p, d = s.run(bytes([0x1A, 0x08, 0x08, 0, 64, 0]), edtl=64, read=True)
    good(p, "MODE SENSE(6) caching page")
    at = 4 + d[3]
    print((d[at + 2] >> 2) & 1)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    addr, iqn, step, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    steps = {
        "register": lambda: register(addr, iqn, int(args[0]), int(args[1])),
        "preempt": lambda: preempt(addr, iqn),
        "aptpl-off": lambda: aptpl_off(addr, iqn),
        "expect": lambda: expect(addr, iqn, args[0], args[1]),
        "wce": lambda: wce(addr, iqn),
    }
    if step not in steps:
        sys.exit(__doc__)
    steps[step]()


if __name__ == "__main__":
    main()
