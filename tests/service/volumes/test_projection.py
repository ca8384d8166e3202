"""The projection and the risk rules (pure arithmetic)."""

from __future__ import annotations

import random

import pytest

from service.volumes.projection import (
    Sample,
    Thresholds,
    assess,
    duration,
    project,
    slope,
)

GIB = 1 << 30
T = Thresholds(reserve=2 * GIB)


def falling(start: int, per_hour: int, hours: float, step: float = 300.0,
            t0: float = 1_000_000.0) -> list[Sample]:
    n = int(hours * 3600 / step) + 1
    return [Sample(t0 + i * step, int(start - per_hour * i * step / 3600), 0, 0)
            for i in range(n)]


def test_slope_is_least_squares() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    # Noise around y = -4x + 10: the fit recovers the slope.
    rng = random.Random(1)
    pts = [(float(x), -4.0 * x + 10 + rng.uniform(-1, 1)) for x in range(200)]
    assert slope(pts) == pytest.approx(-4.0, rel=0.01)
    assert slope([(1, 1)]) is None
    assert slope([(1, 1), (1, 2)]) is None


def test_steady_fall_gives_the_true_time_to_reserve() -> None:
    # 20 GiB free, 1 GiB/h lost: the reserve (2 GiB) is 18 h away from the start.
    samples = falling(20 * GIB, GIB, hours=8)
    p = project(samples, T.reserve)
    assert p.rate == pytest.approx(-GIB / 3600, rel=1e-6)
    left = samples[-1].free_bytes - T.reserve
    assert p.seconds_to_full == pytest.approx(left / (GIB / 3600), rel=1e-6)
    assert p.seconds_to_full == pytest.approx(10 * 3600, rel=0.001)
    # 6 h window: 73 samples at 5 min, not the 8 h of history.
    assert p.samples == 73


def test_window_ignores_older_history() -> None:
    # Rising for a day, then falling for the last 6 h: only the fall counts.
    rising = [Sample(i * 600.0, 10 * GIB + i * 1000, 0, 0) for i in range(144)]
    t0 = rising[-1].t + 600
    fall = falling(rising[-1].free_bytes, GIB // 2, hours=6, step=600, t0=t0)
    p = project(rising + fall, T.reserve)
    assert p.rate == pytest.approx(-(GIB // 2) / 3600, rel=0.01)


def test_not_falling_is_null() -> None:
    flat = [Sample(i * 300.0, 10 * GIB, 0, 0) for i in range(10)]
    assert project(flat, T.reserve).seconds_to_full is None
    rising = [Sample(i * 300.0, 10 * GIB + i, 0, 0) for i in range(10)]
    assert project(rising, T.reserve).seconds_to_full is None
    assert project(flat[:1], T.reserve).rate is None
    assert project([], T.reserve).seconds_to_full is None


def test_risk_rules() -> None:
    flat = project([Sample(i * 300.0, 50 * GIB, 0, 0) for i in range(10)], T.reserve)
    ok = assess(50 * GIB, 10 * GIB, flat, T)
    assert ok.risk == "ok" and "not falling" in ok.reasons[0]
    # Over-commit (part 1's rule) -> warning.
    over = assess(50 * GIB, 60 * GIB, flat, T)
    assert over.risk == "warning" and "over-committed" in over.reasons[0]
    # Below the reserve -> critical, whatever the trend.
    low = assess(GIB, 0, flat, T)
    assert low.risk == "critical" and "below the reserve" in low.reasons[0]
    # Projected within 24 h -> warning; within 4 h -> critical.
    in_10h = project(falling(20 * GIB, GIB, hours=8), T.reserve)
    w = assess(in_10h.free_bytes, 0, in_10h, T)
    assert w.risk == "warning"
    assert w.reasons[0].endswith("reaches the reserve (2.0 GiB) in 10 h (within 1 d)")
    in_3h = project(falling(7 * GIB, GIB, hours=2), T.reserve)
    c = assess(in_3h.free_bytes, 0, in_3h, T)
    assert c.risk == "critical" and "(within 4 h)" in c.reasons[0]
    # Far away (> 24 h): ok, the trend still said.
    slow = project(falling(500 * GIB, GIB, hours=6), T.reserve)
    far = assess(slow.free_bytes, 0, slow, T)
    assert far.risk == "ok" and "reaches the reserve (2.0 GiB) in" in far.reasons[0]


def test_thresholds_are_settings() -> None:
    in_10h = project(falling(20 * GIB, GIB, hours=8), T.reserve)
    strict = Thresholds(reserve=2 * GIB, critical_within=12 * 3600)
    assert assess(in_10h.free_bytes, 0, in_10h, strict).risk == "critical"
    lax = Thresholds(reserve=2 * GIB, warning_within=3600)
    assert assess(in_10h.free_bytes, 0, in_10h, lax).risk == "ok"


def test_duration_words() -> None:
    assert duration(3 * 3600 + 600) == "3 h 10 min"
    assert duration(45 * 60) == "45 min"
    assert duration(6 * 3600) == "6 h"
    assert duration(2 * 86400 + 4 * 3600) == "2 d 4 h"


def test_thresholds_from_the_environment() -> None:
    from service import config
    from service.volumes.projection import thresholds_of
    s = config.load({"VHDMEND_RESERVE": str(3 * GIB), "VHDMEND_CRITICAL_WITHIN": "60",
                     "VHDMEND_SCAN_INTERVAL": "0",
                     "VHDMEND_ALERT_URLS": "http://a/x, http://b/y"})
    t = thresholds_of(s)
    assert (t.reserve, t.critical_within, t.window) == (3 * GIB, 60.0, 6 * 3600.0)
    assert s.scan_interval == 0 and s.alert_urls == ("http://a/x", "http://b/y")
    assert config.load({}).reserve == 2 * GIB and config.load({}).scan_interval == 300
