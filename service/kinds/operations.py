"""The mutating kinds: one per vhdlib operation, run chunk by chunk under the chain lock."""

from __future__ import annotations

from service.kinds.kind import JobKind
from service.kinds.options import declared, names, operations, path_options

_SUMMARIES = {
    "merge": "Merge a differencing layer into its parent (or a given ancestor)",
    "compact": "Give back the space of blocks that read zero",
    "convert": "Copy a chain into one new disk (fixed or dynamic, VHD or VHDX)",
    "remediate": "Flatten a chain into one disk that takes the base's name",
}


def _kind(name: str) -> JobKind:
    options = declared(name)
    return JobKind(name, _SUMMARIES.get(name, name), options=names(options),
                   path_options=path_options(options), mutating=True, operation=name)


KINDS = tuple(_kind(name) for name in operations())
