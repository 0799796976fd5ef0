"""CHAP for this package's initiator (RFC 7143 section 12.1.3, RFC 1994), sans I/O: the digests
by CHAP_A number (IANA PPP authentication algorithms: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256),
the response, binary values, and the initiator's side of an exchange. Written from the RFCs and
hashlib, independently of the target's Rust code it tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

ALGORITHMS = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}
NAMES = {5: "MD5", 6: "SHA1", 7: "SHA256", 8: "SHA3-256"}


def response(algorithm: int, ident: int, secret: bytes, challenge: bytes) -> bytes:
    """H(identifier || secret || challenge) with the digest CHAP_A=`algorithm` names."""
    return hashlib.new(ALGORITHMS[algorithm], bytes([ident]) + secret + challenge).digest()


def decode_binary(value: str) -> bytes:
    """A `0x` hex or `0b` base64 value (RFC 7143 section 6.1)."""
    prefix, body = value[:2].lower(), value[2:]
    if prefix == "0x":
        return bytes.fromhex(body if len(body) % 2 == 0 else "0" + body)
    if prefix == "0b":
        return base64.b64decode(body, validate=True)
    raise ValueError(f"not a binary value: {value[:16]!r}")


class ChapFailed(RuntimeError):
    """The target's side of CHAP was wrong (mutual CHAP), or it chose what was not offered."""


@dataclass
class Chap:
    """The initiator's CHAP settings: what it offers and, for mutual CHAP, what it expects."""
    user: str
    secret: str
    algorithms: tuple[int, ...] = (5,)
    target_user: str | None = None
    target_secret: str | None = None


class Exchange:
    """One login's CHAP as the initiator runs it: `offer()` (CHAP_A), then `answer(keys)` with
    the target's CHAP_A/CHAP_I/CHAP_C, then `check(keys)` with the target's mutual answer."""

    def __init__(self, chap: Chap):
        self.chap = chap
        self.algorithm = None
        self.ident = os.urandom(1)[0]
        self.challenge = os.urandom(32)

    def offer(self) -> dict[str, str]:
        return {"CHAP_A": ",".join(str(a) for a in self.chap.algorithms)}

    def answer(self, keys: dict[str, str]) -> dict[str, str]:
        chosen = int(keys["CHAP_A"])
        if chosen not in self.chap.algorithms:
            raise ChapFailed(f"target chose CHAP_A={chosen}, offered {self.chap.algorithms}")
        self.algorithm = chosen
        challenge = decode_binary(keys["CHAP_C"])
        r = response(chosen, int(keys["CHAP_I"]), self.chap.secret.encode(), challenge)
        out = {"CHAP_N": self.chap.user, "CHAP_R": "0x" + r.hex()}
        if self.chap.target_secret is not None:
            out["CHAP_I"] = str(self.ident)
            out["CHAP_C"] = "0x" + self.challenge.hex()
        return out

    def check(self, keys: dict[str, str]) -> None:
        if self.chap.target_secret is None:
            return
        want = response(self.algorithm, self.ident, self.chap.target_secret.encode(),
                        self.challenge)
        if keys.get("CHAP_N") != self.chap.target_user:
            raise ChapFailed(f"target answered as {keys.get('CHAP_N')!r}")
        got = decode_binary(keys.get("CHAP_R", "0x"))
        if got != want:
            raise ChapFailed(f"wrong mutual CHAP_R from the target ({len(got)} bytes)")
