"""The CSI side of the run, on the host: Spindle (operator and one agent whose portal is on the
bridge), `spindle-csi controller` with csi-provisioner, csi-attacher and csi-resizer as processes
against the apiserver, the CSIDriver and a StorageClass (plain manifests: the Helm chart's CSI
templates are not used here); and the node plugin started in the guest as a process."""

from __future__ import annotations

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
# plugin registration goes through e2e/csi/registrar (grpc-go): kubelet v1.34 sends the socket's
# path as the HTTP/2 :authority of GetInfo, which the plugin's own registration server (h2)
# refuses with RST_STREAM PROTOCOL_ERROR (measured here; docs/csi-kubelet.md).
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
