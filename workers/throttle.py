"""Pace a job's I/O to a byte rate, between chunks (``max_rate`` in the settings).

A storage host serves VMs while it remediates their neighbours' chains; an unthrottled
merge takes the whole disk bandwidth. The engine calls back after every checkpoint, so the
pause lands where a ``kill -9`` loses nothing and cancel/pause are checked right after.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Sleep so that bytes done since the first report stay under ``rate`` bytes/s."""

    #: Longest single pause, so cancel, pause and lease checks stay responsive.
    MAX_PAUSE = 2.0

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.clock, self.sleep = clock, sleep
        self._t0: float | None = None
        self._done0 = 0

    def pace(self, done: int) -> float:
        """Called with the bytes done so far; returns the seconds slept."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        if self._t0 is None:
            # A resumed execution starts counting where it starts, not at zero.
            self._t0, self._done0 = now, done
            return 0.0
        # Bytes done since the start, at ``rate``, should take this long: wait the rest.
        wait = (done - self._done0) / self.rate - (now - self._t0)
        wait = min(self.MAX_PAUSE, wait)
        if wait <= 0:
            return 0.0
        self.sleep(wait)
        return wait
