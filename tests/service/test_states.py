"""The transitions table and the action rules (service.states)."""

from __future__ import annotations

import pytest

from service import states
from service.errors import Conflict


def test_a_finished_job_never_changes_state_again() -> None:
    for done in states.TERMINAL:
        for other in states.STATES:
            assert states.allowed(done, other) == (other == done)


def test_every_listed_move_targets_a_known_state() -> None:
    assert set(states.TRANSITIONS) == set(states.STATES)
    for targets in states.TRANSITIONS.values():
        assert targets <= set(states.STATES)


def test_a_paused_job_cannot_run_without_being_resumed() -> None:
    assert not states.allowed("paused", "running")
    assert not states.allowed("cancelling", "queued")
    assert states.allowed("paused", "queued")


@pytest.mark.parametrize("action,state,checkpoint,target,nudge", [
    ("cancel", "queued", False, "cancelled", False),
    ("cancel", "queued", True, "cancelling", True),
    ("cancel", "paused", True, "cancelling", True),
    ("cancel", "paused", False, "cancelled", False),
    ("cancel", "running", True, "cancelling", False),
    ("cancel", "pausing", True, "cancelling", False),
    ("pause", "queued", False, "paused", False),
    ("pause", "running", True, "pausing", False),
    ("resume", "paused", True, "queued", True),
])
def test_actions(action: str, state: str, checkpoint: bool, target: str, nudge: bool) -> None:
    move = states.action(action, state, has_checkpoint=checkpoint)
    assert (move.source, move.target, move.nudge) == (state, target, nudge)
    assert states.allowed(move.source, move.target)


@pytest.mark.parametrize("action,state", [
    ("cancel", "cancelling"), ("cancel", "succeeded"), ("pause", "paused"),
    ("pause", "cancelling"), ("resume", "running"), ("resume", "queued")])
def test_an_action_the_state_does_not_allow_is_a_conflict(action: str, state: str) -> None:
    with pytest.raises(Conflict):
        states.action(action, state, has_checkpoint=False)


def test_waits_and_lost_leases_keep_what_was_asked_for() -> None:
    assert states.when_waiting("running") == "queued"
    assert states.when_waiting("pausing") == "paused"
    assert states.when_waiting("cancelling") is None
    assert states.when_lease_lost("running") == "queued"
    assert states.when_lease_lost("pausing") == "paused"
    assert states.when_lease_lost("cancelling") is None
    assert states.on_claim("queued") == "running" and states.on_claim("cancelling") is None
