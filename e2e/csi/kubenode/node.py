"""The guest node: the files its boot needs (configuration of containerd, kubelet and CNI, its
credentials) and the conversation with e2e/csi/guest/node-main over the control channel."""

from __future__ import annotations

import base64
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PAUSE_IMAGE = "docker.io/library/spindle-pause:1"
POD_SUBNET = "10.88.0.0/24"


@dataclass
class NodeSpec:
    name: str
    addr: str          # the guest's address on the bridge
    prefix: int
    api_server: str    # https://HOST:PORT as the guest reaches it
    initiator: str     # the node's iSCSI initiator name


def kubeconfig(spec: NodeSpec, ca: bytes, cert: bytes, key: bytes) -> str:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    # The apiserver's certificate names localhost (not the bridge address): the guest checks
    # the name it has.
    return f"""apiVersion: v1
kind: Config
clusters:
- name: host
  cluster:
    server: {spec.api_server}
    tls-server-name: localhost
    certificate-authority-data: {b64(ca)}
users:
- name: system:node:{spec.name}
  user:
    client-certificate-data: {b64(cert)}
    client-key-data: {b64(key)}
contexts:
- name: host
  context: {{cluster: host, user: "system:node:{spec.name}"}}
current-context: host
"""


CONTAINERD = f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # The guest's root is the initramfs, where pivot_root(2) is refused: runc moves the
        # container's root and chroots instead. (CRI's `no_pivot` is for the v1 runtime only.)
        NoPivotRoot = true
"""

CNI = f"""{{
  "cniVersion": "1.0.0",
  "name": "spindle-guest",
  "plugins": [{{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}"}}]]}}
  }}]
}}
"""


def kubelet_config(spec: NodeSpec) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {spec.addr}
readOnlyPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: /spindle/ca.crt}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: /etc/resolv.conf
# Images are imported at boot, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 50Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
shutdownGracePeriod: 0s
# A slow (emulated) node: report often, so the control plane sees changes soon.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
"""


def files(spec: NodeSpec, ca: bytes, cert: bytes, key: bytes) -> dict[str, tuple[bytes, int]]:
    env = {"NODE_NAME": spec.name, "GUEST_ADDR": f"{spec.addr}/{spec.prefix}",
           "INITIATOR": spec.initiator, "MACHINE_ID": uuid.uuid4().hex}
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
    return {
        "spindle/env": (text.encode(), 0o644),
        "spindle/main": ((ROOT / "e2e/csi/guest/node-main").read_bytes(), 0o755),
        "spindle/iscsid.conf": ((ROOT / "e2e/kernel/guest/iscsid.conf").read_bytes(), 0o644),
        "spindle/containerd.toml": (CONTAINERD.encode(), 0o644),
        "spindle/cni.conflist": (CNI.encode(), 0o644),
        "spindle/kubelet.yaml": (kubelet_config(spec).encode(), 0o644),
        "spindle/kubelet.kubeconfig": (kubeconfig(spec, ca, cert, key).encode(), 0o600),
        "spindle/ca.crt": (ca, 0o644),
    }


class NodeError(RuntimeError):
    pass


class NodeChannel:
    """Talks to node-main: waits for its UP and NODE marks, runs commands in the guest."""

    def __init__(self, channel, guest):
        self.channel, self.guest = channel, guest
        self.up_ms = self.node_ms = 0

    def accept(self, timeout: float = 60) -> None:
        try:
            self.channel.accept_while(self.guest.running, timeout)
        except TimeoutError:
            raise NodeError("QEMU did not connect the control channel") from None
        except RuntimeError as err:  # harness.channel.ChannelClosed: QEMU exited first
            raise NodeError(str(err)) from None

    def expect(self, verb: str, timeout: float) -> str:
        line = self.channel.readline(timeout)
        got, _, rest = line.partition(" ")
        if got == "FAIL":
            raise NodeError(f"the guest failed: {rest}")
        if got != verb:
            raise NodeError(f"the guest said {line!r}, expected {verb}")
        return rest

    def boot(self, timeout: float = 300) -> None:
        self.up_ms = int(self.expect("UP", timeout))
        self.node_ms = int(self.expect("NODE", timeout))

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        self.channel.send(f"RUN {command}")
        out = []
        while True:
            line = self.channel.readline(timeout)
            verb, _, rest = line.partition(" ")
            if verb == "OUT":
                out.append(rest)
            elif verb == "RC":
                return int(rest), "\n".join(out)
            elif verb == "FAIL":
                raise NodeError(f"the guest failed: {rest}")

    def must(self, command: str, timeout: float = 120) -> str:
        rc, out = self.run(command, timeout)
        if rc != 0:
            raise NodeError(f"in the guest, `{command}` exited {rc}: {out[-1500:]}")
        return out

    def bye(self) -> None:
        try:
            self.channel.send("BYE")
        except OSError:
            pass
