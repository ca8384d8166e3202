"""Extents: what backs each byte range of a layer or of a whole chain.

A *segment* describes one layer (one file); an *extent* describes the resolved chain.
Both are half-open byte ranges in the virtual disk ``[offset, offset + length)``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class SegmentState(enum.Enum):
    """How one layer defines a range of sectors."""

    #: The bytes live in this layer's file at ``file_offset``.
    PRESENT = "present"
    #: This layer says the range reads as zeros (hides any parent), e.g. VHDX PAYLOAD_BLOCK_ZERO.
    ZERO = "zero"
    #: This layer does not define the range: the parent's content, or zeros without a parent.
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Segment:
    """A range of one layer. ``file_offset`` is meaningful only when PRESENT."""

    offset: int
    length: int
    state: SegmentState
    file_offset: int = -1

    @property
    def end(self) -> int:
        return self.offset + self.length


class ExtentKind(enum.Enum):
    """How the resolved chain defines a range (like ``qemu-img map``)."""

    DATA = "data"            # bytes from a layer's file
    ZERO = "zero"            # explicitly zero in some layer
    UNALLOCATED = "unallocated"  # no layer defines it: reads as zeros


@dataclass(frozen=True, slots=True)
class Extent:
    """A range of the resolved chain.

    ``layer`` is the index in the chain (0 = newest) that defines the range, or ``None`` for
    UNALLOCATED; ``file_offset`` is where DATA lives in that layer's file (-1 otherwise).
    """

    offset: int
    length: int
    kind: ExtentKind
    layer: int | None = None
    file_offset: int = -1

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"start": self.offset, "length": self.length,
                                "kind": self.kind.value}
        if self.layer is not None:
            d["layer"] = self.layer
        if self.file_offset >= 0:
            d["file_offset"] = self.file_offset
        return d


def coalesce_segments(segments: Iterable[Segment]) -> Iterator[Segment]:
    """Merge neighbouring segments of equal state (and contiguous file offsets)."""
    pending: Segment | None = None
    for seg in segments:
        if seg.length == 0:
            continue
        if pending is not None and pending.end == seg.offset and pending.state is seg.state and (
            seg.state is not SegmentState.PRESENT
            or pending.file_offset + pending.length == seg.file_offset
        ):
            pending = Segment(pending.offset, pending.length + seg.length, seg.state,
                              pending.file_offset)
            continue
        if pending is not None:
            yield pending
        pending = seg
    if pending is not None:
        yield pending


def coalesce_extents(extents: Iterable[Extent], *, merge_layers: bool = False) -> Iterator[Extent]:
    """Merge neighbouring extents of equal kind and layer (and contiguous file offsets).

    With ``merge_layers`` DATA extents of different layers merge too (file offsets dropped):
    the view "which ranges hold data at all".
    """
    pending: Extent | None = None
    for ext in extents:
        if ext.length == 0:
            continue
        if pending is not None and pending.end == ext.offset and pending.kind is ext.kind:
            if merge_layers and ext.kind is ExtentKind.DATA:
                pending = Extent(pending.offset, pending.length + ext.length, ext.kind)
                continue
            if pending.layer == ext.layer and (
                ext.kind is not ExtentKind.DATA
                or pending.file_offset + pending.length == ext.file_offset
            ):
                pending = Extent(pending.offset, pending.length + ext.length, ext.kind,
                                 pending.layer, pending.file_offset)
                continue
        if pending is not None:
            yield pending
        pending = ext
    if pending is not None:
        yield pending
