import unittest

from harness.phases import PHASES, select


class SelectTest(unittest.TestCase):
    def test_all_by_default(self):
        self.assertEqual(select(None), list(PHASES))

    def test_needed_phases_come_along_in_order(self):
        self.assertEqual([p.name for p in select(["fstrim", "chap"])],
                         ["discovery", "fs", "fstrim", "chap"])

    def test_unknown_phase_is_named(self):
        with self.assertRaisesRegex(ValueError, "unknown phase.*nope"):
            select(["nope"])


if __name__ == "__main__":
    unittest.main()
