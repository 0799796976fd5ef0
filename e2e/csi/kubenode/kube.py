"""kubectl against the run's cluster: apply, get, wait, with timings."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class KubeError(RuntimeError):
    pass


class Kube:
    def __init__(self, kubectl: Path, kubeconfig: Path):
        self.base = [str(kubectl), "--kubeconfig", str(kubeconfig)]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        p = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise KubeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", stdin=manifest)

    def get(self, *what: str) -> dict | None:
        p = subprocess.run([*self.base, "get", *what, "-o", "json"], capture_output=True, text=True)
        if p.returncode != 0:
            if "NotFound" in p.stderr or "not found" in p.stderr:
                return None
            raise KubeError(f"kubectl get {' '.join(what)}: {p.stderr.strip()}")
        return json.loads(p.stdout)

    def events(self, name: str, namespace: str = "default") -> list[tuple[str, str]]:
        """(reason, message) of the events about object `name` in `namespace`."""
        got = self.get("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}") or {}
        return [(e.get("reason", ""), e.get("message", "")) for e in got.get("items", [])]

    def pod_doomed(self, name: str, namespace: str = "default") -> None:
        """Fails at once on what kubelet does not retry its way out of here: a sandbox or a
        container that cannot start."""
        for reason, message in self.events(name, namespace):
            if reason in ("FailedCreatePodSandBox", "Failed", "ErrImageNeverPull"):
                raise KubeError(f"Pod {name}: {reason}: {message}")

    def wait_for(self, what: str, test: Callable[[], object], timeout: float,
                 period: float = 0.5, alive: Callable[[], None] | None = None) -> tuple[object, float]:
        """Polls `test` until it returns something true; returns it and the seconds it took."""
        t0 = time.monotonic()
        while True:
            if alive is not None:
                alive()
            got = test()
            if got:
                return got, time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise KubeError(f"{what}: not after {timeout:.0f} s")
            time.sleep(period)


def condition(obj: dict | None, kind: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c.get("status")
    return None


def pod_phase(obj: dict | None) -> str:
    return ((obj or {}).get("status") or {}).get("phase") or ""


def termination_message(obj: dict | None) -> str:
    for cs in ((obj or {}).get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term.get("message") or ""
    return ""


def _ts(value: str) -> float:
    from datetime import datetime
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def created(obj: dict | None) -> float:
    return _ts(((obj or {}).get("metadata") or {}).get("creationTimestamp") or "1970-01-01T00:00:00Z")


def container_started(obj: dict | None) -> float:
    for cs in ((obj or {}).get("status") or {}).get("containerStatuses") or []:
        st = cs.get("state") or {}
        for v in st.values():
            if v.get("startedAt"):
                return _ts(v["startedAt"])
    return 0.0
