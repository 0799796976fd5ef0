import unittest

from harness.dmesg import Rules, judge, split_phases
from harness.phases import DRAIN, RESTART, RESTARTS

CONSOLE = """\
[    1.000000] Linux version 6.1.0
[    2.000000] spindle-guest: phase discovery
iscsid: a user-space line, not judged
[    2.100000] scsi host2: iSCSI Initiator over TCP/IP
[    2.300000] sd 2:0:0:0: Power-on or device reset occurred
[    2.400000] sd 2:0:0:0: [sda] Write cache: enabled, read cache: enabled, supports DPO and FUA
[    3.000000] spindle-guest: phase restart-term
[    3.100000]  connection1:0: detected conn error (1020)
[    4.000000] spindle-guest: phase drain
[    4.100000] sd 2:0:0:0: [sda] tag#3 Sense Key : Illegal Request [current]
[    4.100001] sd 2:0:0:0: [sda] tag#3 Add. Sense: Logical unit not supported
[    4.100002] I/O error, dev sda, sector 2048 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2
"""


class DmesgTest(unittest.TestCase):
    def test_lines_go_to_the_phase_of_the_last_marker(self):
        phases = split_phases(CONSOLE)
        self.assertEqual(list(phases), ["boot", "discovery", "restart-term", "drain"])
        self.assertEqual(len(phases["discovery"]), 3)
        self.assertEqual(phases["boot"], ["Linux version 6.1.0"])

    def test_expected_messages_pass(self):
        verdict = judge(CONSOLE, {"restart-term": RESTART, "drain": DRAIN})
        self.assertEqual(verdict, {"discovery": [], "restart-term": [], "drain": []})

    def test_a_connection_error_fails_a_phase_that_does_not_expect_it(self):
        verdict = judge(CONSOLE, {"drain": DRAIN})
        self.assertEqual(len(verdict["restart-term"]), 1)
        self.assertIn("connection error", verdict["restart-term"][0])

    def test_an_allowed_problem_counts(self):
        line = "[ 1.1]  connection1:0: detected conn error (1020)\n"
        console = "[ 1.0] spindle-guest: phase restart-term\n" + line * RESTARTS
        self.assertEqual(judge(console, {"restart-term": RESTART})["restart-term"], [])
        self.assertEqual(len(judge(console + line, {"restart-term": RESTART})["restart-term"]), 1)

    def test_a_second_power_on_for_the_same_disk_fails(self):
        console = CONSOLE.replace("[    3.000000] spindle-guest: phase restart-term\n",
                                  "[    2.500000] sd 2:0:0:0: Power-on or device reset occurred\n"
                                  "[    3.000000] spindle-guest: phase restart-term\n")
        verdict = judge(console, {"restart-term": RESTART, "drain": DRAIN})
        self.assertEqual(len(verdict["discovery"]), 1)
        self.assertIn("one power-on/reset unit attention too many", verdict["discovery"][0])

    def test_a_new_login_may_reuse_the_address_of_a_logged_out_disk(self):
        console = ("[ 1.0] spindle-guest: phase chap\n"
                   "[ 1.1] scsi 1:0:0:0: Direct-Access     SPINDLE  SPINDLE DISK     0001 PQ: 0\n"
                   "[ 1.2] sd 1:0:0:0: Power-on or device reset occurred\n"
                   "[ 1.3] scsi 1:0:0:0: Direct-Access     SPINDLE  SPINDLE DISK     0001 PQ: 0\n"
                   "[ 1.4] sd 1:0:0:0: Power-on or device reset occurred\n")
        self.assertEqual(judge(console, {}), {"chap": []})

    def test_each_restart_adds_one_power_on_to_the_login(self):
        restart = ("[ 1.3]  connection9:0: detected conn error (1020)\n"
                   "[ 1.4] sd 0:0:0:0: Power-on or device reset occurred\n")
        console = ("[ 1.0] spindle-guest: phase restart-kill\n"
                   "[ 1.1] scsi 0:0:0:0: Direct-Access     SPINDLE  SPINDLE DISK     0001 PQ: 0\n"
                   "[ 1.2] sd 0:0:0:0: Power-on or device reset occurred\n") + restart * RESTARTS
        self.assertEqual(judge(console, {"restart-kill": RESTART}), {"restart-kill": []})
        more = console + "[ 1.5] sd 0:0:0:0: Power-on or device reset occurred\n"
        self.assertEqual(len(judge(more, {"restart-kill": RESTART})["restart-kill"]), 1)

    def test_open_iscsi_login_race_is_not_the_targets_connection_error(self):
        console = ("[ 1.0] spindle-guest: phase chap\n"
                   "[ 1.1]  connection7:0: Login/Text in progress. Cannot start new task.\n"
                   "[ 1.2]  connection7:0: detected conn error (1020)\n")
        self.assertEqual(judge(console, {}), {"chap": []})
        other = console.replace("[ 1.2]  connection7", "[ 1.2]  connection8")
        self.assertEqual(len(judge(other, {})["chap"]), 1)

    def test_io_and_file_system_errors_fail(self):
        for line in ("blk_update_request: I/O error, dev sda, sector 8",
                     "EXT4-fs error (device sda): ext4_find_entry:1683: inode #2",
                     "Buffer I/O error on dev sda, logical block 0, lost async page write",
                     "session1: session recovery timed out after 30 secs",
                     "sd 2:0:0:0: rejecting I/O to offline device"):
            console = f"[ 1.0] spindle-guest: phase fs\n[ 1.1] {line}\n"
            self.assertEqual(len(judge(console, {})["fs"]), 1, line)

    def test_a_drain_without_the_fence_fails(self):
        console = "[ 1.0] spindle-guest: phase drain\n[ 1.1] I/O error, dev sda, sector 8\n"
        self.assertIn("Logical unit not supported", judge(console, {"drain": DRAIN})["drain"][0])

    def test_normal_ext4_messages_pass(self):
        console = ("[ 1.0] spindle-guest: phase fs\n"
                   "[ 1.1] EXT4-fs (sda): mounted filesystem 5d0c with ordered data mode. "
                   "Quota mode: none.\n[ 1.2] EXT4-fs (sda): unmounting filesystem 5d0c.\n")
        self.assertEqual(judge(console, {"fs": Rules()}), {"fs": []})


if __name__ == "__main__":
    unittest.main()
