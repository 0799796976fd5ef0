"""The CSI side of the run, on the host: Spindle (operator and one agent whose portal is on the
bridge), `spindle-csi controller` with csi-provisioner, csi-attacher and csi-resizer as processes
against the apiserver, the CSIDriver and a StorageClass (plain manifests); and the node plugin in
the guest: the chart's DaemonSet (helm template), or with --plugin process a process of the
guest."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .cluster import CLUSTER, ROOT, Cluster
from .kube import Kube

DRIVER = "csi.spindle.dev"
# The segment every node plugin reports (csi/src/volume.rs), a label of its Node.
TOPOLOGY_KEY, TOPOLOGY_VALUE = "topology.csi.spindle.dev/initiator", "iscsi"
NAMESPACE = "spindle-system"
STORAGE_NODE = "spindle-storage"
STORAGE_CLASS = "spindle"
# The chart's default binding mode: provisioned once the scheduler placed the Pod, which it does
# only on a node where the CSIStorageCapacity objects say the claim fits.
LATE_STORAGE_CLASS = "spindle-late"
PLUGIN_DIR = f"/var/lib/kubelet/plugins/{DRIVER}"

MANIFESTS = f"""apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {{name: {DRIVER}}}
spec:
  attachRequired: true
  podInfoOnMount: false
  storageCapacity: true
  volumeLifecycleModes: [Persistent]
""" + "".join(f"""---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {name}}}
provisioner: {DRIVER}
allowVolumeExpansion: true
reclaimPolicy: Delete
volumeBindingMode: {binding}
parameters:
  spindle.dev/node: {STORAGE_NODE}
  csi.storage.k8s.io/node-stage-secret-name: ${{pv.name}}-chap
  csi.storage.k8s.io/node-stage-secret-namespace: {NAMESPACE}
""" for name, binding in ((STORAGE_CLASS, "Immediate"), (LATE_STORAGE_CLASS, "WaitForFirstConsumer")))

PROCESS_HEALTH_PORT = 9809  # /healthz of the plugin as a process (run-pod --plugin process)

# The node plugin, a process of the guest (beside kubelet, in its mount namespace), answering
# kubelet's plugin registration itself as in the chart's Pod.
PLUGIN_START = (
    f"mkdir -p {PLUGIN_DIR} /var/lib/kubelet/plugins_registry && "
    f"RUST_LOG=info,spindle_csi=debug setsid spindle-csi node "
    f"--endpoint unix://{PLUGIN_DIR}/csi.sock --kubelet-registration-dir /var/lib/kubelet/plugins_registry "
    f"--state-dir {PLUGIN_DIR}/volumes --health-address 127.0.0.1:{PROCESS_HEALTH_PORT} "
    f"--iscsiadm-timeout 60 --device-timeout 60 "
    f">/run/csi-node.log 2>&1 </dev/null & echo $! >/run/csi-node.pid")

# Alive: the process exists and is not a zombie; otherwise its log.
PLUGIN_ALIVE = ("p=$(cat /run/csi-node.pid); if grep -q '^State:.*[ZX]' /proc/$p/status 2>/dev/null "
                "|| [ ! -d /proc/$p ]; then echo 'the node plugin exited:'; tail -n 20 /run/csi-node.log; fi")


def plugin_wait(health_port: int) -> str:
    """A guest command: waits until the plugin serves its registration socket and /healthz."""
    return (f"for i in $(seq 1 120); do [ -S /var/lib/kubelet/plugins_registry/{DRIVER}-reg.sock ] && "
            f"wget -q -O /dev/null http://127.0.0.1:{health_port}/healthz && exit 0; sleep 0.5; done; "
            "ls -la /var/lib/kubelet/plugins_registry; tail -n 30 /run/csi-node.log; exit 1")


PLUGIN_DIAG = ("ls -la /var/lib/kubelet/plugins_registry " + PLUGIN_DIR + "; tail -n 30 /run/csi-node.log; "
               "grep -i -E 'plugin|csi' /run/kubelet.log | tail -n 25")

# The node plugin as the chart deploys it (run-pod --plugin pod, the default): the chart's CSI
# node DaemonSet and its ServiceAccount, rendered by helm with the image e2e/images/build made
# (imported into the guest's containerd at boot, never pulled).
CHART = ROOT / "charts" / "spindle"
CHART_HEALTH_PORT = 9564  # the chart's csi.node.healthPort default
NODE_PLUGIN_COMPONENT = "app.kubernetes.io/component=csi-node"


def chart_node_plugin(helm: Path, image_tag: str, node: str) -> str:
    """The chart's node plugin manifests (DaemonSet, RBAC) for this release's image tag, the
    DaemonSet on `node` only (the storage node is a Node object without a kubelet)."""
    return subprocess.run(
        [str(helm), "template", "spindle", str(CHART), "--namespace", NAMESPACE,
         "--set", "csi.enabled=true", "--set", f"image.tag={image_tag}",
         "--set", "image.pullPolicy=Never", "--set", f"csi.node.nodeSelector.kubernetes\\.io/hostname={node}",
         "--set", "csi.logLevel=info\\,spindle_csi=debug",
         "--show-only", "templates/csi/node.yaml", "--show-only", "templates/csi/rbac.yaml"],
        check=True, stdout=subprocess.PIPE, text=True).stdout


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
        # CSIStorageCapacity objects from GetCapacity, as the chart's provisioner makes them (a
        # process has no Pod to own them; polled often so that the check sees a change soon).
        c.spawn("csi-provisioner", [str(b / "csi-provisioner"), *common, "--extra-create-metadata",
                                    "--enable-capacity", "--capacity-ownerref-level=-1",
                                    "--capacity-poll-interval=5s"],
                env=dict(os.environ, NAMESPACE=NAMESPACE))
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
