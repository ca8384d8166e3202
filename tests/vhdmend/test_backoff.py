"""The restart policy of ``vhdmend up`` (vhdmend.backoff) on a fake clock."""

from __future__ import annotations

from vhdmend.backoff import Backoff, BackoffPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crash_after(b: Backoff, clock: Clock, uptime: float) -> float | None:
    b.started()
    clock.now += uptime
    return b.exited()


def test_quick_exits_double_the_delay_up_to_the_cap():
    clock = Clock()
    b = Backoff(BackoffPolicy(base=1, cap=10, reset_after=60, give_up_after=0), clock)
    delays = [crash_after(b, clock, 0.5) for _ in range(7)]
    assert delays == [1, 2, 4, 8, 10, 10, 10]
    assert b.crash_loop and b.failures == 7


def test_a_process_that_stayed_up_is_forgiven():
    clock = Clock()
    b = Backoff(BackoffPolicy(base=1, cap=60, reset_after=30, give_up_after=5), clock)
    assert [crash_after(b, clock, 1) for _ in range(3)] == [1, 2, 4]
    assert b.crash_loop
    # Up 30 s (healthy): its exit is the first in a row again
    assert crash_after(b, clock, 30) == 1
    assert b.failures == 1 and not b.crash_loop
    # 29.9 s is not healthy: the count goes on
    assert crash_after(b, clock, 29.9) == 2


def test_a_crash_loop_gives_up_after_the_documented_count():
    clock = Clock()
    b = Backoff(BackoffPolicy(base=0.5, cap=4, reset_after=60, give_up_after=3), clock)
    assert [crash_after(b, clock, 2) for _ in range(3)] == [0.5, 1, 2]
    assert crash_after(b, clock, 2) is None          # the 4th quick exit in a row


def test_zero_means_keep_trying_at_the_cap():
    clock = Clock()
    b = Backoff(BackoffPolicy(base=1, cap=3, reset_after=60, give_up_after=0), clock)
    assert all(crash_after(b, clock, 0) is not None for _ in range(100))
    assert crash_after(b, clock, 0) == 3


def test_an_exit_before_any_start_counts_as_quick():
    b = Backoff(BackoffPolicy(base=2), Clock())
    assert b.uptime() == 0 and b.exited() == 2
