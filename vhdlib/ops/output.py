"""Creating the new disk a convert or remediate writes, and sizing it exactly."""

from __future__ import annotations

import os
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from vhdlib import formats
from vhdlib.errors import UsageError
from vhdlib.layer import DiskType, Layer

#: Types of an output disk (a copy has no parent).
TYPES = ("fixed", "dynamic")


@dataclass(frozen=True)
class OutputSpec:
    """What to create: format, type and geometry, plus the ids fixed in the journal."""

    fmt: str
    type: str
    virtual_size: int
    block_size: int
    logical_sector_size: int
    uuid: str
    timestamp: int
    sparse: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputSpec:
        return cls(**d)

    @property
    def format(self) -> formats.Format:
        return formats.get(self.fmt)

    def validate(self) -> None:
        """Refuse what the output format cannot be (read-only, too big, sector size)."""
        if self.type not in TYPES:
            raise UsageError(f"unknown output type {self.type!r} (fixed or dynamic)")
        fmt = self.format
        fmt.check_new(self.virtual_size, DiskType(self.type), self.logical_sector_size)


def create(path: str, spec: OutputSpec) -> Layer:
    """Create the (empty) output described by ``spec`` and return it writable.

    The ids come from the journal (``uuid``, ``timestamp``): a resumed run creates the
    same bytes.
    """
    spec.validate()
    return formats.create(path, spec.fmt, formats.NewDisk(
        spec.virtual_size, DiskType(spec.type), block_size=spec.block_size,
        logical_sector_size=spec.logical_sector_size, sparse=spec.sparse,
        uuid=uuidlib.UUID(spec.uuid), timestamp=spec.timestamp))


@dataclass(frozen=True)
class Sizing:
    """File bytes of an empty output and bytes one more allocated block adds."""

    empty_bytes: int
    slot_bytes: int
    block_size: int


def sizing(spec: OutputSpec) -> Sizing:
    """Measure an empty output of ``spec`` (created sparse in a scratch folder).

    Asking the format itself is exact where a formula would drift from its layout.
    """
    sparse_spec = OutputSpec(**{**spec.to_dict(), "sparse": True})
    with tempfile.TemporaryDirectory(prefix="vhdmend-size-") as tmp:
        path = os.path.join(tmp, "probe" + spec.format.suffixes[0])
        layer = create(path, sparse_spec)
        try:
            layer.flush()
            store = layer.block_store()
            slot = store.slot_size if store is not None else 0
            return Sizing(os.fstat(layer.fd).st_size, slot, layer.block_size)
        finally:
            layer.close()


def needed_bytes(spec: OutputSpec, data_blocks: int, data_bytes: int) -> int:
    """Bytes the output will occupy: exact for an allocated fixed disk; for dynamic (and
    sparse) outputs the bound from the map (all-zero blocks found while copying are not
    allocated, so the real figure can only be lower)."""
    s = sizing(spec)
    if spec.type == "fixed" or not s.slot_bytes:
        if not spec.sparse:
            return s.empty_bytes
        return s.empty_bytes - spec.virtual_size + data_bytes
    return s.empty_bytes + data_blocks * s.slot_bytes


def blocks_touched(ranges: list[tuple[int, int]], block_size: int) -> int:
    """How many ``block_size`` blocks the ``(offset, length)`` ranges touch."""
    if block_size <= 0:
        return 0
    blocks: set[int] = set()
    last = -1
    for off, length in ranges:
        first = off // block_size
        end = (off + length - 1) // block_size
        for b in range(max(first, last + 1), end + 1):
            blocks.add(b)
        last = max(last, end)
    return len(blocks)
