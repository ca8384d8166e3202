"""One mutating kind per vhdlib operation, its options the operation's declarations."""

from __future__ import annotations

from service.kinds.kind import JobKind
from vhdlib.ops import OPERATIONS

_SUMMARIES = {
    "merge": "Merge a differencing layer into its parent (or a given ancestor)",
    "compact": "Give back the space of blocks that read zero",
    "convert": "Copy a chain into one new disk (fixed or dynamic, VHD or VHDX)",
    "remediate": "Flatten a chain into one disk that takes the base's name",
}


def _kind(name: str) -> JobKind:
    return JobKind(name, _SUMMARIES.get(name, name), declared=OPERATIONS[name].options,
                   mutating=True, operation=name)


KINDS = tuple(_kind(name) for name in OPERATIONS)
