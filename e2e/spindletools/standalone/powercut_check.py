"""Checks a disk image after a simulated power cut against what powerwriter was told.

  python3 -m spindletools.standalone.powercut_check LOG IMAGE BLOCKS writeback|writethrough

A command is acknowledged-durable when
  - it is a FUA write answered GOOD, or
  - with writethrough, any write or unmap answered GOOD, or
  - it was answered GOOD before a SYNCHRONIZE CACHE was submitted that was answered GOOD.
Each block's commands are ordered (powerwriter never overlaps them), so after the cut a block
must hold the content of its last acknowledged-durable command or of a later command
(submitted, answered or not): never an older one, never anything else. The initial content
(zeros) counts as durable.

Also requires that the cut lost something (a write answered GOOD but not durable is not on
the disk) in writeback mode: otherwise the test could not tell a target that flushes from
one that does not.
"""
import struct
import sys

BLOCK = 4096
MAGIC = b"SPNDLPWR"


def content(block, version):
    """What a write of `version` to `block` put there (None: zeros, an unmap or nothing)."""
    fill = (block * 31 + version) & 0xFF
    return MAGIC + struct.pack(">QQ", block, version) + bytes([fill]) * (BLOCK - 24)


def main():
    log, image, nblocks, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ops = {}  # seq -> dict
    order = []  # (kind, seq) events in order
    for line in open(log):
        p = line.split()
        if not p:
            continue
        if p[0] == "S":
            seq = int(p[1])
            ops[seq] = {"kind": p[2], "block": int(p[3]), "version": int(p[4]), "status": None}
            order.append(("S", seq))
        elif p[0] == "A":
            seq = int(p[1])
            ops[seq]["status"] = p[2]
            order.append(("A", seq))
    # Durability: walk the events; a GOOD sync makes everything GOOD before its submission
    # durable.
    durable = set()
    good_before = {}  # sync seq -> set of seqs answered GOOD before it was submitted
    good_so_far = set()
    for ev, seq in order:
        op = ops[seq]
        if ev == "S" and op["kind"] == "C":
            good_before[seq] = set(good_so_far)
        elif ev == "A" and op["status"] == "G":
            if op["kind"] == "C":
                durable |= good_before.pop(seq, set())
            else:
                good_so_far.add(seq)
                if op["kind"] == "F" or mode == "writethrough":
                    durable.add(seq)
    per_block = {}
    for seq in sorted(ops):
        op = ops[seq]
        if op["kind"] != "C":
            per_block.setdefault(op["block"], []).append(seq)
    bad = []
    lost_acknowledged = 0
    durable_checked = 0
    with open(image, "rb") as f:
        for b in range(nblocks):
            f.seek(b * BLOCK)
            actual = f.read(BLOCK).ljust(BLOCK, b"\0")
            history = per_block.get(b, [])
            last_durable = -1
            for i, seq in enumerate(history):
                if seq in durable:
                    last_durable = i
            allowed = []
            if last_durable < 0:
                allowed.append(("initial", bytes(BLOCK)))
            for seq in history[max(last_durable, 0):]:
                op = ops[seq]
                c = bytes(BLOCK) if op["kind"] == "U" else content(b, op["version"])
                allowed.append((seq, c))
            if last_durable >= 0:
                durable_checked += 1
            if not any(actual == c for _, c in allowed):
                head = actual[:24]
                bad.append(f"block {b}: holds {head!r}..., allowed from command "
                           f"{history[last_durable] if last_durable >= 0 else 'initial'} on")
            # Did the cut lose an acknowledged (GOOD) command that was not durable?
            acked = [s for s in history if ops[s]["status"] == "G"]
            if acked:
                last = ops[acked[-1]]
                want = bytes(BLOCK) if last["kind"] == "U" else content(b, last["version"])
                later = [s for s in history if s > acked[-1]]
                if actual != want and not any(
                        actual == (bytes(BLOCK) if ops[s]["kind"] == "U" else content(b, ops[s]["version"]))
                        for s in later):
                    lost_acknowledged += 1
    answered = sum(1 for o in ops.values() if o["status"] == "G")
    kinds = {k: sum(1 for o in ops.values() if o["kind"] == k) for k in "WFUC"}
    print(f"powercut_check: mode={mode} commands={len(ops)} good={answered} "
          f"writes={kinds['W']} fua={kinds['F']} unmaps={kinds['U']} syncs={kinds['C']} "
          f"durable={len(durable)} blocks_with_durable_data={durable_checked} "
          f"lost_acknowledged_not_durable={lost_acknowledged} violations={len(bad)}")
    for line in bad[:10]:
        print("  " + line)
    if bad:
        sys.exit("powercut_check: acknowledged-durable data missing after the power cut")
    if len(durable) < 100:
        sys.exit("powercut_check: too few durable commands to mean anything")
    if mode == "writeback" and lost_acknowledged == 0:
        sys.exit("powercut_check: the cut lost no acknowledged write: it did not test anything")
    if mode == "writethrough" and lost_acknowledged:
        sys.exit("powercut_check: with writethrough an acknowledged write was lost")


if __name__ == "__main__":
    main()
