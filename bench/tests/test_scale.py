"""The scale benchmark: the initiator's PDUs, its read checks against a scripted target, the
fairness statistics and the metrics parsing."""

import asyncio
import contextlib
import io
import struct
import unittest

from spindlebench import busy, cli, fairness, promtext, scale, scalereport
from spindletools.iscsi import pdu, reader
from spindletools.iscsi.pdu import BHS, parse_header


class PduTest(unittest.TestCase):
    def test_read10_carries_lun_tag_length_and_cdb(self):
        raw = reader.read10_command(lun=3, itt=0x1234, cmdsn=7, exp_statsn=9, lba=24,
                                    blocks=8, block_size=512)
        self.assertEqual(len(raw), BHS)
        self.assertEqual(raw[0], 0x01)
        self.assertEqual(raw[1], 0xC1)  # final, read, simple
        self.assertEqual(raw[8:16], bytes([0, 3, 0, 0, 0, 0, 0, 0]))
        itt, edtl, cmdsn, expstat = struct.unpack_from(">IIII", raw, 16)
        self.assertEqual((itt, edtl, cmdsn, expstat), (0x1234, 4096, 7, 9))
        self.assertEqual(raw[32:42], bytes([0x28, 0, 0, 0, 0, 24, 0, 0, 8, 0]))

    def test_login_request_pads_its_text(self):
        raw = pdu.login_request(b"\x80\0\0\0\0\1", 0, 1, 0, 0, 1,
                                {"InitiatorName": "iqn.x", "AuthMethod": "None"})
        self.assertEqual(raw[0], 0x43)
        self.assertEqual(raw[1], 0x81)  # transit, CSG 0, NSG 1
        length = int.from_bytes(raw[5:8], "big")
        self.assertEqual(raw[BHS:BHS + length], b"InitiatorName=iqn.x\0AuthMethod=None\0")
        self.assertEqual(len(raw) % 4, 0)
        self.assertEqual(pdu.parse_text(raw[BHS:BHS + length]),
                         {"InitiatorName": "iqn.x", "AuthMethod": "None"})

    def test_header_fields(self):
        bhs = bytearray(BHS)
        bhs[0], bhs[1], bhs[3] = 0x25, 0x81, 0
        bhs[5:8] = (4096).to_bytes(3, "big")
        struct.pack_into(">IIIIIIII", bhs, 16, 5, 0xFFFFFFFF, 10, 11, 40, 0, 0, 0)
        h = parse_header(bytes(bhs))
        self.assertEqual((h.opcode, h.data_len, h.itt, h.statsn, h.max_cmdsn),
                         (0x25, 4096, 5, 10, 40))
        self.assertTrue(h.final and h.has_status)
        with self.assertRaises(pdu.ProtocolError):
            parse_header(bytes(bhs[:40]))
        bhs[4] = 1
        with self.assertRaises(pdu.ProtocolError):
            parse_header(bytes(bhs))

    def test_sense_and_serial_numbers(self):
        fixed = bytes([0x70, 0, 0x06] + [0] * 9 + [0x29, 0x00, 0, 0, 0, 0])
        self.assertEqual(pdu.parse_sense(len(fixed).to_bytes(2, "big") + fixed),
                         (6, 0x29, 0))
        desc = bytes([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0])
        self.assertEqual(pdu.parse_sense(len(desc).to_bytes(2, "big") + desc),
                         (5, 0x24, 0))
        self.assertIsNone(pdu.parse_sense(b""))
        self.assertTrue(pdu.serial_lt(0xFFFFFFFF, 0))
        self.assertFalse(pdu.serial_lt(5, 5))
        self.assertFalse(pdu.serial_lt(6, 5))


class ScriptedTarget:
    """A target on loopback that logs any initiator in and answers READ(10) from `blocks`
    (name → block → bytes); `unit_attention` answers each session's first read with UNIT
    ATTENTION, as a real target does after a reset."""

    def __init__(self, blocks, unit_attention=False):
        self.blocks, self.unit_attention = blocks, unit_attention
        self.served = 0

    async def handle(self, reader, writer):
        statsn, target, first = 0, None, True
        try:
            while True:
                h = parse_header(await reader.readexactly(BHS))
                data = await reader.readexactly(pdu.pad4(h.data_len))
                rsp = bytearray(BHS)
                struct.pack_into(">III", rsp, 24, statsn, 1, 1_000_000)
                statsn += 1
                rsp[16:20] = h.raw[16:20]
                if h.opcode == pdu.LOGIN_REQ:
                    keys = pdu.parse_text(data[:h.data_len])
                    target = keys.get("TargetName", target)
                    rsp[0], rsp[1] = pdu.LOGIN_RSP, h.flags
                    writer.write(pdu.pdu(rsp))
                elif h.opcode == pdu.SCSI_CMD:
                    lba = struct.unpack_from(">I", h.raw, 34)[0]
                    if first and self.unit_attention:
                        first = False
                        sense = bytes([0x70, 0, 0x06] + [0] * 9 + [0x29, 0, 0, 0, 0, 0])
                        rsp[0], rsp[1], rsp[3] = pdu.SCSI_RSP, 0x80, 0x02
                        writer.write(pdu.pdu(rsp, len(sense).to_bytes(2, "big") + sense))
                        continue
                    block = self.blocks[target][lba // 8]
                    rsp[0], rsp[1] = pdu.DATA_IN, 0x81
                    writer.write(pdu.pdu(rsp, block))
                    self.served += 1
                elif h.opcode == 0x06:
                    rsp[0], rsp[1] = pdu.LOGOUT_RSP, 0x80
                    writer.write(pdu.pdu(rsp))
                    await writer.drain()
                    return
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def block_of(name, b):
    return reader.stamp(name, b).ljust(reader.BLOCK, b"\0")


class SessionTest(unittest.TestCase):
    def run_against(self, target, names, qd=2):
        async def go():
            server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            spec = reader.Spec(host="127.0.0.1", port=port, seconds=0.3, qd=qd,
                                  span_blocks=4, targets=[
                                      {"name": n, "iqn": f"iqn.t:{n}", "lun": 0}
                                      for n in names], extra={"warmup": 0.05})
            try:
                return await reader.run_worker(spec)
            finally:
                server.close()
        return asyncio.run(go())

    def test_reads_are_counted_and_checked(self):
        target = ScriptedTarget({f"iqn.t:{n}": [block_of(n, b) for b in range(4)]
                                 for n in ("a", "b")}, unit_attention=True)
        results = self.run_against(target, ["a", "b"])
        for r in results:
            self.assertIsNone(r.error)
            self.assertGreater(r.reads, 0)
            self.assertLessEqual(r.reads, r.total_reads)
            self.assertEqual(r.bytes, r.reads * reader.BLOCK)
            self.assertEqual(r.unit_attentions, 1)  # the session's first read, sent again
        self.assertEqual(sum(r.total_reads for r in results), target.served)

    def test_a_wrong_block_is_an_error(self):
        # target b's file holds a's stamps: every read of b must fail the check
        blocks = {"iqn.t:a": [block_of("a", b) for b in range(4)],
                  "iqn.t:b": [block_of("a", b) for b in range(4)]}
        results = {r.target: r for r in self.run_against(ScriptedTarget(blocks), ["a", "b"])}
        self.assertIsNone(results["a"].error)
        self.assertIn("not its stamp", results["b"].error)
        self.assertEqual(results["b"].total_reads, 0)

    def test_a_refused_login_is_reported(self):
        async def refuse(reader, writer):
            h = parse_header(await reader.readexactly(BHS))
            await reader.readexactly(pdu.pad4(h.data_len))
            rsp = bytearray(BHS)
            rsp[0], rsp[36], rsp[37] = pdu.LOGIN_RSP, 2, 3  # target not found
            writer.write(pdu.pdu(rsp))
            await writer.drain()
            writer.close()

        target = ScriptedTarget({})
        target.handle = refuse
        (r,) = self.run_against(target, ["gone"])
        self.assertIn("refused: status class 2, detail 3", r.error)
        self.assertEqual(r.login_retries, 0, "a refusal is an answer, not a dropped login")

    def test_a_dropped_login_is_tried_again(self):
        target = ScriptedTarget({"iqn.t:a": [block_of("a", b) for b in range(4)]})
        serve, drops = target.handle, []

        async def drop_first(reader, writer):
            if not drops:
                drops.append(1)
                writer.close()  # as a full login table does
                return
            await serve(reader, writer)

        target.handle = drop_first
        (r,) = self.run_against(target, ["a"])
        self.assertIsNone(r.error)
        self.assertEqual(r.login_retries, 1)
        self.assertGreater(r.reads, 0)


class FairnessTest(unittest.TestCase):
    def test_percentile(self):
        self.assertEqual(fairness.percentile([3, 1, 2], 50), 2)
        self.assertEqual(fairness.percentile([0, 10], 25), 2.5)
        self.assertEqual(fairness.percentile([7], 99), 7)
        with self.assertRaises(ValueError):
            fairness.percentile([], 50)
        with self.assertRaises(ValueError):
            fairness.percentile([1], 101)

    def test_even_share(self):
        f = fairness.fairness([100, 100, 100, 100], 2.0)
        self.assertEqual((f.total_iops, f.fair_share, f.worst_ratio), (200, 50, 1.0))
        self.assertAlmostEqual(f.jain, 1.0)
        self.assertTrue(f.fair)

    def test_a_starved_target_fails_the_bar(self):
        f = fairness.fairness([300, 300, 300, 100, 0], 1.0)
        self.assertEqual(f.fair_share, 200)
        self.assertEqual(f.below_half, 1)  # 100 is exactly half, not below; 0 is
        self.assertEqual(f.starved, 1)
        self.assertFalse(f.fair)
        self.assertEqual(f.worst_ratio, 0)
        self.assertAlmostEqual(f.jain, 1000 ** 2 / (5 * 280_000))
        self.assertEqual(fairness.fairness([10, 4], 1).below_half, 0)
        self.assertEqual(fairness.fairness([10, 3], 1).below_half, 1)

    def test_mixed_demand_spreads_heavy_targets_and_reports_each_group(self):
        targets = [busy.BusyTarget(f"t{i}", f"iqn.t:{i}", 0) for i in range(20)]
        mixed = scale.mixed_targets(targets, 10, 8)
        self.assertEqual([t.name for t in mixed if t.qd == 8], ["t0", "t10"])
        self.assertTrue(all(t.qd == 0 for t in mixed if t.name not in ("t0", "t10")))
        # one window of 1 s: heavy targets read 300, light ones 100 (one light one 40)
        reads = {t.name: 300 if t.qd else 100 for t in mixed}
        reads["t5"] = 40
        w = type("W", (), {})()
        w.reads, w.seconds, w.latency_ms = reads, 1.0, 1.0
        w.p99_ms = {n: 20.0 if n in ("t0", "t10") else 2.0 for n in reads}
        w.p99_ms["t5"] = 5.0
        w.fair = fairness.fairness(list(reads.values()), 1.0)
        point = scale.Point("spindle", 1000, 20)
        point.mixed = busy.BusyResult(windows=[w])
        point.heavy = frozenset({"t0", "t10"})
        (row,) = scalereport.mixed_rows([point], 8)
        share = sum(reads.values()) / 20  # 119
        self.assertEqual(row[2], "2 at QD 8")
        self.assertEqual(row[4], "100 (100–100) / 40 (40–40)")  # light: median / slowest
        self.assertEqual(row[5], f"{40 / share:.2f} ({40 / share:.2f}–{40 / share:.2f})")
        self.assertEqual(row[6], "300 (300–300) / 300 (300–300)")
        self.assertEqual(row[8], "1")  # t5 is below half of 119
        self.assertEqual(row[11], "2.00 (2.00–2.00) / 5.00 (5.00–5.00)")  # light p99
        self.assertEqual(row[12], "20.00 (20.00–20.00) / 20.00 (20.00–20.00)")  # heavy p99

    def test_spread_text(self):
        s = fairness.Spread.of([1.0, 2.0, 10.0])
        self.assertEqual(s.text(1, " %"), "2.0 % (1.0–10.0)")
        self.assertEqual(s.n, 3)

    def test_mismatches(self):
        self.assertEqual(fairness.mismatches({"a": 5}, {"a": 5}), [])
        self.assertEqual(fairness.mismatches({"a": 5, "b": 1}, {"a": 4}),
                         ["a: the initiator checked 5 reads, the agent counted 4",
                          "b: the initiator checked 1 reads, the agent counted 0"])


METRICS = """# HELP spindle_targets Targets served
# TYPE spindle_targets gauge
spindle_targets 10000
spindle_scsi_commands_total{lun="0",opcode="READ_10",status="GOOD",target="default/scale7"} 12
spindle_scsi_commands_total{lun="0",opcode="READ_16",status="GOOD",target="default/scale7"} 3
spindle_scsi_commands_total{lun="0",opcode="READ_10",status="CHECK_CONDITION",target="default/scale7"} 1
spindle_scsi_commands_total{lun="0",opcode="INQUIRY",status="GOOD",target="default/scale8"} 2
spindle_sessions{target="default/scale7"} 1
"""


class MetricsTest(unittest.TestCase):
    def test_reads_by_target(self):
        self.assertEqual(promtext.reads_by_target(METRICS), {"default/scale7": 15})

    def test_gauge(self):
        self.assertEqual(promtext.gauge(METRICS, "spindle_targets"), 10000)
        self.assertIsNone(promtext.gauge(METRICS, "spindle_sessions"))  # labelled
        self.assertIsNone(promtext.gauge("", "spindle_targets"))


class OptionsTest(unittest.TestCase):
    def test_busy_targets_are_spread(self):
        self.assertEqual(scale.busy_indices(10, 5), [0, 2, 4, 6, 8])
        self.assertEqual(len(scale.busy_indices(10000, 1000)), 1000)
        self.assertEqual(scale.busy_indices(3, 3), [0, 1, 2])

    def test_descriptor_budget_mirrors_the_agent(self):
        # The agent keeps max(limit / 8, 32) free; a served Device holds one.
        self.assertEqual(scale.fd_reserve(20000), 2500)
        self.assertEqual(scale.fd_reserve(128), 32)
        self.assertEqual(scale.targets_within(20000), 20000 - 2500 - scale.FDS_BASE)
        self.assertEqual(scale.targets_within(64), 0)
        for n in (1, 20, 200, 500, 8000, 10000, 100000):
            limit = scale.fds_needed(n)
            self.assertGreaterEqual(scale.targets_within(limit), n, n)
            self.assertLess(scale.targets_within(limit - 40), n, n)  # not far above

    def test_defaults_and_sizes(self):
        a = scale.parse_args([])
        self.assertEqual((a.targets, a.busy, a.tgt_targets, a.size), (10000, 1000, 500, 16 << 20))
        q = scale.parse_args(["--quick"])
        self.assertEqual((q.targets, q.busy, q.reps), (200, 20, 1))
        self.assertEqual(cli.byte_size("1GiB"), 1 << 30)
        self.assertEqual(cli.byte_size("4096"), 4096)
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            scale.parse_args(["--busy", "20", "--targets", "10"])


if __name__ == "__main__":
    unittest.main()


class ReaderP99Test(unittest.TestCase):
    def test_nearest_rank(self):
        from spindletools.iscsi import reader
        self.assertEqual(reader.p99([]), 0.0)
        self.assertEqual(reader.p99([3.0]), 3.0)
        self.assertEqual(reader.p99([float(i) for i in range(1, 101)]), 99.0)
        self.assertEqual(reader.p99([float(i) for i in range(1, 201)]), 198.0)
