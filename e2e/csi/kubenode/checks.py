"""The checks run on the booted guest node, in order; each records its outcome and timing."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from . import kube as k8s
from .node import NodeChannel

BUSYBOX = "docker.io/library/spindle-busybox:1"


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str


def pod(name: str, script: str, node: str, volumes: str = "", mounts: str = "") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  dnsPolicy: Default
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", {json.dumps(script)}]
{mounts}
{volumes}
"""


class Checks:
    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.results: list[Result] = []
        self.figures: dict[str, float] = {}

    def record(self, name: str, fn: Callable[[], str]) -> bool:
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            ok = True
        except Exception as err:  # noqa: BLE001 - a failed check, reported
            detail = f"{type(err).__name__}: {err}"
            ok = False
            self.log("".join(traceback.format_exception(err)[-3:]))
        r = Result(name, ok, time.monotonic() - t0, detail)
        self.results.append(r)
        self.log(f"{name}: {'ok' if ok else 'FAILED'} ({r.seconds:.1f} s) {detail}")
        return ok

    def report(self) -> None:
        print("\n| check | result | seconds | detail |\n|---|---|---:|---|")
        for r in self.results:
            print(f"| {r.name} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.1f} | {r.detail[:300]} |")
        if self.figures:
            print("\n| figure | seconds |\n|---|---:|")
            for k, v in self.figures.items():
                print(f"| {k} | {v:.1f} |")
        passed = sum(r.ok for r in self.results)
        print(f"\nguest node: {passed} passed, {len(self.results) - passed} failed")

    def run_all(self, kube: k8s.Kube, node: NodeChannel, cluster, t_boot: float) -> bool:
        name = "spindle-guest"

        def alive() -> None:
            cluster.check_alive()
            rc, out = node.run("kill -0 $(cat /run/kubelet.pid) || tail -n 20 /run/kubelet.log", 60)
            if rc != 0 or out:
                raise AssertionError(f"the guest's kubelet exited: {out}")

        def node_ready() -> str:
            _, secs = kube.wait_for(f"Node {name} Ready",
                                    lambda: k8s.condition(kube.get("node", name), "Ready") == "True",
                                    timeout=300, period=1, alive=alive)
            self.figures["QEMU start -> Node Ready"] = time.monotonic() - t_boot
            self.figures["kubelet start -> Node Ready"] = time.monotonic() - t_boot - node.node_ms / 1000
            return f"{secs:.1f} s after the kubelet started"

        def first_pod() -> str:
            kube.wait_for("ServiceAccount default", lambda: kube.get("serviceaccount", "default"), 60)
            kube.apply(pod("hello", "echo hello-from-the-guest >/tmp/x && cat /tmp/x >/dev/termination-log",
                           name))
            t0 = time.monotonic()
            got, _ = kube.wait_for("Pod hello done", lambda: k8s.pod_phase(kube.get("pod", "hello"))
                                   in ("Succeeded", "Failed") and kube.get("pod", "hello"), 300, 1,
                                   lambda: kube.pod_doomed("hello"))
            secs = time.monotonic() - t0
            self.figures["Pod create -> Succeeded (first Pod)"] = secs
            if k8s.pod_phase(got) != "Succeeded":
                raise AssertionError(f"the pod ended {k8s.pod_phase(got)}: {got.get('status')}")
            msg = k8s.termination_message(got).strip()
            if msg != "hello-from-the-guest":
                raise AssertionError(f"the pod wrote {msg!r}")
            kube.run("delete", "pod", "hello", "--wait=false")
            return f"wrote and read back its file in {secs:.1f} s"

        def second_pod() -> str:
            kube.apply(pod("hello2", "echo again >/dev/termination-log", name))
            t0 = time.monotonic()
            kube.wait_for("Pod hello2 done", lambda: k8s.pod_phase(kube.get("pod", "hello2"))
                          == "Succeeded", 300, 1, lambda: kube.pod_doomed("hello2"))
            self.figures["Pod create -> Succeeded (second Pod)"] = time.monotonic() - t0
            return ""

        return (self.record("node Ready", node_ready) and self.record("a Pod writes a file", first_pod)
                and self.record("a second Pod", second_pod))
