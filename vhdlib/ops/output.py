"""Creating the new disk a convert or remediate writes, and sizing it exactly."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from vhdlib.errors import UsageError
from vhdlib.layer import DiskType, Layer

FORMATS = ("vhd", "vhdx", "raw")
TYPES = ("fixed", "dynamic")
#: Default payload block sizes (what Hyper-V uses).
DEFAULT_BLOCK = {"vhd": 2 << 20, "vhdx": 32 << 20, "raw": 0}
#: VHD's largest disk (VHD spec: 2040 GiB).
VHD_MAX = 2040 << 30
#: VHD timestamps count seconds from 2000-01-01 00:00 UTC.
VHD_EPOCH = 946684800


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

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise UsageError(f"unknown output format {self.fmt!r} (vhd, vhdx or raw)")
        if self.type not in TYPES:
            raise UsageError(f"unknown output type {self.type!r} (fixed or dynamic)")
        if self.fmt == "vhd" and self.virtual_size > VHD_MAX:
            raise UsageError(f"disk of {self.virtual_size} bytes exceeds the VHD limit of "
                             f"{VHD_MAX} bytes (2040 GiB); convert to VHDX instead")
        if self.fmt == "vhd" and self.logical_sector_size != 512:
            raise UsageError("VHD has 512-byte sectors only; this disk has "
                             f"{self.logical_sector_size}-byte sectors: convert to VHDX")


def create(path: str, spec: OutputSpec) -> Layer:
    """Create the (empty) output described by ``spec`` and return it writable."""
    import uuid as uuidlib

    spec.validate()
    disk_type = DiskType(spec.type)
    if spec.fmt == "raw":
        from vhdlib import raw
        return raw.create(path, spec.virtual_size, sparse=spec.sparse)
    if spec.fmt == "vhd":
        from vhdlib import vhd
        return vhd.create(path, spec.virtual_size, disk_type,
                          block_size=spec.block_size or DEFAULT_BLOCK["vhd"],
                          sparse=spec.sparse, uuid=uuidlib.UUID(spec.uuid),
                          timestamp=spec.timestamp - VHD_EPOCH)
    from vhdlib import vhdx
    return vhdx.create(path, spec.virtual_size, disk_type,
                       block_size=spec.block_size or DEFAULT_BLOCK["vhdx"],
                       logical_sector_size=spec.logical_sector_size,
                       sparse=spec.sparse, **_vhdx_ids(spec))


def _vhdx_ids(spec: OutputSpec) -> dict[str, Any]:
    """Deterministic VHDX GUIDs derived from the journal's uuid (bit-identical resume)."""
    import uuid as uuidlib

    base = uuidlib.UUID(spec.uuid)
    return {"guid_factory": _seeded_guids(base)}


def _seeded_guids(base: Any) -> Any:
    import uuid as uuidlib

    counter = [0]

    def next_guid() -> uuidlib.UUID:
        counter[0] += 1
        return uuidlib.uuid5(base, f"guid-{counter[0]}")
    return next_guid


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
        path = os.path.join(tmp, "probe." + spec.fmt)
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
    if spec.type == "fixed" or spec.fmt == "raw":
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
