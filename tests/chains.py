"""Build real chains on disk with a known reference content (an in-memory model)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from tests.realimages import file_sha256
from vhdlib.layer import DiskType, Layer

__all__ = ["Chain", "build_chain", "create", "file_sha256", "read_all"]

MiB = 1 << 20
SUFFIX = {"vhd": (".vhd", ".avhd"), "vhdx": (".vhdx", ".avhdx")}


def create(fmt: str, path: Path, size: int | None, disk_type: DiskType,
           parent: Layer | None = None, block_size: int | None = None) -> Layer:
    """Create a disk of either format through vhdlib's public create()."""
    kw: dict[str, object] = {}
    if block_size:
        kw["block_size"] = block_size
    if fmt == "vhd":
        from vhdlib import vhd
        return vhd.create(str(path), size, disk_type, parent=parent, **kw)  # type: ignore[arg-type]
    from vhdlib import vhdx
    if size is None and parent is not None:
        size = parent.virtual_size
    return vhdx.create(str(path), size, disk_type, parent=parent, **kw)  # type: ignore[arg-type]


@dataclass
class Chain:
    """Files of a chain (base first) and the bytes the newest must read as."""

    fmt: str
    paths: list[Path]
    ref: bytearray
    writes: list[tuple[int, int, int]] = field(default_factory=list)  # (layer, off, len)

    @property
    def newest(self) -> Path:
        return self.paths[-1]

    @property
    def base(self) -> Path:
        return self.paths[0]

    def sha256(self) -> str:
        return hashlib.sha256(self.ref).hexdigest()


def build_chain(folder: Path, fmt: str = "vhd", *, size: int = 48 * MiB, children: int = 3,
                writes: int = 24, seed: int = 1, block_size: int | None = None,
                zero_blocks: int = 2, max_sectors: int = 96) -> Chain:
    """A dynamic base and ``children`` differencing layers with random sector writes.

    Some writes are zeros (present zeros in children hide the parent), and the base gets
    ``zero_blocks`` explicitly written all-zero regions, so compaction has work to do.
    """
    rnd = random.Random(seed)
    base_ext, child_ext = SUFFIX[fmt]
    ref = bytearray(size)
    chain = Chain(fmt, [], ref)
    bs = block_size or (2 * MiB)
    base = create(fmt, folder / f"base{base_ext}", size, DiskType.DYNAMIC, block_size=bs)
    layers = [base]
    chain.paths.append(folder / f"base{base_ext}")

    def write(layer: Layer, index: int, zero: bool) -> None:
        sector = layer.logical_sector_size
        count = rnd.randint(1, max_sectors)
        off = rnd.randrange(0, size // sector - count) * sector
        n = count * sector
        data = bytes(n) if zero else rnd.randbytes(n)
        layer.write(off, data)
        ref[off:off + n] = data
        chain.writes.append((index, off, n))

    for _ in range(writes):
        write(base, 0, False)
    for z in range(zero_blocks):
        # A whole block of explicit zeros, away from the random writes' likely spots.
        off = size - (z + 1) * bs
        base.write(off, bytes(bs))
        ref[off:off + bs] = bytes(bs)
    base.flush()
    for k in range(children):
        name = f"base_{k:08X}-0000-0000-0000-000000000000{child_ext}"
        child = create(fmt, folder / name, None, DiskType.DIFFERENCING, parent=layers[-1])
        for _ in range(writes):
            write(child, k + 1, rnd.random() < 0.2)
        child.flush()
        layers.append(child)
        chain.paths.append(folder / name)
    for layer in layers:
        layer.close()
    return chain


def read_all(path: Path) -> bytes:
    import vhdlib
    with vhdlib.open(str(path)) as disk:
        return disk.read(0, disk.virtual_size)
