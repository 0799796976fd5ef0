import hashlib
import subprocess
import unittest

from kubenode import capacity, kube, node, volumes

SPEC = node.NodeSpec("n1", "10.1.0.2", 24, "https://10.1.0.1:6443", "iqn.2026-12.dev.spindle:n1")
POD = {
    "metadata": {"creationTimestamp": "2026-12-07T17:00:00Z"},
    "status": {
        "phase": "Succeeded",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"state": {"terminated": {
            "message": "abc\n", "startedAt": "2026-12-07T17:00:42Z"}}}],
    },
}


class KubeTest(unittest.TestCase):
    def test_pod_fields(self):
        self.assertEqual(kube.pod_phase(POD), "Succeeded")
        self.assertEqual(kube.termination_message(POD), "abc\n")
        self.assertEqual(kube.condition(POD, "Ready"), "False")
        self.assertIsNone(kube.condition(POD, "Missing"))
        self.assertEqual(kube.container_started(POD) - kube.created(POD), 42)

    def test_missing_fields_are_empty(self):
        for obj in (None, {}, {"status": None}):
            self.assertEqual(kube.pod_phase(obj), "")
            self.assertEqual(kube.termination_message(obj), "")
            self.assertEqual(kube.container_started(obj), 0.0)


class NodeFilesTest(unittest.TestCase):
    def test_kubeconfig_names_the_serving_certificate(self):
        text = node.kubeconfig(SPEC, b"ca", b"cert", b"key")
        self.assertIn("server: https://10.1.0.1:6443", text)
        self.assertIn("tls-server-name: localhost", text)
        self.assertIn('user: "system:node:n1"', text)

    def test_runc_does_not_pivot_root(self):
        self.assertNotIn("no_pivot = true", node.CONTAINERD)  # refused by CRI for runc v2
        self.assertIn("NoPivotRoot = true", node.CONTAINERD)

    def test_files_carry_the_node(self):
        files = node.files(SPEC, b"ca", b"cert", b"key")
        env = files["spindle/env"][0].decode()
        self.assertIn("NODE_NAME=n1", env)
        self.assertIn("GUEST_ADDR=10.1.0.2/24", env)
        self.assertEqual(files["spindle/kubelet.kubeconfig"][1], 0o600)


class PatternTest(unittest.TestCase):
    def test_the_pods_pattern_is_the_expected_one(self):
        out = subprocess.run(["sh", "-c", volumes.PATTERN_CMD], check=True, capture_output=True).stdout
        self.assertEqual(hashlib.sha256(out).hexdigest(), volumes.PATTERN_SHA)

    def test_scripts_with_both_quotes_stay_valid_yaml(self):
        import json
        script = "echo \"$(df -k /data | awk 'NR==2 {print $2}')\" >/dev/termination-log"
        text = volumes.pod("p", "c", script, "n1")
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("command:"))
        self.assertEqual(json.loads(line.split(":", 1)[1]), ["sh", "-c", script])

    def test_block_pod_uses_a_device(self):
        text = volumes.pod("p", "c", "true", "n1", block=True)
        self.assertIn("volumeDevices", text)
        self.assertNotIn("volumeMounts", text)


if __name__ == "__main__":
    unittest.main()


class QuantityTest(unittest.TestCase):
    def test_byte_quantities(self):
        self.assertEqual(capacity.quantity_bytes("37580963840"), 37580963840)
        self.assertEqual(capacity.quantity_bytes("36700160Ki"), 36700160 << 10)
        self.assertEqual(capacity.quantity_bytes("35Gi"), 35 << 30)
        self.assertEqual(capacity.quantity_bytes("2G"), 2 * 10**9)

    def test_what_is_not_bytes_is_refused(self):
        for q in ("", "1.5Gi", "-1", "12Q", "Gi", "1 Gi"):
            with self.assertRaises(ValueError, msg=q):
                capacity.quantity_bytes(q)
