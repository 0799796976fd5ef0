"""Workload commands, run order, manifests, /proc readers and the report."""

import os
import unittest

from spindlebench import hoststat, procstat, report, workloads
from spindletools import manifests
from spindlebench.memory import MemoryResult
from spindlebench.perf import RunResult, Subject, schedule

WL = {w.name: w for w in workloads.WORKLOADS}


class CommandTest(unittest.TestCase):
    def test_iscsi_commands_are_the_documented_ones(self):
        url = "iscsi://127.0.0.2:3260/iqn.x:y/0"
        self.assertEqual(workloads.iscsi_command(WL["4k-randread-qd32"], url, 10, 0),
                         ["iscsi-perf", "-m", "32", "-b", "8", "-r", "-t", "10", url])
        self.assertEqual(workloads.iscsi_command(WL["128k-seqread-qd16"], url, 10, 0),
                         ["iscsi-perf", "-m", "16", "-b", "256", "-t", "10", url])
        self.assertEqual(
            workloads.iscsi_command(WL["4k-seqwrite-qd32"], url, 10, 200000),
            "qemu-img bench -f raw -t none -n -w -d 32 -s 4096 -c 200000".split() + [url])
        self.assertEqual(
            workloads.iscsi_command(WL["4k-seqread-qd1"], url, 10, 20000),
            "qemu-img bench -f raw -t none -n -d 1 -s 4096 -c 20000".split() + [url])

    def test_fio_mirrors_pattern_size_and_depth(self):
        rand = workloads.fio_command(WL["4k-randread-qd32"], "/f", 1 << 30, 7, 0)
        self.assertIn("--rw=randread", rand)
        self.assertIn("--iodepth=32", rand)
        self.assertIn("--blockalign=512", rand)  # iscsi-perf -r uses any 512 B LBA
        self.assertIn("--runtime=7", rand)
        write = workloads.fio_command(WL["128k-seqwrite-qd16"], "/f", 1 << 30, 7, 20000)
        self.assertIn("--rw=write", write)
        self.assertIn(f"--io_size={20000 * 131072}", write)
        self.assertNotIn("--time_based", write)
        for cmd in (rand, write):
            self.assertIn("--ioengine=io_uring", cmd)
            self.assertIn("--direct=1", cmd)

    def test_select(self):
        self.assertEqual(workloads.select(""), workloads.WORKLOADS)
        self.assertEqual([w.name for w in workloads.select("4k-seqread-qd1")],
                         ["4k-seqread-qd1"])
        with self.assertRaises(ValueError):
            workloads.select("4k-bogus")


class ScheduleTest(unittest.TestCase):
    def test_subjects_alternate_and_rotate(self):
        subjects = [Subject(k, k, "x") for k in ("a", "b", "c")]
        wls = workloads.WORKLOADS[:2]
        order = [(rep, wl.name, s.key) for rep, wl, s in schedule(subjects, wls, 2)]
        self.assertEqual(len(order), 2 * 2 * 3)
        first = [s for rep, wl, s in order if rep == 0 and wl == wls[0].name]
        second = [s for rep, wl, s in order if rep == 1 and wl == wls[0].name]
        self.assertEqual(first, ["a", "b", "c"])
        self.assertEqual(second, ["b", "c", "a"])


class ManifestTest(unittest.TestCase):
    def test_device_and_target_agree(self):
        e = manifests.Export("bench", "bench.img", 1 << 30, lun=0)
        text = manifests.render(e)
        docs = text.split("\n---\n")
        self.assertEqual(len(docs), 2)
        self.assertIn("kind: Device", docs[0])
        self.assertIn("sizeBytes: 1073741824", docs[0])
        self.assertIn("path: bench.img", docs[0])
        self.assertIn("directIO: true", docs[0])
        self.assertIn("kind: Target", docs[1])
        self.assertIn("iqn: iqn.2026-11.dev.spindle:default.bench", docs[1])
        self.assertIn("deviceRef: bench", docs[1])

    def test_write_cache_mode(self):
        e = manifests.Export("b", "b.img", 1 << 20)
        self.assertIn("writeCache: writeback", manifests.render(e))
        self.assertIn("writeCache: writethrough", manifests.render(e, "writethrough"))
        with self.assertRaises(ValueError):
            manifests.render(e, "sometimes")

    def test_unaligned_size_is_refused(self):
        with self.assertRaises(ValueError):
            manifests.render(manifests.Export("x", "x.img", 1000))


class ProcTest(unittest.TestCase):
    def test_stat_with_spaces_and_parens_in_name(self):
        line = "42 (a) b (c) S 7 42 42 0 -1 0 0 0 0 0 150 25 3 2 20 0 1 0 0 0 0"
        st = procstat.parse_stat(line)
        self.assertEqual((st.pid, st.ppid, st.cpu_ticks), (42, 7, 180))

    def test_malformed_stat(self):
        with self.assertRaises(ValueError):
            procstat.parse_stat("garbage")
        with self.assertRaises(ValueError):
            procstat.parse_stat("1 (x) S 0")

    def test_own_process(self):
        fp = procstat.footprint(os.getpid())
        self.assertGreater(fp.rss_kib, 0)
        self.assertGreaterEqual(fp.threads, 1)
        self.assertIn(os.getpid(), procstat.tree(os.getpid()))
        self.assertGreaterEqual(procstat.cpu_seconds(os.getpid()), 0)

    def test_established_counts_server_side_only(self):
        table = (
            "  sl  local_address rem_address   st\n"
            "   0: 0200007F:0CBC 0100007F:D431 01 0\n"   # 127.0.0.2:3260 established
            "   1: 0200007F:0CBC 0100007F:D432 01 0\n"
            "   2: 0100007F:D431 0200007F:0CBC 01 0\n"   # the client's end
            "   3: 0200007F:0CBC 00000000:0000 0A 0\n"   # the listener
            "   4: 0200007F:0CBC 0100007F:D433 06 0\n"   # TIME_WAIT
        )
        self.assertEqual(procstat.established_to("127.0.0.2", 3260, table), 2)


class HostStatTest(unittest.TestCase):
    STAT = ("cpu  100 5 50 800 40 3 2 0 0 0\n"
            "cpu0 50 2 25 400 20 1 1 0 0 0\n"
            "intr 12345\n")

    def test_cpu_busy_excludes_idle_and_iowait(self):
        s = hoststat.parse_cpu(self.STAT)
        self.assertEqual((s.busy, s.total), (160, 1000))
        later = hoststat.CpuSample(busy=s.busy + 50, total=s.total + 200)
        u = hoststat.usage(s, later, None, None, 1.0)
        self.assertAlmostEqual(u.cpu_busy_pct, 25.0)
        self.assertIsNone(u.disk_queue)

    def test_disk_queue_is_weighted_time_over_wall_time(self):
        line = "  18772480  1336071 762049842  9094622  5314562  1797032 441864919  1384374" \
               "        0   875568 10525321   184677       74 217725912    39170\n"
        d0 = hoststat.parse_disk(line)
        self.assertEqual(d0.time_in_queue_ms, 10525321)
        d1 = hoststat.DiskSample(time_in_queue_ms=d0.time_in_queue_ms + 30000)
        cpu = hoststat.parse_cpu(self.STAT)
        self.assertAlmostEqual(hoststat.usage(cpu, cpu, d0, d1, 2.0).disk_queue, 15.0)

    def test_malformed_input_is_refused(self):
        with self.assertRaises(ValueError):
            hoststat.parse_cpu("intr 1\n")
        with self.assertRaises(ValueError):
            hoststat.parse_disk("1 2 3")

    def test_sampler_on_this_machine(self):
        s = hoststat.Sampler(__import__("pathlib").Path("."))
        s.start()
        u = s.stop()
        self.assertGreaterEqual(u.cpu_busy_pct, 0.0)
        self.assertLessEqual(u.cpu_busy_pct, 100.0)
        if s.disk_path is not None:
            self.assertIsNotNone(u.disk_queue)


def run(wl, subject, iops, rep=0, cpu=None, error=None, busy=None, queue=None):
    return RunResult(wl, subject, rep, "cmd", iops=iops,
                     mib_per_s=iops * 4096 / 2**20 if iops else None,
                     latency_us=32e6 / iops if iops else None, target_cpu_us_per_io=cpu,
                     cpu_busy_pct=busy, disk_queue=queue, error=error)


class ReportTest(unittest.TestCase):
    def make(self, runs, memory=None):
        return report.Report(
            title="t", mode_line="m",
            subjects=[("spindle", "Spindle"), ("tgt", "tgt"), ("raw", "raw fio")],
            workloads=[WL["4k-randread-qd32"]], runs=runs, reps=3,
            machine=[("CPU", "x")], commands=[("Workloads", ["iscsi-perf …"])],
            memory=memory or {}, memory_labels={"spindle": "Spindle", "tgt": "tgtd"})

    def test_medians_and_ratios(self):
        runs = [run("4k-randread-qd32", "spindle", v, i, cpu=c)
                for i, (v, c) in enumerate([(100, 10), (300, 30), (200, 20)])]
        runs += [run("4k-randread-qd32", "tgt", v, i, cpu=40) for i, v in enumerate([100, 100])]
        runs += [run("4k-randread-qd32", "raw", 400)]
        text = report.render(self.make(runs))
        self.assertIn("| 4 KiB random read, QD32 | IOPS | 200 | 100 | 400 | 2.00 | 0.50 |", text)
        self.assertIn("| 100 / 300 / 200 |", text)
        self.assertIn("| 4 KiB random read, QD32 | 20.00 | 40.00 | 0.50 |", text)

    def test_ratios_per_repetition_pair_runs_of_the_same_repetition(self):
        runs = [run("4k-randread-qd32", "spindle", v, i) for i, v in enumerate([100, 300, 200])]
        runs += [run("4k-randread-qd32", "tgt", v, i) for i, v in enumerate([50, 300, 80])]
        runs += [run("4k-randread-qd32", "raw", 400, 0),
                 run("4k-randread-qd32", "raw", None, 1, error="boom")]
        self.assertEqual(report.paired_ratios(runs, "4k-randread-qd32", "spindle", "tgt",
                                              lambda r: r.iops), [2.0, 1.0, 2.5])
        text = report.render(self.make(runs))
        self.assertIn("| 4 KiB random read, QD32 | 2.00 (1.00–2.50) | 0.25 (0.25–0.25) |", text)

    def test_machine_table_shows_disk_queue_and_cpu_busy(self):
        runs = [run("4k-randread-qd32", "spindle", 100, i, busy=b, queue=q)
                for i, (b, q) in enumerate([(40, 14.0), (50, 16.0), (45, 15.0)])]
        runs += [run("4k-randread-qd32", "tgt", 100, busy=70, queue=10.5),
                 run("4k-randread-qd32", "raw", 400, busy=30, queue=31.9)]
        text = report.render(self.make(runs))
        self.assertIn("| 4 KiB random read, QD32 | 32 | 15.0 | 10.5 | 31.9 | 45 | 70 | 30 |",
                      text)

    def test_failed_runs_show_as_failed_not_as_numbers(self):
        runs = [run("4k-randread-qd32", "spindle", None, error="login failed"),
                run("4k-randread-qd32", "tgt", 100), run("4k-randread-qd32", "raw", 400)]
        text = report.render(self.make(runs))
        self.assertIn("| 4 KiB random read, QD32 | IOPS | FAILED | 100 | 400 | — | — |", text)

    def test_memory_tables(self):
        fp = procstat.Footprint
        mem = {"spindle": MemoryResult(targets={1: fp(10240, 3, 1), 64: fp(20480, 3, 1)},
                                       sessions=4, before_sessions=fp(10240, 3, 1),
                                       with_sessions=fp(10640, 3, 1),
                                       after_sessions=fp(10300, 3, 1)),
               "tgt": MemoryResult(counts=[1, 64, 512], targets={1: fp(4096, 1, 1)},
                                   errors=["boom"])}
        text = report.render(self.make([], mem))
        self.assertIn("| 64 | 20.0 | 3 | FAILED | — |", text)
        self.assertIn("| per session (KiB) | 100 | FAILED |", text)
        mem["tgt"].limits[64] = "aio-max-nr"
        text = report.render(self.make([], mem))
        self.assertIn("| 64 | 20.0 | 3 | n/a (limit) | — |", text)
        self.assertIn("| 512 | FAILED | — | FAILED | — |", text)  # tried, never measured


if __name__ == "__main__":
    unittest.main()


class SameIscsiParameters(unittest.TestCase):
    def test_spindle_manifest_offers_the_parameters_tgt_is_given(self):
        text = manifests.render(manifests.Export("a", "a.img", 1 << 20))
        for field, key, value in manifests.ISCSI_PARAMS:
            self.assertIn(f"    {field}: {manifests.yaml_scalar(value)}\n", text)
        line = manifests.iscsi_params_text()
        self.assertIn("FirstBurstLength=262144", line)
        self.assertIn("InitialR2T=No", line)
