"""Where a volume's free space is heading, and how worried to be (pure arithmetic).

The rate is the least-squares slope of free bytes over time within a window (default 6 h,
as Prometheus' ``predict_linear`` rules use it); ``seconds_to_full`` is when the fitted
line reaches the reserve, ``None`` when free space is not falling. The risk adds the trend
to the scan's own rule (:func:`vhdlib.scan.volumes.rate`):

* ``critical``: free below the reserve, or projected to reach it within 4 h;
* ``warning``: the disks can grow past the free space above the reserve (over-commit), or
  projected to reach the reserve within 24 h;
* ``ok`` otherwise. Every rating carries its reasons in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vhdlib.scan.volumes import _human
from vhdlib.scan.volumes import rate as scan_rate

if TYPE_CHECKING:
    from service.config import Settings

RISKS = ("ok", "warning", "critical")
#: The numeric risk of the metrics (``vhdmend_volume_risk``).
RISK_LEVEL = {"ok": 0, "warning": 1, "critical": 2}

DEFAULT_WINDOW = 6 * 3600.0
DEFAULT_CRITICAL_WITHIN = 4 * 3600.0
DEFAULT_WARNING_WITHIN = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a volume: when, free bytes, bytes held by disks, their growth."""

    t: float
    free_bytes: int
    disk_bytes: int
    growth_bytes: int


@dataclass(frozen=True)
class Thresholds:
    """The projection's settings."""

    reserve: int = 2 << 30
    window: float = DEFAULT_WINDOW
    critical_within: float = DEFAULT_CRITICAL_WITHIN
    warning_within: float = DEFAULT_WARNING_WITHIN


@dataclass(frozen=True)
class Projection:
    """The trend of one volume at ``t``: rate in bytes/s (negative: filling)."""

    t: float
    free_bytes: int
    rate: float | None
    seconds_to_full: float | None
    samples: int

    def to_dict(self) -> dict[str, object]:
        return {"rate_bytes_per_second": None if self.rate is None else round(self.rate, 3),
                "seconds_to_full": (None if self.seconds_to_full is None
                                    else round(self.seconds_to_full, 1)),
                "window_samples": self.samples}


@dataclass(frozen=True)
class Assessment:
    """A volume's risk now, with its reasons and the projection behind it."""

    risk: str
    reasons: list[str] = field(default_factory=list)
    projection: Projection | None = None


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points; ``None`` with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx <= 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def project(samples: Sequence[Sample], reserve: int, *, window: float = DEFAULT_WINDOW,
            now: float | None = None) -> Projection:
    """The trend over the samples of the last ``window`` seconds (samples in time order).

    The rate is fitted over the window; the time to the reserve is measured from the
    newest sample's free space (what the volume holds now), at the fitted rate.
    """
    if not samples:
        return Projection(now or 0.0, 0, None, None, 0)
    last = samples[-1]
    now = last.t if now is None else now
    recent = [(s.t - now, float(s.free_bytes)) for s in samples if s.t >= now - window]
    r = slope(recent)
    stf: float | None = None
    if r is not None and r < 0:
        stf = max(0.0, (last.free_bytes - reserve) / -r)
    return Projection(now, last.free_bytes, r, stf, len(recent))


def duration(seconds: float) -> str:
    """``3 h 10 min``, ``45 min``, ``2 d 4 h`` (for reasons and alert texts)."""
    m = int(seconds // 60)
    d, h, mins = m // 1440, (m // 60) % 24, m % 60
    if d:
        return f"{d} d {h} h" if h else f"{d} d"
    if h:
        return f"{h} h {mins} min" if mins else f"{h} h"
    return f"{mins} min"


def assess(free: int, growth: int, projection: Projection | None,
           thresholds: Thresholds) -> Assessment:
    """The risk of a volume: the scan's rule (reserve, over-commit) plus the trend."""
    base, reasons = scan_rate(free, growth, thresholds.reserve)
    risk = base
    if base == "ok":
        reasons = []  # the scan's "ok" sentence is restated below with the trend
    stf = projection.seconds_to_full if projection is not None else None
    if stf is not None and projection is not None and projection.rate is not None:
        trend = (f"at the last {duration(thresholds.window)}'s rate "
                 f"({_human(int(-projection.rate * 3600))}/h), free space reaches the "
                 f"reserve ({_human(thresholds.reserve)}) in {duration(stf)}")
        if free >= thresholds.reserve and stf <= thresholds.critical_within:
            risk = "critical"
            reasons.append(trend + f" (within {duration(thresholds.critical_within)})")
        elif free >= thresholds.reserve and stf <= thresholds.warning_within:
            if risk == "ok":
                risk = "warning"
            reasons.append(trend + f" (within {duration(thresholds.warning_within)})")
        elif free >= thresholds.reserve:
            reasons.append(trend)
    if risk == "ok":
        headroom = free - thresholds.reserve
        reasons.append(f"the disks can grow by {_human(growth)}; {_human(headroom)} is free "
                       "above the reserve" + ("" if stf is not None else
                                              "; free space is not falling"))
    return Assessment(risk, reasons, projection)


def thresholds_of(settings: Settings) -> Thresholds:
    """The thresholds configured in :class:`service.config.Settings`."""
    return Thresholds(reserve=settings.reserve, window=settings.projection_window,
                      critical_within=settings.critical_within,
                      warning_within=settings.warning_within)
