"""A CPU-time bound for one call, so a parser that loops forever fails its test instead of
hanging the suite (hypothesis runs with ``deadline=None``: shared machines are slow).

SIGPROF counts the process's CPU time (ITIMER_PROF), so load on the machine does not make
it fire early, and it leaves SIGALRM to pytest-timeout's own per-test limit.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Hang(AssertionError):
    """The call used more CPU time than its bound."""


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` inside the block once it has used ``seconds`` of CPU time."""
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
