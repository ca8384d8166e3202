"""Honest progress (issue 8 D9): monotone, smoothed rate and ETA, 100 % only when done."""

from __future__ import annotations

from vhdlib.progress import Progress
from workers.meter import RUNNING_MAX_PERCENT, ProgressMeter

GB = 1 << 30


def _p(done: int, total: int = 10 * GB, phase_done: int | None = None) -> Progress:
    return Progress("convert", "copy", done if phase_done is None else phase_done, total,
                    done, total)


def test_percent_never_goes_back_and_is_not_100_while_running():
    m = ProgressMeter()
    shown = [m.update(_p(d), t)["percent"]
             for t, d in [(0, 0), (1, 3 * GB), (2, 2 * GB), (3, 10 * GB)]]
    assert shown == sorted(shown) and shown[-1] == RUNNING_MAX_PERCENT
    final = m.final(4.0)
    assert final["percent"] == 100.0 and final["eta_seconds"] == 0.0


def test_a_zero_skipping_leap_is_not_a_speed_and_the_final_rate_is_the_average():
    m = ProgressMeter()
    t = 0.0
    for i in range(20):      # 100 MB/s for 10 s
        m.update(_p(i * 50_000_000), t)
        t += 0.5
    steady = m.update(_p(20 * 50_000_000), t)["rate"]
    assert 80e6 < steady < 120e6
    leap = m.update(_p(9 * GB), t + 0.1)   # 8 GB of unallocated space skipped at once
    assert leap["rate"] < 2.5 * GB         # a 5 s window, not 80 GB/s over 0.1 s
    etas = [m.update(_p(9 * GB + i * 50_000_000), t + 0.1 + 0.5 * (i + 1))["eta_seconds"]
            for i in range(12)]
    assert all(e is not None and e >= 0 for e in etas)
    final = m.final(t + 7)
    assert final["rate"] == round(10 * GB / (t + 7), 1) and final["rate"] < 2 * GB


def test_a_resumed_meter_starts_where_the_job_was():
    m = ProgressMeter(start_done=4 * GB)
    assert m.update(_p(3 * GB), 0.0)["done"] == 4 * GB
