"""The fuzzer's seed files: small real fixtures and freshly generated chains of both formats.

Generated chains are byte-for-byte reproducible: fixed GUIDs, timestamps and write
patterns, built in one fixed folder (so the absolute locators they record are the same on
every machine) that is emptied afterwards (so those absolute locators lead nowhere and only
the relative ones find a parent inside a case's folder).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests import realimages

MiB = 1 << 20
VERSION = 1
BUILD_DIR = Path("/tmp/vhdmend-fuzz-build")

#: Real images small enough to copy per case; with the ones whose parent is in the set.
REAL = [
    ("dissect.hypervisor/fixed.vhd",),
    ("dissect.hypervisor/dynamic.vhd",),
    ("dissect.hypervisor/fixed.vhdx",),
    ("dissect.hypervisor/dynamic.vhdx",),
    ("dfvfs/ext2.vhd",),
    ("dfvfs/fat-differential.vhd",),
    ("dfvfs/image.vhd",),
    ("dfvfs/image.orig-9f3915f.vhd",),
    ("dfvfs/image-differential.vhd", "dfvfs/image.vhd"),
    ("freebsd-mkimg/img-63x255-512-mbr.vhd",),
    ("freebsd-mkimg/img-63x255-512-mbr.vhdf",),
    ("freebsd-mkimg/img-63x255-512-mbr.vhdx",),
    ("qemu-iotests/virtualpc-dynamic.vhd",),
    ("qemu-iotests/hyperv2012r2-dynamic.vhd",),
    ("discutils/vhdx-log-replay.vhdx",),
]


@dataclass(frozen=True)
class Seed:
    """One seed: its files (base first, the newest last) in ``folder``; commands run on
    the newest; ``lenient`` when the pristine seed needs ``--lenient``."""

    name: str
    folder: Path
    files: tuple[str, ...]
    lenient: bool = False

    @property
    def top(self) -> str:
        return self.files[-1]


def _guids(seed: str):
    rnd = random.Random(seed)
    return lambda: uuid.UUID(int=rnd.getrandbits(128), version=4)


def _build_chain(folder: Path, fmt: str, kind: str, seed: str) -> tuple[str, ...]:
    """``kind``: ``fixed``, ``dynamic`` or ``chain`` (dynamic base and two children)."""
    from vhdlib import vhd, vhdx
    from vhdlib.layer import DiskType

    rnd = random.Random(seed)
    gen = _guids(seed)
    size = 8 * MiB
    ext, child_ext = (".vhd", ".avhd") if fmt == "vhd" else (".vhdx", ".avhdx")

    def make(name: str, dtype: DiskType, parent=None):
        path = str(folder / name)
        if fmt == "vhd":
            return vhd.create(path, None if parent else size, dtype, parent=parent,
                              block_size=512 * 1024, uuid=gen(), timestamp=700000000)
        return vhdx.create(path, size, dtype, parent=parent, block_size=MiB,
                           guid_factory=gen, sparse=True)

    def scribble(layer, n: int) -> None:
        for _ in range(n):
            count = rnd.randint(1, 64)
            off = rnd.randrange(0, size // 512 - count) * 512
            layer.write(off, bytes(count * 512) if rnd.random() < 0.2
                        else rnd.randbytes(count * 512))
        layer.flush()

    if kind == "fixed":
        with make(f"fixed{ext}", DiskType.FIXED) as layer:
            scribble(layer, 6)
        return (f"fixed{ext}",)
    names = [f"base{ext}"]
    layers = [make(names[0], DiskType.DYNAMIC)]
    scribble(layers[0], 10)
    if kind == "chain":
        for k in range(2):
            names.append(f"child{k}{child_ext}")
            layers.append(make(names[-1], DiskType.DIFFERENCING, parent=layers[-1]))
            scribble(layers[-1], 8)
    for layer in layers:
        layer.close()
    return tuple(names)


GENERATED = [(fmt, kind) for fmt in ("vhd", "vhdx") for kind in ("fixed", "dynamic", "chain")]


def corpus_dir() -> Path:
    return Path(os.environ.get("VHDMEND_FUZZ_CORPUS", f"/tmp/vhdmend-fuzz-corpus-v{VERSION}"))


def build() -> list[Seed]:
    """Every seed, building or decompressing what is missing (once per machine)."""
    root = corpus_dir()
    root.mkdir(parents=True, exist_ok=True)
    seeds: list[Seed] = []
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for fmt, kind in GENERATED:
            name = f"gen-{fmt}-{kind}"
            folder = root / name
            done = folder / ".files"
            if not done.exists():
                shutil.rmtree(BUILD_DIR, ignore_errors=True)
                BUILD_DIR.mkdir(parents=True)
                files = _build_chain(BUILD_DIR, fmt, kind, name)
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                for f in files:
                    shutil.copyfile(BUILD_DIR / f, folder / f)
                shutil.rmtree(BUILD_DIR)
                done.write_text("\n".join(files))
            seeds.append(Seed(name, folder, tuple(done.read_text().split("\n"))))
        for group in REAL:
            top = group[0]
            files = tuple(reversed(group))
            seeds.append(Seed("real-" + top, realimages.materialize(top).parent,
                              tuple(Path(f).name for f in files),
                              lenient=any(realimages.BY_NAME[f].lenient for f in files)))
            for f in group:
                realimages.materialize(f)
    return seeds


def digest(seeds: list[Seed]) -> str:
    """One sha256 over every seed file: two runs with the same digest saw the same corpus."""
    h = hashlib.sha256()
    for s in seeds:
        for f in s.files:
            h.update(f.encode())
            with open(s.folder / f, "rb") as fi:
                while chunk := fi.read(8 << 20):
                    h.update(chunk)
    return h.hexdigest()
