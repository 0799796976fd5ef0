"""The host's side of the guest node: a control plane started by e2e/cluster/up inside this
run's network namespace, the controllers `up` starts only for real nodes (controller-manager,
scheduler), a forwarder that exposes the apiserver (listening on the namespace's 127.0.0.1) on
the bridge, and the guest kubelet's client certificate."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "e2e" / "cluster"


class ClusterError(RuntimeError):
    pass


class Cluster:
    def __init__(self, name: str, bin_dir: Path, work: Path):
        self.name, self.bin_dir, self.work = name, bin_dir, work
        self.kubeconfig = Path()
        self.state = Path()
        self.port = 0
        self.procs: dict[str, subprocess.Popen] = {}

    def up(self) -> float:
        t0 = time.monotonic()
        out = subprocess.run([str(CLUSTER / "up"), "--name", self.name, "--watch-pid", str(os.getpid())],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("export KUBECONFIG=")), "")
        if not line:
            raise ClusterError(f"e2e/cluster/up printed no KUBECONFIG: {out!r}")
        self.kubeconfig = Path(line.split("=", 1)[1])
        self.state = self.kubeconfig.parent
        self.port = int((self.state / "apiserver.port").read_text())
        return time.monotonic() - t0

    def down(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        subprocess.run([str(CLUSTER / "down"), "--name", self.name], check=False)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        self.procs[name] = proc
        return proc

    def start_controllers(self) -> None:
        """kube-controller-manager (PV binder, attach/detach, service accounts, garbage
        collector) and kube-scheduler, both with the admin's credentials, serving nothing."""
        kc = str(self.kubeconfig)
        self.spawn("kube-controller-manager", [
            str(self.bin_dir / "kube-controller-manager"), "--kubeconfig", kc,
            "--leader-elect=false", "--secure-port=0", "--root-ca-file", str(self.state / "ca.crt"),
            "--service-account-private-key-file", str(self.state / "sa.key"), "--profiling=false"])
        self.spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), "--kubeconfig", kc, "--leader-elect=false",
            "--secure-port=0", "--profiling=false"])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-2000:]
                raise ClusterError(f"{name} exited {proc.returncode}:\n{tail}")

    def node_client_cert(self, node: str) -> tuple[bytes, bytes]:
        """A client certificate for the kubelet of `node` (group system:nodes), signed by the
        cluster's CA; returns (certificate, key) in PEM."""
        d = self.work / "node-cert"
        d.mkdir(exist_ok=True)
        key, csr, crt, ext = (d / n for n in ("node.key", "node.csr", "node.crt", "node.ext"))
        ext.write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
        run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        run("req", "-new", "-key", str(key), "-subj", f"/O=system:nodes/CN=system:node:{node}",
            "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(self.state / "ca.crt"), "-CAkey",
            str(self.state / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
            "-out", str(crt))
        return crt.read_bytes(), key.read_bytes()


class Forwarder:
    """Accepts TCP connections on `listen` and relays each to `target` (a thread per pair)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]):
        self.target = target
        self.sock = socket.create_server(listen)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        pair = {client: upstream, upstream: client}
        try:
            while True:
                ready, _, _ = select.select(list(pair), [], [])
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.sock.close()
