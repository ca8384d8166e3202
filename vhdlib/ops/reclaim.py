"""``--reclaim fs``: which blocks a copy or compact may leave out because the guest's file
systems mark every byte of them free (issue 13; the volume scan is :mod:`vhdlib.volume`).

The default, ``zeros``, leaves out only all-zero data, as before. The drop list is computed
once at prepare time and kept in the journal, so a resumed run drops the same blocks.
"""

from __future__ import annotations

from typing import Any

from vhdlib.errors import UsageError
from vhdlib.ops.windows import PIECE
from vhdlib.volume import VolumeMap, scan
from vhdlib.volume.source import Readable

MODES = ("zeros", "fs")
#: Granularity of a fixed or raw output's drops (nothing is allocated per block there).
FIXED_GRANULE = 1 << 20


def check_mode(mode: str | None) -> str:
    mode = mode or "zeros"
    if mode not in MODES:
        raise UsageError(f"unknown --reclaim mode {mode!r} (zeros or fs)")
    return mode


def granule(block_size: int, dynamic: bool) -> int:
    """Drop unit: a dynamic output's block; PIECE-aligned so that verification's zero
    detection splits runs exactly where the copy left bytes out."""
    unit = block_size if dynamic and block_size else FIXED_GRANULE
    return -(-unit // PIECE) * PIECE


def drop_ranges(vmap: VolumeMap, unit: int) -> list[list[int]]:
    """The reclaimable blocks of ``unit`` bytes as merged ``[start, end)`` byte ranges."""
    out: list[list[int]] = []
    for b in vmap.reclaimable_blocks(unit):
        start = b * unit
        if out and out[-1][1] == start:
            out[-1][1] = start + unit
        else:
            out.append([start, start + unit])
    return out


def plan(disk: Readable, unit: int) -> tuple[list[list[int]], dict[str, Any]]:
    """Drop ranges for ``disk`` and the report the dry run shows."""
    vmap = scan(disk)
    ranges = drop_ranges(vmap, unit)
    details = vmap.to_dict(unit)
    details.update({"mode": "fs", "drop_unit": unit,
                    "dropped_bytes": sum(e - s for s, e in ranges)})
    return ranges, details
