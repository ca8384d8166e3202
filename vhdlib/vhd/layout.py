"""Where things go in a VHD file: Hyper-V's layout rules, shared by create and allocation.

Layout (as Hyper-V does, see dissect dynamic.vhd and dfvfs fat-differential.vhd): footer
copy at 0, header at 512, (differencing: W2ku locator at 4096), BAT in a 4 KiB-rounded
region, (differencing: W2ru locator, 64 KiB space), then slots placed so that every block's
data is 4 KiB aligned (its 512-byte bitmap sits just before), and the trailing footer at the
position of the next slot.
"""

from __future__ import annotations

from vhdlib.vhd.structs import SECTOR_SIZE

#: Slots are placed so that block data is aligned to this (Hyper-V's layout).
DATA_ALIGNMENT = 4096
#: Largest block size we accept; the spec's default is 2 MiB and Hyper-V never exceeds it.
MAX_BLOCK_SIZE = 256 << 20
#: Zeros for writes and comparisons (one 4 MiB buffer, shared).
ZEROS = bytes(4 << 20)


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment``."""
    return -(-value // alignment) * alignment


def slot_position(end: int) -> int:
    """First slot position at or after ``end`` whose data (after a 512-byte bitmap) is
    4 KiB aligned: Hyper-V's layout (dynamic.vhd block 0 at sector 15, stride 2 MiB + 4 KiB)."""
    return align_up(end + SECTOR_SIZE, DATA_ALIGNMENT) - SECTOR_SIZE


def valid_block_size(block_size: int) -> bool:
    """Spec "Block Size": a power of two multiple of the sector size (at most 256 MiB)."""
    return SECTOR_SIZE <= block_size <= MAX_BLOCK_SIZE and not block_size & (block_size - 1)
