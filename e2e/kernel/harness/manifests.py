"""What the agent serves to the guest: five Devices, each the only LUN of its own Target, all
open to the guest's initiator name only; three of them behind CHAP (one-way, mutual, and
one-way allowing only SHA3-256 and SHA256)."""

from __future__ import annotations

from dataclasses import dataclass

from spindletools import manifests as spindle

INITIATOR = "iqn.2026-11.dev.spindle:kernel-guest"
CHAP_SECRET = "chap-secret"
CHAP_USER, CHAP_PASSWORD = "guest", "spindle-secret-1"
MUTUAL_USER, MUTUAL_PASSWORD = "spindle", "spindle-mutual-2"
MIB = 1 << 20


@dataclass(frozen=True)
class Export:
    name: str
    size: int
    chap: str = ""  # "", "one-way" or "mutual"
    algorithms: tuple[str, ...] = ()  # spec.chap.algorithms; empty: the default (all)

    @property
    def iqn(self) -> str:
        return spindle.default_iqn(self.name)

    @property
    def file(self) -> str:
        return f"{self.name}.img"


EXPORTS = (
    Export("kfs", 1024 * MIB),           # the file system, restarts and the drain
    Export("kchap1", 64 * MIB, "one-way"),
    Export("kchap2", 64 * MIB, "mutual"),
    Export("kchap3", 64 * MIB, "one-way", ("SHA3-256", "SHA256")),
    Export("ksmall", 256 * MIB),         # MaxRecvDataSegmentLength=8192 reads
)


def by_name(name: str) -> Export:
    for e in EXPORTS:
        if e.name == name:
            return e
    raise KeyError(name)


def render() -> str:
    docs = []
    for e in EXPORTS:
        chap = {}
        if e.chap:
            chap = {"chap": {"secretRef": CHAP_SECRET, "mutual": e.chap == "mutual"}}
            if e.algorithms:
                chap["chap"]["algorithms"] = list(e.algorithms)
        docs.append(spindle.device(e.name, {"file": {"path": e.file, "sizeBytes": e.size}},
                                   blockSize=512, writeCache="writeback",
                                   thinProvisioning=True))
        docs.append(spindle.target(e.name, [(0, e.name)], iqn=e.iqn,
                                   acl={"initiators": [INITIATOR]}, **chap))
    docs.append(spindle.document("Secret", CHAP_SECRET, {"stringData": {
        "username": CHAP_USER, "password": CHAP_PASSWORD,
        "mutualUsername": MUTUAL_USER, "mutualPassword": MUTUAL_PASSWORD,
    }}, api_version="v1"))
    return "---\n".join(docs)


def guest_env() -> dict[str, str]:
    """The part of the guest's /spindle/env that names the targets and secrets."""
    return {
        "INITIATOR": INITIATOR,
        "DEV_FS": "kfs", "IQN_FS": by_name("kfs").iqn, "FS_SIZE": str(by_name("kfs").size),
        "IQN_CHAP1": by_name("kchap1").iqn, "IQN_CHAP2": by_name("kchap2").iqn,
        "IQN_CHAP3": by_name("kchap3").iqn,
        "IQN_SMALL": by_name("ksmall").iqn,
        "CHAP_USER": CHAP_USER, "CHAP_SECRET": CHAP_PASSWORD,
        "CHAP_MUTUAL_USER": MUTUAL_USER, "CHAP_MUTUAL_SECRET": MUTUAL_PASSWORD,
    }
