"""Progress reporting and cancellation through plain callbacks (no framework)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an operation stands: ``phase`` name and bytes ``done`` of ``total`` in it.

    ``overall_done``/``overall_total`` count every phase, for one progress bar.
    """

    operation: str
    phase: str
    done: int
    total: int
    overall_done: int
    overall_total: int

    @property
    def fraction(self) -> float:
        return self.overall_done / self.overall_total if self.overall_total else 1.0

    def to_dict(self) -> dict[str, object]:
        return {"operation": self.operation, "phase": self.phase, "done": self.done,
                "total": self.total, "overall_done": self.overall_done,
                "overall_total": self.overall_total}


#: Called after every chunk (and at each phase change).
ProgressCallback = Callable[[Progress], None]
#: Polled between chunks; returning True cancels the operation cleanly.
CancelCheck = Callable[[], bool]
#: Called with the checkpoint (a JSON-ready dict) after it is durable on disk.
CheckpointCallback = Callable[[dict[str, object]], None]
#: Called with a step name before every irreversible step; raise to stop (fencing).
IrreversibleHook = Callable[[str], None]
