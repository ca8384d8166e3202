"""Honest progress for a job (issue 8 D9): monotone, a rate smoothed over a time window
(a zero-skipping leap of unallocated space is not a speed), an ETA from that rate, and
100 % only when the job is done (``final``)."""

from __future__ import annotations

from collections import deque
from typing import Any

from vhdlib.progress import Progress

#: Seconds of history the rate is measured over.
WINDOW = 5.0
#: The most a running job shows: verification, a swap or a retire may still follow the copy.
RUNNING_MAX_PERCENT = 99.9


class ProgressMeter:
    """Rate (bytes/s over the last :data:`WINDOW` seconds) and ETA from progress reports."""

    def __init__(self, start_done: int = 0) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.done = start_done
        self.first: tuple[float, int] | None = None
        self.rate = 0.0
        self.total = 0

    def update(self, p: Progress, now: float) -> dict[str, Any]:
        done = max(self.done, p.overall_done)   # monotone, whatever a phase reports
        self.done, self.total = done, max(p.overall_total, done)
        if self.first is None:
            self.first = (now, done)
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        if now - t0 >= 0.5:
            self.rate = (done - d0) / (now - t0)
        total = self.total
        percent = round(100.0 * done / total, 2) if total else 0.0
        eta = (total - done) / self.rate if self.rate > 0 else None
        return {"done": done, "total": total, "percent": min(percent, RUNNING_MAX_PERCENT),
                "rate": round(self.rate, 1), "eta_seconds": None if eta is None else round(eta, 1),
                "phase_done": p.done, "phase_total": p.total}

    def final(self, now: float) -> dict[str, Any]:
        """The progress of a finished job: 100 %, the average rate of this execution."""
        total = self.total or self.done
        t0, d0 = self.first or (now, self.done)
        rate = (total - d0) / (now - t0) if now > t0 else self.rate
        return {"done": total, "total": total, "percent": 100.0, "rate": round(rate, 1),
                "eta_seconds": 0.0, "phase_done": total, "phase_total": total}
