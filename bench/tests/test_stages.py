"""The stage histograms: parsing the agent's exposition, differences, quantiles, report."""

import unittest

from spindlebench import report, stages, workloads
from spindlebench.perf import RunResult

WL = {w.name: w for w in workloads.WORKLOADS}


def exposition(io_counts: tuple[float, float, float], io_sum: float) -> str:
    """A cut-down /metrics text: the io stage with buckets 1, 2, 4 µs and +Inf."""
    a, b, c = io_counts
    return "\n".join([
        "# HELP spindle_stage_seconds Where SCSI commands' time goes",
        "# TYPE spindle_stage_seconds histogram",
        f'spindle_stage_seconds_bucket{{stage="io",le="0.000001"}} {a}',
        f'spindle_stage_seconds_bucket{{stage="io",le="0.000002"}} {b}',
        f'spindle_stage_seconds_bucket{{stage="io",le="0.000004"}} {c}',
        f'spindle_stage_seconds_bucket{{stage="io",le="+Inf"}} {c}',
        f'spindle_stage_seconds_sum{{stage="io"}} {io_sum}',
        f'spindle_stage_seconds_count{{stage="io"}} {c}',
        'spindle_scsi_inflight{lun="0",target="default/bench"} 0',
    ]) + "\n"


class StagesTest(unittest.TestCase):
    def test_a_run_is_the_difference_of_two_scrapes(self):
        before = stages.parse(exposition((1, 1, 2), 3e-6))
        after = stages.parse(exposition((1, 11, 102), 303e-6))
        d = stages.delta(after, before)["io"]
        self.assertEqual(d.count, 100)
        self.assertAlmostEqual(d.mean(), 3e-6)
        # 10 of 100 in (1, 2] µs, 90 in (2, 4] µs: the median lies in the upper bucket.
        self.assertAlmostEqual(d.quantile(0.5), 2e-6 + 2e-6 * (50 - 10) / 90)
        self.assertAlmostEqual(d.quantile(0.05), 1e-6 + 1e-6 * 5 / 10)
        self.assertIsNone(stages.Hist().quantile(0.5))

    def test_the_report_prints_each_stage_of_spindle_runs(self):
        runs = []
        for rep in range(2):
            r = RunResult("4k-randread-qd32", "spindle", rep, "cmd", iops=1.0)
            r.stages = stages.to_json(stages.parse(exposition((0, 0, 50), 150e-6)))
            runs.append(r)
        rep = report.Report("t", "m", [("spindle", "Spindle")], (WL["4k-randread-qd32"],),
                            runs, 2, [], [])
        text = report.render(rep)
        self.assertIn("Where Spindle's time goes", text)
        self.assertIn("| io | 100 | 3.0 |", text)


if __name__ == "__main__":
    unittest.main()
