"""The CSI side of the run, on the host: Spindle (operator and one agent whose portal is on the
bridge), `spindle-csi controller` with csi-provisioner, csi-attacher and csi-resizer as processes
against the apiserver, the CSIDriver and a StorageClass (plain manifests: the Helm chart's CSI
templates are not used here); and the node plugin started in the guest as a process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .cluster import CLUSTER, ROOT, Cluster
from .kube import Kube

DRIVER = "csi.spindle.dev"
NAMESPACE = "spindle-system"
STORAGE_NODE = "spindle-storage"
STORAGE_CLASS = "spindle"
PLUGIN_DIR = f"/var/lib/kubelet/plugins/{DRIVER}"

MANIFESTS = f"""apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {{name: {DRIVER}}}
spec:
  attachRequired: true
  podInfoOnMount: false
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {STORAGE_CLASS}}}
provisioner: {DRIVER}
allowVolumeExpansion: true
reclaimPolicy: Delete
volumeBindingMode: Immediate
parameters:
  spindle.dev/node: {STORAGE_NODE}
  csi.storage.k8s.io/node-stage-secret-name: ${{pv.name}}-chap
  csi.storage.k8s.io/node-stage-secret-namespace: {NAMESPACE}
"""

# The node plugin, a process of the guest (beside kubelet, in its mount namespace). kubelet's
# plugin registration goes through csi/registrar (grpc-go): kubelet v1.34 sends the socket's
# path as the HTTP/2 :authority of GetInfo, which the plugin's own registration server (h2)
# refuses with RST_STREAM PROTOCOL_ERROR (measured here; docs/csi.md).
PLUGIN_START = (
    f"mkdir -p {PLUGIN_DIR} /var/lib/kubelet/plugins_registry && "
    f"RUST_LOG=info,spindle_csi=debug setsid spindle-csi node "
    f"--endpoint unix://{PLUGIN_DIR}/csi.sock "
    f"--state-dir {PLUGIN_DIR}/volumes --health-address 127.0.0.1:9809 "
    f"--iscsiadm-timeout 60 --device-timeout 60 "
    f">/run/csi-node.log 2>&1 </dev/null & echo $! >/run/csi-node.pid; "
    f"for i in $(seq 1 120); do [ -S {PLUGIN_DIR}/csi.sock ] && break; sleep 0.5; done; "
    f"setsid spindle-registrar /var/lib/kubelet/plugins_registry {PLUGIN_DIR}/csi.sock "
    f">/run/registrar.log 2>&1 </dev/null &")

# Alive: the process exists and is not a zombie; otherwise its log.
PLUGIN_ALIVE = ("p=$(cat /run/csi-node.pid); if grep -q '^State:.*[ZX]' /proc/$p/status 2>/dev/null "
                "|| [ ! -d /proc/$p ]; then echo 'the node plugin exited:'; tail -n 20 /run/csi-node.log; fi")
# Serving: its registration socket and /healthz.
PLUGIN_WAIT = (f"for i in $(seq 1 120); do [ -S /var/lib/kubelet/plugins_registry/{DRIVER}-reg.sock ] && "
               "wget -q -O /dev/null http://127.0.0.1:9809/healthz && exit 0; sleep 0.5; done; "
               "ls -la /var/lib/kubelet/plugins_registry; tail -n 30 /run/csi-node.log; exit 1")
PLUGIN_DIAG = ("ls -la /var/lib/kubelet/plugins_registry " + PLUGIN_DIR + "; tail -n 30 /run/csi-node.log; "
               "cat /run/registrar.log; "
               "grep -i -E 'plugin|csi' /run/kubelet.log | tail -n 25")

# The node plugin as a privileged hostPID Pod instead (run-pod --plugin pod): the image
# (plugin_image) holds spindle-csi, the registrar and busybox's nsenter. The host's initiator
# name and node records are read through /proc/1/root, the host's mount table through
# /proc/1/mountinfo; every command runs in PID 1's mount namespace.
PLUGIN_IMAGE = "docker.io/library/spindle-csi:e2e"
PLUGIN_POD = "spindle-csi-node"


def plugin_pod(node: str) -> str:
    kubelet_mount = "{name: kubelet, mountPath: /var/lib/kubelet, mountPropagation: Bidirectional}"
    args = [
        "node", f"--node-name={node}", f"--endpoint=unix://{PLUGIN_DIR}/csi.sock",
        "--host-command-prefix=nsenter --target 1 --mount --", "--mountinfo=/proc/1/mountinfo",
        "--initiator-name-file=/proc/1/root/etc/iscsi/initiatorname.iscsi",
        "--iscsi-node-dir=/proc/1/root/etc/iscsi/nodes",
        "--iscsi-node-dir=/proc/1/root/var/lib/iscsi/nodes",
        f"--state-dir={PLUGIN_DIR}/volumes", "--health-address=127.0.0.1:9809",
        "--iscsiadm-timeout=60", "--device-timeout=60"]
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {PLUGIN_POD}, namespace: {NAMESPACE}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  hostNetwork: true
  hostPID: true
  dnsPolicy: Default
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  containers:
  - name: plugin
    image: {PLUGIN_IMAGE}
    imagePullPolicy: Never
    command: ["/usr/local/bin/spindle-csi"]
    args: {json.dumps(args)}
    env: [{{name: RUST_LOG, value: "info,spindle_csi=debug"}}]
    securityContext: {{privileged: true}}
    volumeMounts: [{kubelet_mount}, {{name: dev, mountPath: /dev}}, {{name: sys, mountPath: /sys}}]
  - name: registrar
    image: {PLUGIN_IMAGE}
    imagePullPolicy: Never
    command: ["/usr/local/bin/spindle-registrar", "/var/lib/kubelet/plugins_registry", "{PLUGIN_DIR}/csi.sock"]
    volumeMounts: [{{name: kubelet, mountPath: /var/lib/kubelet}}]
  volumes:
  - {{name: kubelet, hostPath: {{path: /var/lib/kubelet, type: Directory}}}}
  - {{name: dev, hostPath: {{path: /dev, type: Directory}}}}
  - {{name: sys, hostPath: {{path: /sys, type: Directory}}}}
"""


def plugin_image(csi: Path, registrar: Path, kernel_initrd: Path, work: Path) -> bytes:
    """The OCI archive of the plugin's image: spindle-csi with its libraries (e2e/images/rootfs),
    the registrar, and busybox (from the guest image) as nsenter."""
    root = work / "plugin-rootfs"
    named = work / "plugin-bin" / "spindle-csi"  # rootfs names the binary after its file
    named.parent.mkdir(exist_ok=True)
    named.write_bytes(csi.read_bytes())
    named.chmod(0o755)
    subprocess.run([str(ROOT / "e2e/images/rootfs"), str(named), str(root)], check=True)
    (root / "usr/local/bin/spindle-registrar").write_bytes(registrar.read_bytes())
    (root / "usr/local/bin/spindle-registrar").chmod(0o755)
    (root / "bin").mkdir(exist_ok=True)
    with open(kernel_initrd, "rb") as f:
        busybox = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "bin/busybox"], stdin=f,
                                 check=True, capture_output=True).stdout
    (root / "bin/busybox").write_bytes(busybox)
    (root / "bin/busybox").chmod(0o755)
    (root / "bin/nsenter").symlink_to("busybox")
    out = work / "spindle-csi.oci.tar"
    subprocess.run([str(ROOT / "e2e/images/oci-archive"), "--rootfs", str(root), "--name", PLUGIN_IMAGE,
                    "--entrypoint", "/usr/local/bin/spindle-csi", "--out", str(out)], check=True)
    return out.read_bytes()


class CsiPlane:
    def __init__(self, cluster: Cluster, kube: Kube, spindle_bins: Path, portal_addr: str):
        self.cluster, self.kube = cluster, kube
        self.bins, self.portal_addr = spindle_bins, portal_addr
        self.sock = cluster.work / "csi-controller" / "csi.sock"

    def spindle(self, *args: str) -> str:
        env = dict(os.environ, SPINDLE_BIN_DIR=str(self.bins))
        return subprocess.run([str(CLUSTER / "spindle"), "--name", self.cluster.name, *args],
                              env=env, check=True, stdout=subprocess.PIPE, text=True).stdout

    def start(self) -> None:
        k = self.kube
        k.run("apply", "--server-side", "--field-manager", "csi-pod-e2e", "-f", str(ROOT / "crds"))
        k.run("wait", "--for", "condition=Established", "--timeout", "30s",
              "crd/devices.spindle.dev", "crd/targets.spindle.dev")
        k.apply(f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {STORAGE_NODE}\n  labels:\n"
                f"    kubernetes.io/hostname: {STORAGE_NODE}\n")
        self.spindle("start-agent", STORAGE_NODE, self.portal_addr)
        self.spindle("start-operator")
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        kc = str(self.cluster.kubeconfig)
        env = dict(os.environ, KUBECONFIG=kc, RUST_LOG="info,spindle_csi=debug")
        c = self.cluster
        c.spawn("spindle-csi-controller", [str(self.bins / "spindle-csi"), "controller",
                                           "--endpoint", f"unix://{self.sock}",
                                           "--health-address", "127.0.0.1:9808"], env=env)
        deadline = time.monotonic() + 60
        while not self.sock.exists():
            c.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("spindle-csi controller did not create its socket in 60 s")
            time.sleep(0.2)
        common = [f"--csi-address={self.sock}", f"--kubeconfig={kc}", "--leader-election=false",
                  "--timeout=150s", "--v=2"]
        b = c.bin_dir
        c.spawn("csi-provisioner", [str(b / "csi-provisioner"), *common, "--extra-create-metadata"])
        c.spawn("csi-attacher", [str(b / "csi-attacher"), *common])
        c.spawn("csi-resizer", [str(b / "csi-resizer"), *common])
        k.apply(MANIFESTS)

    def agent_data(self) -> Path:
        return self.cluster.state / "spindle" / f"agent-{STORAGE_NODE}" / "data"

    def backing_file(self, volume: str) -> Path:
        dev = self.kube.get("-n", NAMESPACE, "device", volume)
        path = ((dev or {}).get("spec") or {}).get("source", {}).get("file", {}).get("path")
        if not path:
            raise RuntimeError(f"Device {volume} has no file source: {dev}")
        return self.agent_data() / path
