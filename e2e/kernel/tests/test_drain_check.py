import tempfile
import unittest
from pathlib import Path

from harness.drain_check import BLOCK, DrainCheckError, check, disk_offset, expected, parse

# The file's 4 blocks are in two extents: file blocks 0-1 at disk block 10, 2-3 at disk block 3.
LOG = """EXTENT 0 40960 8192
EXTENT 8192 12288 8192
G 0
G 2
E 1 5 1200
G 3
E 4 5 1201
END 3 2
"""


def backing(blocks: dict[int, bytes]) -> Path:
    f = tempfile.NamedTemporaryFile(delete=False)
    f.truncate(16 * BLOCK)
    for disk_block, data in blocks.items():
        f.seek(disk_block * BLOCK)
        f.write(data)
    f.close()
    return Path(f.name)


class DrainCheckTest(unittest.TestCase):
    def test_parse(self):
        log = parse(LOG)
        self.assertEqual(log.good, [0, 2, 3])
        self.assertEqual(log.failed, [(1, 5, 1200), (4, 5, 1201)])
        self.assertEqual(log.end, (3, 2))

    def test_offsets_follow_the_extents(self):
        log = parse(LOG)
        self.assertEqual(disk_offset(log.extents, 0), 40960)
        self.assertEqual(disk_offset(log.extents, 3 * BLOCK), 12288 + BLOCK)
        with self.assertRaises(DrainCheckError):
            disk_offset(log.extents, 4 * BLOCK)

    def test_all_acknowledged_writes_present(self):
        path = backing({10: expected(0), 3: expected(2), 4: expected(3)})
        self.assertIn("all 3 acknowledged writes", check(parse(LOG), path))

    def test_a_lost_write_is_named(self):
        path = backing({10: expected(0), 3: expected(2)})
        with self.assertRaisesRegex(DrainCheckError, r"1 of 3 .* blocks \[3\]"):
            check(parse(LOG), path)

    def test_a_truncated_log_is_refused(self):
        with self.assertRaisesRegex(DrainCheckError, "no END"):
            check(parse(LOG.replace("END 3 2\n", "")), backing({}))
        with self.assertRaisesRegex(DrainCheckError, "not understood"):
            parse("G 1\nG\n")


if __name__ == "__main__":
    unittest.main()
