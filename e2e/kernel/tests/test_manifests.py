import sys
import unittest
from pathlib import Path

# harness.manifests builds on spindletools (e2e/), which e2e/kernel/run puts on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.manifests import by_name, guest_env, render  # noqa: E402


class ChapTargetsTest(unittest.TestCase):
    def test_the_sha_only_target_allows_sha3_256_and_sha256(self):
        text = render()
        block = text.split("---\n")
        target = next(d for d in block if "kind: Target" in d and "kchap3" in d)
        self.assertIn("SHA3-256", target)
        self.assertIn("SHA256", target)
        self.assertNotIn("MD5", target)
        self.assertEqual(guest_env()["IQN_CHAP3"], by_name("kchap3").iqn)

    def test_the_other_chap_targets_keep_the_default(self):
        for name in ("kchap1", "kchap2"):
            target = next(d for d in render().split("---\n")
                          if "kind: Target" in d and f"name: {name}" in d)
            self.assertNotIn("algorithms", target)


if __name__ == "__main__":
    unittest.main()
