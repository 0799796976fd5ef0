"""The CSI checks on the guest node: a PVC of the Spindle StorageClass through a real Pod (write
a known pattern, read it back from a second Pod, grow it while a Pod runs, delete it: the node
logs out and the agent's file is gone), and a raw block volume once."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from . import kube as k8s
from .csi import (CHART_HEALTH_PORT, DRIVER, NAMESPACE, NODE_PLUGIN_COMPONENT, PLUGIN_ALIVE, PLUGIN_DIAG,
                  PLUGIN_START, PROCESS_HEALTH_PORT, STORAGE_CLASS, CsiPlane, plugin_wait)
from .capacity import CapacityChecks
from .checks import pod as plain_pod
from .node import NodeChannel

LINES = 20000
PATTERN_CMD = f"seq 1 {LINES} | sed 's/^/spindle-pattern-/'"
PATTERN_SHA = hashlib.sha256("".join(f"spindle-pattern-{i}\n" for i in range(1, LINES + 1))
                             .encode()).hexdigest()
SIZE = "128Mi"
GROWN = "256Mi"
GROWN_KIB = 200 * 1024  # df's size of a 256 MiB ext4 is above this, a 128 MiB one's below
TIMEOUT = 420


def pvc(name: str, size: str = SIZE, block: bool = False, storage_class: str = STORAGE_CLASS) -> str:
    mode = "Block" if block else "Filesystem"
    return f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {storage_class}
  volumeMode: {mode}
  resources: {{requests: {{storage: {size}}}}}
"""


def pod(name: str, claim: str, script: str, node: str, block: bool = False) -> str:
    """A test Pod (checks.pod) with the claim as /data, or as /dev/xvda in block mode."""
    attach = ("    volumeDevices: [{name: vol, devicePath: /dev/xvda}]" if block
              else "    volumeMounts: [{name: vol, mountPath: /data}]")
    volumes = f"""  volumes:
  - name: vol
    persistentVolumeClaim: {{claimName: {claim}}}"""
    return plain_pod(name, script, node, volumes=volumes, mounts=attach)


class VolumeChecks:
    def __init__(self, kube: k8s.Kube, node: NodeChannel, plane: CsiPlane, node_name: str,
                 record: Callable[[str, Callable[[], str]], bool], figures: dict[str, float],
                 runs: int, plugin_manifests: str | None = None, node_kubeconfig: Path | None = None):
        """plugin_manifests: the chart's node plugin (csi.chart_node_plugin) to apply; None: the
        plugin is started as a process of the guest."""
        self.kube, self.node, self.plane = kube, node, plane
        self.node_name, self.record, self.figures, self.runs = node_name, record, figures, runs
        self.results_plugin_ok = False
        self.plugin_manifests = plugin_manifests
        self.node_kubeconfig = node_kubeconfig

    def plugin_pod(self) -> dict | None:
        """The node plugin's Pod on the guest (the chart's DaemonSet has one per node)."""
        pods = (self.kube.get("-n", NAMESPACE, "pods", "-l", NODE_PLUGIN_COMPONENT) or {}).get("items") or []
        here = [p for p in pods if (p.get("spec") or {}).get("nodeName") == self.node_name]
        if len(pods) > len(here):
            raise AssertionError(f"the node plugin DaemonSet has Pods off the guest: {len(pods)} Pods, "
                                 f"{len(here)} on {self.node_name}")
        return here[0] if here else None

    # --- helpers ------------------------------------------------------------------------------

    def alive(self) -> None:
        self.plane.cluster.check_alive()
        if self.plugin_manifests is not None:
            pod = self.plugin_pod()
            restarts = sum(c.get("restartCount", 0) for c in
                           ((pod or {}).get("status") or {}).get("containerStatuses") or [])
            if k8s.pod_phase(pod) not in ("Running", "Pending") or restarts:
                logs = self.kube.run("-n", NAMESPACE, "logs", "-l", NODE_PLUGIN_COMPONENT, "--all-containers",
                                     "--tail=20", check=False)
                raise AssertionError(f"the node plugin Pod is {k8s.pod_phase(pod)}, {restarts} restarts: {logs}")
            return
        rc, out = self.node.run(PLUGIN_ALIVE, 60)
        if rc != 0 or out:
            raise AssertionError(f"the guest's node plugin exited: {out}")

    def finished(self, name: str, timeout: float = TIMEOUT) -> dict:
        def alive() -> None:
            self.alive()
            self.kube.pod_doomed(name)

        try:
            got, _ = self.kube.wait_for(
                f"Pod {name} done",
                lambda: (p := self.kube.get("pod", name)) and k8s.pod_phase(p) in ("Succeeded", "Failed") and p,
                timeout, 1, alive)
        except k8s.KubeError as err:
            events = "; ".join(f"{r}: {m}" for r, m in self.kube.events(name)[-6:])
            raise AssertionError(f"{err}; events: {events}") from None
        if k8s.pod_phase(got) != "Succeeded":
            events = self.kube.run("get", "events", "--field-selector", f"involvedObject.name={name}",
                                   check=False)
            raise AssertionError(f"Pod {name} ended {k8s.pod_phase(got)}: "
                                 f"{k8s.termination_message(got)!r}; {events[-1500:]}")
        return got

    def sessions(self) -> int:
        out = self.node.must("iscsiadm -m session 2>/dev/null | wc -l || true")
        return int(out.strip().splitlines()[-1])

    def volume_of(self, claim: str) -> tuple[str, str]:
        """The PV bound to `claim` and its volume handle (the Device's name)."""
        c = self.kube.get("pvc", claim)
        pv = ((c or {}).get("spec") or {}).get("volumeName")
        if not pv:
            raise AssertionError(f"PVC {claim} is not bound")
        handle = (((self.kube.get("pv", pv) or {}).get("spec") or {}).get("csi") or {}).get("volumeHandle")
        if not handle:
            raise AssertionError(f"PV {pv} has no CSI volume handle")
        return pv, handle

    def delete_all(self, claim: str, pods: list[str]) -> str:
        """Deletes the pods and the claim; waits until the guest has no session for it and the
        agent's file is gone."""
        pv, volume = self.volume_of(claim)
        backing = self.plane.backing_file(volume)
        if not backing.exists():
            raise AssertionError(f"the backing file {backing} does not exist before the delete")
        t0 = time.monotonic()
        for p in pods:
            self.kube.run("delete", "pod", p, "--ignore-not-found", "--wait=false")
        self.kube.wait_for("pods gone", lambda: all(self.kube.get("pod", p) is None for p in pods),
                           TIMEOUT, 1, self.alive)
        self.kube.run("delete", "pvc", claim, "--wait=false")
        self.kube.wait_for("no VolumeAttachment", lambda: not [
            v for v in (self.kube.get("volumeattachments") or {}).get("items", [])
            if (v.get("spec", {}).get("source") or {}).get("persistentVolumeName") == pv],
            TIMEOUT, 1, self.alive)
        self.kube.wait_for("no session in the guest", lambda: self.sessions() == 0, TIMEOUT, 2)
        self.kube.wait_for(f"backing file {backing.name} gone", lambda: not backing.exists(), TIMEOUT, 0.5)
        secs = time.monotonic() - t0
        self.kube.wait_for(f"PV {pv} gone", lambda: self.kube.get("pv", pv) is None, 120, 1)
        self.kube.wait_for(f"Device {volume} gone",
                           lambda: self.kube.get("-n", "spindle-system", "device", volume) is None, 120, 1)
        return f"{secs:.1f} s"

    # --- the checks ---------------------------------------------------------------------------

    def run_all(self) -> bool:
        k, n = self.kube, self.node_name
        state: dict[str, str] = {}

        def plugin() -> str:
            if self.plugin_manifests is not None:
                t0 = time.monotonic()
                k.apply(self.plugin_manifests)

                def doomed() -> None:
                    if (p := self.plugin_pod()) is not None:
                        k.pod_doomed(p["metadata"]["name"], NAMESPACE)

                k.wait_for("the chart's node plugin Pod Running",
                           lambda: k8s.pod_phase(self.plugin_pod()) == "Running", 300, 1, doomed)
                self.figures["node plugin DaemonSet applied -> Pod Running"] = time.monotonic() - t0
                health = CHART_HEALTH_PORT
            else:
                self.node.must(PLUGIN_START)
                health = PROCESS_HEALTH_PORT
            rc, out = self.node.run(plugin_wait(health), 90)
            if rc != 0:
                raise AssertionError(f"the node plugin does not serve: {out[-3000:]}")
            try:
                _, secs = k.wait_for("CSINode lists the driver", lambda: any(
                    d.get("name") == DRIVER for d in
                    (((k.get("csinode", n) or {}).get("spec") or {}).get("drivers") or [])), 120, 1,
                    self.alive)
            except k8s.KubeError as err:
                raise AssertionError(f"{err}; in the guest: {self.node.run(PLUGIN_DIAG, 60)[1][-4000:]}") from None
            drv = [d for d in k.get("csinode", n)["spec"]["drivers"] if d["name"] == DRIVER][0]
            self.figures["node plugin start -> CSINode registered"] = secs
            return f"node ID {drv.get('nodeID')}"

        def write_runs() -> str:
            pvc_times, started = [], []
            for i in range(self.runs):
                claim, name = f"data-{i}", f"writer-{i}"
                t0 = time.monotonic()
                k.apply(pvc(claim))
                k.apply(pod(name, claim, f"{PATTERN_CMD} >/data/pattern && sync && "
                            "sha256sum /data/pattern | cut -d' ' -f1 >/dev/termination-log", n))
                got = self.finished(name)
                pvc_times.append(time.monotonic() - t0)
                msg = k8s.termination_message(got).strip()
                if msg != PATTERN_SHA:
                    raise AssertionError(f"{name} wrote a pattern with sha256 {msg!r}, expected {PATTERN_SHA}")
                started.append(k8s.container_started(got) - k8s.created(k.get("pvc", claim)))
                if i > 0:  # the first volume stays for the reader; the others go now
                    state[f"delete-{i}"] = self.delete_all(claim, [name])
            self.figures["PVC create -> writer Pod Succeeded, p50"] = statistics.median(pvc_times)
            self.figures["PVC create -> container started (API timestamps), p50"] = statistics.median(started)
            return (f"{self.runs} runs, PVC -> Succeeded " + ", ".join(f"{t:.1f}" for t in pvc_times)
                    + " s; container started " + ", ".join(f"{t:.0f}" for t in started) + " s after the PVC")

        def node_secrets() -> str:
            """The guest's kubelet credentials (Node authorizer) read the CHAP Secret of a volume
            its Pod uses, and not that of a volume no Pod of it uses."""
            k.apply(pvc("unused"))
            k.wait_for("PVC unused bound", lambda: ((k.get("pvc", "unused") or {}).get("status") or {})
                       .get("phase") == "Bound", 120, 1)
            used, unused = self.volume_of("data-0")[0], self.volume_of("unused")[0]
            node_kube = k8s.Kube(self.plane.cluster.bin_dir / "kubectl", self.node_kubeconfig)
            node_kube.run("-n", NAMESPACE, "get", "secret", f"{used}-chap", "-o", "name")
            p = node_kube.run("-n", NAMESPACE, "get", "secret", f"{unused}-chap", "-o", "name", check=False)
            denied = node_kube.run("-n", NAMESPACE, "auth", "can-i", "get", f"secret/{unused}-chap", check=False)
            self.kube.run("delete", "pvc", "unused", "--wait=false")
            # can-i prints "no", or "no - <the authorizer's reason>".
            if p.strip() or not denied.startswith("no"):
                raise AssertionError(f"the node reads {unused}-chap, a volume none of its Pods uses: "
                                     f"get: {p.strip()!r}, can-i: {denied.strip()!r}")
            return f"{used}-chap readable, {unused}-chap forbidden"

        def read_back() -> str:
            k.run("delete", "pod", "writer-0", "--wait=true", "--timeout=300s")
            t0 = time.monotonic()
            k.apply(pod("reader", "data-0", "sha256sum /data/pattern | cut -d' ' -f1 >/dev/termination-log", n))
            got = self.finished("reader")
            msg = k8s.termination_message(got).strip()
            if msg != PATTERN_SHA:
                raise AssertionError(f"the reader found sha256 {msg!r}, expected {PATTERN_SHA}")
            self.figures["reader Pod create -> Succeeded (volume attached before)"] = time.monotonic() - t0
            return "the pattern read back intact"

        def expand() -> str:
            k.run("delete", "pod", "reader", "--wait=true", "--timeout=300s")
            # Online resize2fs grows the file system group by group: wait for the whole size.
            script = ("s0=$(df -k /data | awk 'NR==2 {print $2}'); "
                      f"while [ $(df -k /data | awk 'NR==2 {{print $2}}') -lt {GROWN_KIB} ]; do sleep 1; done; "
                      "echo \"$s0 $(df -k /data | awk 'NR==2 {print $2}')\" >/dev/termination-log")
            k.apply(pod("grower", "data-0", script, n))
            k.wait_for("Pod grower Running", lambda: k8s.pod_phase(k.get("pod", "grower")) == "Running",
                       TIMEOUT, 1, self.alive)
            time.sleep(2)  # the pod has read its first size
            t0 = time.monotonic()
            k.run("patch", "pvc", "data-0", "--type=merge", "-p",
                  f'{{"spec": {{"resources": {{"requests": {{"storage": "{GROWN}"}}}}}}}}')
            try:
                got = self.finished("grower", 240)
            except AssertionError as err:
                why = "; ".join(f"{r}: {m}" for r, m in k.events("data-0")[-4:])
                raise AssertionError(f"{err}; the PVC's events: {why}") from None
            self.figures["PVC resize -> df grows in the running Pod"] = time.monotonic() - t0
            before, after = (int(x) for x in k8s.termination_message(got).split())
            if after < GROWN_KIB or before >= GROWN_KIB:
                raise AssertionError(f"df shows {after} KiB after growing to {GROWN}")
            return f"df {before} KiB -> {after} KiB"

        def delete() -> str:
            took = self.delete_all("data-0", ["grower", "writer-0", "reader"])
            self.figures["Pods + PVC delete -> file gone on the agent"] = float(took.split()[0])
            return f"no session left in the guest, file gone after {took}"

        def raw_block() -> str:
            t0 = time.monotonic()
            k.apply(pvc("raw", block=True))
            k.apply(pod("raw-writer", "raw", f"{PATTERN_CMD} >/tmp/p && dd if=/tmp/p of=/dev/xvda conv=fsync "
                        "2>/dev/null && n=$(wc -c </tmp/p) && head -c $n /dev/xvda | sha256sum | "
                        "cut -d' ' -f1 >/dev/termination-log", n, block=True))
            got = self.finished("raw-writer")
            self.figures["raw block PVC create -> Pod Succeeded"] = time.monotonic() - t0
            msg = k8s.termination_message(got).strip()
            if msg != PATTERN_SHA:
                raise AssertionError(f"read back sha256 {msg!r} from the raw device, expected {PATTERN_SHA}")
            took = self.delete_all("raw", ["raw-writer"])
            return f"pattern written and read back on /dev/xvda; deleted, file gone after {took}"

        ok = self.results_plugin_ok = self.record("CSI node plugin registers with kubelet", plugin)
        cap = CapacityChecks(k, self.plane, n, self.finished, self.delete_all, pvc, pod, self.alive)
        for name, check in (("CSIStorageCapacity follows the storage node's free bytes", cap.follows_free_bytes),
                            ("a claim bigger than the free space: its Pod is placed nowhere",
                             cap.too_big_stays_pending),
                            ("a late-binding claim that fits: Pod placed, volume made", cap.fitting_is_placed)):
            ok = ok and self.record(name, check)
        ok = ok and self.record("PVC -> Pod writes a pattern", write_runs)
        secrets_ok = ok and self.record("the node reads only its own volumes' CHAP Secrets", node_secrets)
        ok = ok and self.record("a second Pod reads it back", read_back)
        if ok:
            grown = self.record("expand the PVC while a Pod runs: df grows", expand)
            ok = self.record("delete Pods and PVC: logout, Device and file gone", delete) and grown
        if self.results_plugin_ok and not self.record("raw block volume", raw_block):
            ok = False
        return ok and secrets_ok
