"""The step order (pure: fake candidates), beside the tests that execute real plans
(tests/vhdmend/test_scan_cli.py)."""

from __future__ import annotations

import itertools

from vhdlib.scan.chains import ChainFigures
from vhdlib.scan.plan import Candidate, schedule

MiB = 1 << 20


def _cand(name: str, needs: int, takes: int, frees: int) -> Candidate:
    return Candidate(ChainFigures(name, []), ["vhdmend", "remediate", name], needs * MiB,
                     takes * MiB, frees * MiB, frees * MiB)


def _fits(order: list[Candidate], free: int) -> bool:
    for c in order:
        if c.needs > free:
            return False
        free += c.frees - c.takes
    return True


def test_each_step_fits_in_what_the_previous_ones_leave() -> None:
    cands = [_cand("a", 30, 30, 45), _cand("b", 50, 50, 10), _cand("c", 12, 12, 20),
             _cand("d", 14, 14, 0)]
    free = 32 * MiB
    order = schedule(cands, free)
    assert _fits(order, free)
    # Gainers first make the room: c (12 -> frees 20), then a; then b before d (after d
    # b would not fit any more).
    assert [c.chain.leaf for c in order[:2]] == ["c", "a"]
    assert {c.chain.leaf for c in order} == {"a", "b", "c", "d"}


def test_whenever_some_order_fits_them_all_the_schedule_does() -> None:
    cands = [_cand("a", 40, 40, 25), _cand("b", 30, 30, 5), _cand("c", 26, 26, 20),
             _cand("d", 10, 10, 2)]
    for free_mib in range(10, 120, 3):
        free = free_mib * MiB
        any_fits = any(_fits(list(p), free) for p in itertools.permutations(cands))
        order = schedule(cands, free)
        assert _fits(order, free)
        assert (len(order) == len(cands)) == any_fits, free_mib


def test_the_most_chains_are_fixed_when_not_all_fit() -> None:
    # In place (nothing freed): the two small ones rather than the one large one.
    cands = [_cand("big", 36, 34, 0), _cand("s1", 12, 12, 0), _cand("s2", 20, 20, 0)]
    order = schedule(cands, 40 * MiB)
    assert sorted(c.chain.leaf for c in order) == ["s1", "s2"]


def test_nothing_fits() -> None:
    assert schedule([_cand("a", 50, 50, 0)], 10 * MiB) == []
