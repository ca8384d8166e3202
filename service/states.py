"""Job states and the one table of the moves between them, with the rules of the actions.

Every state change goes through :meth:`service.store.JobStore.transition`, which refuses a
move this table does not list. The API's cancel/pause/resume, the task's waits, the
reaper's requeue and ``claim`` ask the functions below what to do, so a rule lives here
once::

    queued --claim--> running --pause--> pausing --chunk--> paused --resume--> queued
       |                 |  \\--cancel--> cancelling --chunk--> cancelled
       |                 \\--> succeeded / failed
       \\--pause--> paused;  --cancel--> cancelled (nothing on disk) or cancelling
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import Conflict

QUEUED, RUNNING, PAUSING, PAUSED, CANCELLING = (
    "queued", "running", "pausing", "paused", "cancelling")
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"

STATES = (QUEUED, RUNNING, PAUSING, PAUSED, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
#: States in which an execution may be running (it holds, or held, the job's lease).
ACTIVE = frozenset({RUNNING, PAUSING, CANCELLING})
#: States an execution may claim: queued starts, active ones continue (after a crash).
CLAIMABLE = frozenset({QUEUED, *ACTIVE})

#: state -> the states it may move to. Staying in a state (an update) is always allowed;
#: a finished job never changes state again. An active job may end in any terminal state:
#: the operation can finish (or fail) in the chunk in which a pause or cancel is asked for;
#: a queued one too (a plan answered at once, too many attempts, a cancel).
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, PAUSED, CANCELLING, *TERMINAL}),
    RUNNING: frozenset({QUEUED, PAUSING, PAUSED, CANCELLING, *TERMINAL}),
    PAUSING: frozenset({PAUSED, CANCELLING, *TERMINAL}),
    PAUSED: frozenset({QUEUED, CANCELLING, CANCELLED, FAILED}),
    CANCELLING: frozenset(TERMINAL),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def allowed(source: str, target: str) -> bool:
    """Whether a job may move from ``source`` to ``target`` (same state: an update)."""
    return source == target or target in TRANSITIONS.get(source, frozenset())


@dataclass(frozen=True)
class Move:
    """What an action does to a job in a given state."""

    #: The state the job must still be in when the move is written (guards races).
    source: str
    target: str
    #: Whether a worker must be nudged afterwards (it has work to do).
    nudge: bool = False


def action(name: str, state: str, *, has_checkpoint: bool) -> Move:
    """The move of ``cancel``, ``pause`` or ``resume`` from ``state``, or :class:`Conflict`.

    A cancel of a queued or paused job with a checkpoint (partial output on disk) goes
    through ``cancelling``: a worker resumes the journal and rolls it back.
    """
    if name == "cancel":
        if state in (QUEUED, PAUSED):
            if has_checkpoint:
                return Move(state, CANCELLING, nudge=True)
            return Move(state, CANCELLED)
        if state in (RUNNING, PAUSING):
            return Move(state, CANCELLING)
    elif name == "pause":
        if state == QUEUED:
            return Move(state, PAUSED)
        if state == RUNNING:
            return Move(state, PAUSING)
    elif name == "resume":
        if state == PAUSED:
            return Move(state, QUEUED, nudge=True)
    else:
        raise ValueError(f"unknown action {name!r}")
    raise Conflict(f"job is {state}; cannot {name} it in that state")


def on_claim(state: str) -> str | None:
    """The state a claimed job goes to (``None``: it keeps its state, e.g. cancelling)."""
    return RUNNING if state == QUEUED else None


def when_waiting(state: str) -> str | None:
    """Where an execution that must wait (a chain lock) leaves its job: queued again; a
    cancel asked for meanwhile is kept (``None``), a pause takes effect."""
    return {CANCELLING: None, PAUSING: PAUSED}.get(state, QUEUED)


def when_lease_lost(state: str) -> str | None:
    """Where the reaper moves an active job whose execution died: running is requeued,
    pausing becomes paused (its journal stays), cancelling stays for the next execution."""
    return {RUNNING: QUEUED, PAUSING: PAUSED}.get(state)
