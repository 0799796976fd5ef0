"""The test network: a private network namespace holding the bridge `spk0` (10.251.0.1/24) and
the guest's tap device, so nothing changes on the host and the agent's port collides with
nothing. The namespace ends with the last process in it."""

from __future__ import annotations

import os
import subprocess
import sys

MARK = "SPINDLE_KERNEL_NETNS"
BRIDGE = "spk0"
TAP = "spk0t"
HOST_ADDR = "10.251.0.1"
GUEST_ADDR = "10.251.0.2"
PREFIX = 24


def inside() -> bool:
    return os.environ.get(MARK) == "inside"


def reexec_inside(carry: dict[str, str]) -> None:
    """Runs this program again in a new network namespace, with `carry` added to its
    environment; does not return."""
    env = dict(os.environ, **carry, **{MARK: "inside"})
    try:
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], env)
    except OSError as err:
        sys.exit(f"cannot start a network namespace (unshare --net): {err}; run as root")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def setup() -> None:
    """Builds the bridge (with the host's address) and the guest's tap in this namespace."""
    _ip("link", "set", "lo", "up")
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("tuntap", "add", "dev", TAP, "mode", "tap")
    _ip("link", "set", TAP, "master", BRIDGE)
    _ip("addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", BRIDGE)
    for dev in (BRIDGE, TAP):
        _ip("link", "set", dev, "up")
    # No IPv6 chatter (router solicitations, DAD) in the test network: only what the test sends.
    if os.path.exists("/proc/sys/net/ipv6/conf/all/disable_ipv6"):
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
            f.write("1")


def connections(port: int) -> list[tuple[str, str]]:
    """Established TCP connections to `port` in this namespace, as (local, peer) "ip:port"."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         check=True, capture_output=True, text=True).stdout
    pairs = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            pairs.append((fields[2], fields[3]))
    return pairs

