"""A bloated demo chain, as Hyper-V leaves one: a dynamic base and three snapshots.

:func:`make_bloated_chain` writes ``base.vhd`` and three differencing disks
``base_<GUID>.avhd`` (Hyper-V's naming) with overlapping writes and explicit zero blocks, so
that ``compact`` and ``remediate`` visibly shrink it. Everything is seeded: the same
arguments give the same names and the same virtual content.

What makes it bloated (each effect is what the real incident had):

* the base allocates blocks that hold only zeros (a guest zeroed freed space): compaction
  drops them, a remediated disk skips them;
* every snapshot allocates a whole block (bitmap + block) even for a few sectors, and
  snapshots rewrite the same ranges (half the blocks each): the chain's files add up to
  more than the disk holds;
* some snapshot writes are zeros over parent data: these must survive (they hide data).
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

from vhdlib import formats
from vhdlib.layer import DiskType, Layer

DEFAULT_SIZE = 256 << 20
DEFAULT_BLOCK_SIZE = 2 << 20
DEFAULT_SEED = 16060  # Hyper-V's event id for "paused: insufficient disk space"
SNAPSHOTS = 3
SECTOR = 512
#: Largest buffer one write uses (keeps memory flat whatever the disk size).
_MAX_WRITE = 4 << 20


def _snapshot_name(rng: random.Random, base_stem: str, suffix: str) -> str:
    """``base_6F3C...-....avhd``: Hyper-V names a snapshot's disk after the base + a GUID."""
    guid = uuid.UUID(int=rng.getrandbits(128), version=4)
    return f"{base_stem}_{str(guid).upper()}{suffix}"


def _write(layer: Layer, rng: random.Random, offset: int, length: int, *, zero: bool) -> None:
    """Write ``length`` bytes at ``offset``: seeded random data, or zeros."""
    pos = offset
    end = offset + length
    while pos < end:
        n = min(_MAX_WRITE, end - pos)
        layer.write(pos, bytes(n) if zero else rng.randbytes(n))
        pos += n


def _fill_base(layer: Layer, rng: random.Random, size: int, block: int) -> None:
    """~55 % of blocks data (some partly), ~20 % explicit zeros, the rest never written."""
    for index in range(size // block):
        start = index * block
        roll = rng.random()
        if roll < 0.45:
            _write(layer, rng, start, block, zero=False)
        elif roll < 0.55:
            # Part data, part zeros: the block stays, its zero sectors are skipped.
            half = rng.randrange(1, block // SECTOR) * SECTOR
            _write(layer, rng, start, half, zero=False)
            _write(layer, rng, start + half, block - half, zero=True)
        elif roll < 0.75:
            _write(layer, rng, start, block, zero=True)


def _fill_snapshot(layer: Layer, rng: random.Random, size: int, block: int) -> None:
    """Half the blocks rewritten: some whole, most by sector-granular runs (some zeros)."""
    sectors_per_block = block // SECTOR
    for index in range(size // block):
        if rng.random() >= 0.5:
            continue
        start = index * block
        if rng.random() < 0.4:
            _write(layer, rng, start, block, zero=False)
            continue
        for _ in range(rng.randint(1, 3)):
            first = rng.randrange(sectors_per_block)
            count = rng.randint(1, sectors_per_block - first)
            _write(layer, rng, start + first * SECTOR, count * SECTOR,
                   zero=rng.random() < 0.15)


def demo_formats() -> tuple[str, ...]:
    """Formats a demo chain can be made in: writable, with dynamic and differencing disks."""
    return tuple(f.name for f in formats.FORMATS if f.writable
                 and {DiskType.DYNAMIC, DiskType.DIFFERENCING} <= set(f.disk_types))


def make_bloated_chain(folder: str | os.PathLike[str], *, size: int = DEFAULT_SIZE,
                       fmt: str = "vhd", block_size: int = DEFAULT_BLOCK_SIZE,
                       seed: int = DEFAULT_SEED) -> list[Path]:
    """Create a dynamic base and three snapshots in ``folder``; return them oldest first.

    The last path is the newest snapshot (the one a VM runs on, and what ``remediate``
    takes). ``size`` is rounded down to whole blocks. ``fmt`` is ``"vhd"`` (``base.vhd``,
    ``*.avhd``) or ``"vhdx"`` (``base.vhdx``, ``*.avhdx``).
    """
    if fmt not in demo_formats():
        raise ValueError(f"unknown demo format {fmt!r}")
    spec = formats.get(fmt)
    size -= size % block_size
    if size <= 0:
        raise ValueError("demo size must be at least one block")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = folder / f"base{spec.suffixes[0]}"
    paths = [base]
    layer = formats.create(str(base), fmt, formats.NewDisk(size, DiskType.DYNAMIC,
                                                           block_size=block_size))
    try:
        _fill_base(layer, rng, size, block_size)
        for _ in range(SNAPSHOTS):
            layer.flush()
            path = folder / _snapshot_name(rng, "base", (spec.child_suffixes
                                                         or spec.suffixes)[0])
            child = formats.create(str(path), fmt, formats.NewDisk(
                size, DiskType.DIFFERENCING, block_size=block_size, parent=layer))
            layer.close()
            layer = child
            paths.append(path)
            _fill_snapshot(layer, rng, size, block_size)
        layer.flush()
    finally:
        layer.close()
    return paths
