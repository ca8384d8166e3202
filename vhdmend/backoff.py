"""The restart policy of a supervised process (``vhdmend up``): exponential backoff, capped,
forgiven after a healthy run, and a crash loop that gives up.

Pure bookkeeping with an injected clock, so the policy is unit-tested without processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """When to restart a process that exited on its own.

    The n-th exit in a row waits ``min(cap, base * 2 ** (n - 1))`` seconds before the
    restart. A process that stayed up ``reset_after`` seconds was healthy: its exit counts
    as the first again. ``give_up_after`` quick exits in a row are a crash loop: no more
    restarts (0: keep trying for ever, at the capped delay).
    """

    base: float = 1.0
    cap: float = 60.0
    reset_after: float = 60.0
    give_up_after: int = 10

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1 for the first exit in a row)."""
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


class Backoff:
    """The restart state of one process under a :class:`BackoffPolicy`."""

    def __init__(self, policy: BackoffPolicy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.failures = 0          # exits in a row, each within reset_after of its start
        self.started_at: float | None = None

    def started(self) -> None:
        """The process was (re)started now."""
        self.started_at = self.clock()

    def uptime(self) -> float:
        return 0.0 if self.started_at is None else self.clock() - self.started_at

    def exited(self) -> float | None:
        """Record an exit; the seconds to wait before restarting, or None to give up."""
        if self.uptime() >= self.policy.reset_after:
            self.failures = 0
        self.failures += 1
        if self.policy.give_up_after and self.failures > self.policy.give_up_after:
            return None
        return self.policy.delay(self.failures)

    @property
    def crash_loop(self) -> bool:
        """Several quick exits in a row: logged as a crash loop, not a one-off."""
        return self.failures >= 3
