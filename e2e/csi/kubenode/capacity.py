"""Capacity-aware scheduling, end to end: csi-provisioner turns the driver's GetCapacity (the
storage node's free bytes, from its agent's Lease) into CSIStorageCapacity objects; the scheduler
then places a Pod whose claim waits for its first consumer only where the claim fits."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

from . import kube as k8s
from .csi import LATE_STORAGE_CLASS, NAMESPACE, STORAGE_NODE, TOPOLOGY_KEY, TOPOLOGY_VALUE, CsiPlane

FREE_ANNOTATION = "spindle.dev/capacity-free-bytes"
GIB = 1 << 30
# The label spindle-csi puts on the Devices it makes (csi/src/controller/names.rs).
PVC_NAME_LABEL = "csi.spindle.dev/pvc-name"
# How far the published capacity may lag the Lease (other runs on the machine write files).
TOLERANCE = 256 << 20
# The scheduler's reason when no CSIStorageCapacity holds the claim (VolumeBinding plugin).
NO_ROOM = "did not have enough free storage"
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
         "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}


def quantity_bytes(q: str) -> int:
    """A Kubernetes quantity of bytes ("123", "64Mi", "35G") as an integer."""
    m = re.fullmatch(r"(\d+)([kMGTPE]i?|Ki)?", q.strip())
    if not m or (m.group(2) or "") not in UNITS:
        raise ValueError(f"not a quantity of bytes: {q!r}")
    return int(m.group(1)) * UNITS[m.group(2) or ""]


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


class CapacityChecks:
    def __init__(self, kube: k8s.Kube, plane: CsiPlane, node_name: str,
                 finished: Callable[[str], dict], delete_all: Callable[[str, list[str]], str],
                 pvc: Callable[..., str], pod: Callable[..., str], alive: Callable[[], None]):
        self.kube, self.plane, self.node_name = kube, plane, node_name
        self.finished, self.delete_all, self.pvc, self.pod, self.alive = finished, delete_all, pvc, pod, alive
        self.last_seen = "nothing yet"

    def lease_free(self) -> int:
        leases = (self.kube.get("lease", "-A", "-l", "spindle.dev/agent") or {}).get("items") or []
        for lease in leases:
            if lease["metadata"]["name"] == STORAGE_NODE:
                value = (lease["metadata"].get("annotations") or {}).get(FREE_ANNOTATION)
                if value is None:
                    raise AssertionError(f"the agent's Lease has no {FREE_ANNOTATION}")
                return int(value)
        raise AssertionError(f"no agent Lease of {STORAGE_NODE}")

    def published(self) -> dict | None:
        """The CSIStorageCapacity of the late-binding StorageClass (None while there is none)."""
        items = (self.kube.get("-n", NAMESPACE, "csistoragecapacities") or {}).get("items") or []
        mine = [c for c in items if c.get("storageClassName") == LATE_STORAGE_CLASS]
        if len(mine) > 1:
            raise AssertionError(f"{len(mine)} CSIStorageCapacity objects for {LATE_STORAGE_CLASS}, "
                                 "one expected (the driver has no topology: one segment, every node)")
        return mine[0] if mine else None

    def matching(self, want: Callable[[int], bool]) -> Callable[[], tuple[int, int] | None]:
        """A wait_for test: (published capacity, Lease free bytes) once they agree and `want`
        holds for the published capacity."""
        def test() -> tuple[int, int] | None:
            c, free = self.published(), self.lease_free()
            self.last_seen = f"CSIStorageCapacity {c}, Lease free bytes {free}"
            if c is None or c.get("capacity") is None:
                return None
            cap = quantity_bytes(c["capacity"])
            return (cap, free) if abs(cap - free) <= TOLERANCE and want(cap) else None
        return test

    def wait(self, what: str, want: Callable[[int], bool]) -> tuple[tuple[int, int], float]:
        try:
            return self.kube.wait_for(what, self.matching(want), 120, 1, self.alive)
        except k8s.KubeError as err:
            raise AssertionError(f"{err}; last seen: {self.last_seen}") from None

    def follows_free_bytes(self) -> str:
        """The object appears with the Lease's free bytes for the nodes running the node plugin,
        and follows them when the storage node's disk fills."""
        (cap, free), secs = self.wait("CSIStorageCapacity = the agent's free bytes", lambda _: True)
        c = self.published()
        # The nodes it counts for: those whose node plugin reported the driver's one segment
        # (kubelet put it on the Node as a label).
        if c.get("nodeTopology") != {"matchLabels": {TOPOLOGY_KEY: TOPOLOGY_VALUE}}:
            raise AssertionError(f"the capacity's nodes are {c.get('nodeTopology')}, expected those "
                                 f"labelled {TOPOLOGY_KEY}={TOPOLOGY_VALUE}")
        label = ((self.kube.get("node", self.node_name) or {}).get("metadata") or {}).get("labels", {}).get(TOPOLOGY_KEY)
        if label != TOPOLOGY_VALUE:
            raise AssertionError(f"the guest Node's label {TOPOLOGY_KEY} is {label!r}, expected {TOPOLOGY_VALUE!r}")
        if quantity_bytes(c.get("maximumVolumeSize") or "0") != cap:
            raise AssertionError(f"maximumVolumeSize {c.get('maximumVolumeSize')} is not the one node's "
                                 f"free bytes {cap}")
        # Fill the storage node's disk by 2 GiB: the Lease and then the object follow.
        filler = self.plane.agent_data() / "capacity-filler"
        subprocess.run(["fallocate", "-l", str(2 * GIB), str(filler)], check=True)
        try:
            (after, _), followed = self.wait("CSIStorageCapacity down by 2 GiB",
                                             lambda now: now <= cap - 3 * GIB // 2)
        finally:
            filler.unlink(missing_ok=True)
        return (f"{gib(cap)} (Lease {gib(free)}) published {secs:.0f} s after registration; "
                f"{gib(after)} {followed:.1f} s after 2 GiB were written on the storage node")

    def too_big_stays_pending(self) -> str:
        """A claim bigger than the storage node's free bytes: the scheduler places its Pod
        nowhere and no volume is made."""
        k = self.kube
        size = self.lease_free() // GIB + 64
        k.apply(self.pvc("huge", f"{size}Gi", storage_class=LATE_STORAGE_CLASS))
        k.apply(self.pod("huge-user", "huge", "true", self.node_name))
        try:
            def unschedulable() -> str | None:
                p = k.get("pod", "huge-user") or {}
                for cond in (p.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                            and NO_ROOM in (cond.get("message") or ""):
                        return cond["message"]
                if k8s.pod_phase(p) not in ("Pending", ""):
                    raise AssertionError(f"the Pod of a {size} GiB claim is {k8s.pod_phase(p)}")
                return None
            message, secs = k.wait_for("the Pod refused for want of storage", unschedulable, 120, 1,
                                       self.alive)
            time.sleep(5)  # a provisioning would start within this
            claim = k.get("pvc", "huge") or {}
            if (claim.get("spec") or {}).get("volumeName") or k8s.pod_phase(k.get("pod", "huge-user")) != "Pending":
                raise AssertionError(f"the {size} GiB claim was provisioned or its Pod placed: {claim.get('status')}")
            devices = (k.get("-n", NAMESPACE, "devices") or {}).get("items") or []
            made = [d["metadata"]["name"] for d in devices
                    if (d["metadata"].get("labels") or {}).get(PVC_NAME_LABEL) == "huge"]
            if made:
                raise AssertionError(f"Devices were made for the claim no node can hold: {made}")
        finally:
            k.run("delete", "pod", "huge-user", "--wait=false", check=False)
            k.run("delete", "pvc", "huge", "--wait=false", check=False)
        return f"a {size} GiB claim: Pod unschedulable after {secs:.1f} s ({message})"

    def fitting_is_placed(self) -> str:
        """A claim that fits: the scheduler places the Pod, then the volume is provisioned (the
        chart's default binding mode)."""
        t0 = time.monotonic()
        self.kube.apply(self.pvc("late", storage_class=LATE_STORAGE_CLASS))
        self.kube.apply(self.pod("late-user", "late", "echo placed >/data/x && sync && cat /data/x "
                                 ">/dev/termination-log", self.node_name))
        got = self.finished("late-user")
        secs = time.monotonic() - t0
        if k8s.termination_message(got).strip() != "placed":
            raise AssertionError(f"late-user wrote {k8s.termination_message(got)!r}")
        took = self.delete_all("late", ["late-user"])
        return f"Pod Succeeded {secs:.1f} s after the claim; deleted, file gone after {took}"
