"""The client-output parsers, on real captured output and on broken output."""

import json
import unittest
from pathlib import Path

from spindlebench import parsers
from spindlebench.parsers import ParseError

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class IscsiPerfTest(unittest.TestCase):
    def test_takes_the_final_average_not_a_periodic_line(self):
        # The capture has a periodic "iops average 30651 (...), in_flight" before the
        # final "iops average 31022 (121 MB/s)".
        m = parsers.parse_iscsi_perf(fixture("iscsi-perf-randread.txt"), 3, 4096)
        self.assertEqual(m.iops, 31022)
        self.assertEqual(m.ios, 31022 * 3)
        self.assertAlmostEqual(m.mib_per_s, 31022 * 4096 / 2**20)

    def test_large_blocks(self):
        m = parsers.parse_iscsi_perf(fixture("iscsi-perf-seqread.txt"), 2, 131072)
        self.assertEqual(m.iops, 5743)
        self.assertAlmostEqual(m.mib_per_s, 5743 / 8)

    def test_login_failure_has_no_result(self):
        out = "iscsi-perf version 0.1 - (c) 2014-2015 by Peter Lieven\n\n"
        with self.assertRaises(ParseError):
            parsers.parse_iscsi_perf(out, 1, 4096)

    def test_aborted_run_is_rejected_even_with_periodic_lines(self):
        out = ("\r00:00:05 - lba 1, iops current 10 (0 MB/s), iops average 10 (0 MB/s), "
               "in_flight 32, busy 0        \nABORTED!\n")
        with self.assertRaisesRegex(ParseError, "aborted"):
            parsers.parse_iscsi_perf(out, 10, 4096)

    def test_only_periodic_lines_is_not_a_result(self):
        out = ("\r00:00:05 - lba 1, iops current 10 (0 MB/s), iops average 10 (0 MB/s), "
               "in_flight 32, busy 0        \n\nfinished.\n")
        with self.assertRaisesRegex(ParseError, "summary"):
            parsers.parse_iscsi_perf(out, 10, 4096)

    def test_zero_iops_is_a_failure(self):
        out = "\riops average 0 (0 MB/s)     \n\nfinished.\n"
        with self.assertRaisesRegex(ParseError, "no I/O"):
            parsers.parse_iscsi_perf(out, 10, 4096)


class QemuImgBenchTest(unittest.TestCase):
    def test_count_and_time(self):
        m = parsers.parse_qemu_img_bench(fixture("qemu-img-bench-write.txt"))
        self.assertEqual(m.ios, 20000)
        self.assertEqual(m.block_size, 4096)
        self.assertAlmostEqual(m.seconds, 2.368)
        self.assertAlmostEqual(m.mean_latency_us(32), 32 / (20000 / 2.368) * 1e6)

    def test_open_failure(self):
        out = ("qemu-img: Could not open 'iscsi://127.0.0.1:3299/iqn.nope/1': iSCSI: Failed "
               "to connect to LUN : Failed to log in to target.\n")
        with self.assertRaises(ParseError):
            parsers.parse_qemu_img_bench(out)

    def test_missing_completion_line(self):
        out = ("Sending 20000 write requests, 4096 bytes each, 32 in parallel (starting at "
               "offset 0, step size 4096)\n")
        with self.assertRaises(ParseError):
            parsers.parse_qemu_img_bench(out)

    def test_zero_seconds_is_a_failure(self):
        out = ("Sending 10 read requests, 4096 bytes each, 1 in parallel (starting at "
               "offset 0, step size 4096)\nRun completed in 0.000 seconds.\n")
        with self.assertRaises(ParseError):
            parsers.parse_qemu_img_bench(out)


class FioTest(unittest.TestCase):
    def test_read_job(self):
        text = fixture("fio-randread.json")
        job = json.loads(text)["jobs"][0]
        m = parsers.parse_fio_json(text, "read", 4096)
        self.assertEqual(m.ios, job["read"]["total_ios"])
        self.assertAlmostEqual(m.seconds, job["read"]["runtime"] / 1000)
        self.assertAlmostEqual(m.tool_cpu_s,
                               (job["usr_cpu"] + job["sys_cpu"]) / 100 * m.seconds)

    def test_write_job_reads_the_write_side(self):
        m = parsers.parse_fio_json(fixture("fio-write.json"), "write", 131072)
        self.assertEqual(m.ios, 100)

    def test_wrong_direction_has_no_io(self):
        with self.assertRaisesRegex(ParseError, "no I/O"):
            parsers.parse_fio_json(fixture("fio-write.json"), "read", 131072)

    def test_warning_lines_before_json_are_skipped(self):
        text = "fio: Any use of blockalign= turns off randommap\n" + fixture("fio-randread.json")
        self.assertGreater(parsers.parse_fio_json(text, "read", 4096).iops, 0)

    def test_no_json(self):
        with self.assertRaises(ParseError):
            parsers.parse_fio_json("fio: failed to open file\n", "read", 4096)

    def test_truncated_json(self):
        text = fixture("fio-randread.json")
        with self.assertRaises(ParseError):
            parsers.parse_fio_json(text[: len(text) // 2], "read", 4096)

    def test_json_of_another_shape(self):
        with self.assertRaises(ParseError):
            parsers.parse_fio_json('{"jobs": []}', "read", 4096)
        with self.assertRaises(ParseError):
            parsers.parse_fio_json('{"jobs": [{"read": {"total_ios": "x"}}]}', "read", 4096)

    def test_job_error_is_reported(self):
        doc = json.loads(fixture("fio-randread.json"))
        doc["jobs"][0]["error"] = 5
        with self.assertRaisesRegex(ParseError, "error 5"):
            parsers.parse_fio_json(json.dumps(doc), "read", 4096)


if __name__ == "__main__":
    unittest.main()
