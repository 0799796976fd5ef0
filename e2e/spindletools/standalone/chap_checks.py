"""CHAP with every algorithm through this package's initiator (spindletools.iscsi: MD5, SHA-1,
SHA-256, SHA3-256), against the targets e2e/standalone/auth serves under IQN prefix PREFIX:

  PREFIX.chap    one-way CHAP, user alice, every algorithm allowed (the default)
  PREFIX.mutual  mutual CHAP, user bob, the target answers as spindle
  PREFIX.strong  one-way CHAP, user alice, algorithms [SHA3-256, SHA256] (no MD5, no SHA-1)

  python3 -m spindletools.standalone.chap_checks HOST:PORT PREFIX

Each algorithm logs in alone (the target must answer CHAP_A with it) and a command runs; mutual
CHAP is checked by the initiator with the same algorithm; among several offers the initiator's
order wins; a Target that does not allow what is offered refuses with 0201h (authentication
failure), so does a wrong secret. Exits non-zero with a message at the first surprise.
"""
import sys

from spindletools.iscsi import session as r
from spindletools.iscsi.chap import NAMES, Chap, ChapFailed

ALICE = ("alice", "alice-secret-12")
BOB = ("bob", "bob-secret-1234")
TARGET_SIDE = ("spindle", "target-secret-9")
AUTHENTICATION_FAILURE = 0x0201


def fail(msg):
    sys.exit(f"chap_checks: {msg}")


def login(addr, iqn, chap):
    host, port = addr.rsplit(":", 1)
    return r.Session(host, int(port), "iqn.2026-11.dev.spindle:test.chap-checks", iqn,
                     timeout=10, chap=chap)


def expect_login(addr, iqn, chap, chosen, what):
    try:
        s = login(addr, iqn, chap)
    except (r.LoginRefused, ChapFailed) as e:
        fail(f"{what}: {e}")
    if s.chap_algorithm != chosen:
        fail(f"{what}: target chose CHAP_A={s.chap_algorithm}, expected {chosen}")
    s.until_good()
    s.logout()
    print(f"{what}: logged in with {NAMES[chosen]}")


def expect_refused(addr, iqn, chap, what, error=r.LoginRefused):
    try:
        s = login(addr, iqn, chap)
    except error as e:
        if isinstance(e, r.LoginRefused) and e.status != AUTHENTICATION_FAILURE:
            fail(f"{what}: refused with {e.status:04x}, expected {AUTHENTICATION_FAILURE:04x}")
        print(f"{what}: refused ({e})")
        return
    s.logout()
    fail(f"{what}: logged in (CHAP_A={s.chap_algorithm}) but should be refused")


def main():
    addr, prefix = sys.argv[1], sys.argv[2]
    one_way, mutual, strong = f"{prefix}.chap", f"{prefix}.mutual", f"{prefix}.strong"
    for a in NAMES:
        expect_login(addr, one_way, Chap(*ALICE, algorithms=(a,)), a, f"one-way CHAP_A={a}")
        expect_login(addr, mutual, Chap(*BOB, (a,), *TARGET_SIDE), a, f"mutual CHAP_A={a}")
        expect_refused(addr, mutual, Chap(*BOB, (a,), TARGET_SIDE[0], "not-the-secret-1"),
                       f"mutual CHAP_A={a}, initiator expects another target secret", ChapFailed)
        expect_refused(addr, one_way, Chap(ALICE[0], "wrong-secret-99", (a,)),
                       f"wrong secret, CHAP_A={a}")
    for offer in ((5, 8), (8, 7, 6, 5), (6, 7)):
        expect_login(addr, one_way, Chap(*ALICE, algorithms=offer), offer[0],
                     f"offer {offer}: the initiator's first")
    for offer in ((5,), (6,), (5, 6)):
        expect_refused(addr, strong, Chap(*ALICE, algorithms=offer),
                       f"[SHA3-256, SHA256] target, offer {offer}")
    for offer, chosen in (((7,), 7), ((8,), 8), ((5, 6, 7, 8), 7)):
        expect_login(addr, strong, Chap(*ALICE, algorithms=offer), chosen,
                     f"[SHA3-256, SHA256] target, offer {offer}")


if __name__ == "__main__":
    main()
