import importlib.machinery
import importlib.util
import unittest
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "csi-node"
_LOADER = importlib.machinery.SourceFileLoader("csi_node", str(_PATH))
_SPEC = importlib.util.spec_from_loader("csi_node", _LOADER)
csi_node = importlib.util.module_from_spec(_SPEC)
_LOADER.exec_module(csi_node)


class SanityCountsTest(unittest.TestCase):
    def test_reads_ginkgos_summary(self):
        text = ("...\nRan 26 of 103 Specs in 39.512 seconds\n"
                "SUCCESS! -- 26 Passed | 0 Failed | 1 Pending | 76 Skipped\nPASS\n")
        self.assertEqual(csi_node.sanity_counts(text),
                         "ran 26 of 103 specs in 40 s: 26 passed, 0 failed, 1 pending, 76 skipped")

    def test_a_failed_run(self):
        text = "Ran 24 of 103 Specs in 10.884 seconds\nFAIL! -- 19 Passed | 5 Failed | 1 Pending | 78 Skipped\n"
        self.assertIn("5 failed", csi_node.sanity_counts(text))

    def test_skip_reasons(self):
        text = ("  [SKIPPED] in [BeforeEach] - node.go:869 @ 12/07/26\nS [SKIPPED] [0.160 seconds]\n"
                "  [SKIPPED] NodeGetStorageHealth not supported\n")
        self.assertEqual(csi_node.sanity_skips(text), ["NodeGetStorageHealth not supported"])

    def test_no_summary(self):
        self.assertEqual(csi_node.sanity_counts("panic: boom\n"), "no summary")


if __name__ == "__main__":
    unittest.main()
