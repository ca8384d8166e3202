"""Structure-aware mutations of one case: a seed's files copied into a folder, then damaged.

Every choice comes from ``random.Random(f"{seed}:{case}")``, so a case is reproduced from
``(seed, case)`` and the corpus digest alone. Mutations: bit flips and extreme values in
the fields of every structure :mod:`.structure` finds (with or without the checksum
recomputed), random bytes inside bitmaps, locator data and metadata, truncations (anywhere
or at a structure's edge), appended garbage, parent loops (a self-loop and a two-file
loop, with the ids rewritten so that the loop is real) and deleted or replaced parents.
"""

from __future__ import annotations

import random
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.vhdlib.fuzz import structure
from tests.vhdlib.fuzz.corpus import Seed
from tests.vhdlib.fuzz.structure import Field, Struct


@dataclass
class Case:
    """A mutated seed in ``folder``; commands run on ``top``."""

    seed: int
    index: int
    source: str
    folder: Path
    top: str
    lenient: bool
    mutations: list[str] = field(default_factory=list)


def _put(data: bytearray, st: Struct, f: Field, value: int) -> None:
    at = st.offset + f.offset
    if at < 0 or at + f.size > len(data):
        return
    value &= (1 << (8 * f.size)) - 1
    data[at: at + f.size] = value.to_bytes(f.size, "big" if f.big_endian else "little")


def _get(data: bytearray, st: Struct, f: Field) -> int:
    at = st.offset + f.offset
    if at < 0 or at + f.size > len(data):
        return 0
    return int.from_bytes(data[at: at + f.size], "big" if f.big_endian else "little")


def _extreme(rnd: random.Random, old: int, width: int, file_size: int, name: str) -> int:
    top = (1 << (8 * width)) - 1
    choices = [0, 1, top, top >> 1, (top >> 1) + 1, old + 1, old - 1, old * 2, old // 2,
               old ^ (1 << rnd.randrange(8 * width)), file_size, file_size - 512,
               file_size + 512, rnd.getrandbits(8 * width), 1 << rnd.randrange(8 * width)]
    if "bat[" in name and width == 8:
        # VHDX BAT entries: FileOffsetMB near 2^44, past EOF, or a changed state.
        mb = rnd.choice([(1 << 44) - 1, (file_size >> 20) + 1, file_size >> 20, 0, 1, 2, 3])
        choices += [(mb << 20) | rnd.choice([0, 1, 2, 3, 6, 7]), (old & ~7) | rnd.randrange(8)]
    return rnd.choice(choices)


def _mutate_field(rnd: random.Random, data: bytearray, structs: list[Struct],
                  extreme: bool) -> str:
    candidates = [s for s in structs if s.fields]
    if not candidates:
        return _flip_bytes(rnd, data)
    st = rnd.choice(candidates)
    f = rnd.choice(st.fields)
    old = _get(data, st, f)
    if extreme:
        new = _extreme(rnd, old, f.size, len(data), f.name)
    else:
        new = old ^ (1 << rnd.randrange(8 * f.size))
    _put(data, st, f, new)
    fixed = st.fix is not None and rnd.random() < 0.6
    if fixed and st.fix is not None and f.name != "checksum":
        st.fix(data, st.offset)
    how = "set" if extreme else "flip"
    new &= (1 << (8 * f.size)) - 1
    return (f"{how} {st.kind}@{st.offset:#x}.{f.name} {old:#x}->{new:#x}"
            + (" +checksum" if fixed else ""))


def _flip_bytes(rnd: random.Random, data: bytearray, st: Struct | None = None) -> str:
    lo, hi = (st.offset, st.offset + st.size) if st else (0, len(data))
    hi = min(hi, len(data))
    if hi <= lo:
        return "flip nothing"
    n = rnd.choice([1, 1, 2, 8, 64])
    for _ in range(n):
        at = rnd.randrange(lo, hi)
        data[at] ^= 1 << rnd.randrange(8)
    fixed = st is not None and st.fix is not None and rnd.random() < 0.6
    if fixed and st is not None and st.fix is not None:
        st.fix(data, st.offset)
    where = f"{st.kind}@{st.offset:#x}" if st else "file"
    return f"flip {n} bits in {where}" + (" +checksum" if fixed else "")


def _truncate(rnd: random.Random, data: bytearray, structs: list[Struct]) -> bytearray:
    edges = [s.offset for s in structs] + [s.offset + s.size for s in structs]
    point = rnd.choice([rnd.randrange(len(data) + 1), *[e for e in edges if e < len(data)]])
    point += rnd.choice([0, 0, -1, 1, -512, 512])
    return data[: max(0, min(point, len(data) - 1))]


def _garbage(rnd: random.Random) -> bytes:
    n = rnd.choice([1, 511, 512, 4096, 65536, 1 << 20, rnd.randrange(1, 3 << 20)])
    return rnd.choice([bytes(n), rnd.randbytes(n), b"conectix" * (n // 8 + 1)])[:n]


def _one_file(rnd: random.Random, path: Path, structs_seen: list[str]) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "empty file"
    structs = structure.structures(data)
    roll = rnd.random()
    if roll < 0.35:
        desc = _mutate_field(rnd, data, structs, extreme=True)
    elif roll < 0.6:
        desc = _mutate_field(rnd, data, structs, extreme=False)
    elif roll < 0.75:
        st = rnd.choice(structs) if structs else None
        desc = _flip_bytes(rnd, data, st)
    elif roll < 0.88:
        before = len(data)
        data = _truncate(rnd, data, structs)
        desc = f"truncate {before}->{len(data)}"
    else:
        g = _garbage(rnd)
        data += g
        desc = f"append {len(g)} bytes"
    structs_seen.extend(s.kind for s in structs)
    path.write_bytes(data)
    return f"{path.name}: {desc}"


# --- chain mutations ---------------------------------------------------------------------------

def _own_id_field(data: bytearray) -> list[tuple[int, int]]:
    """(offset, length) of every copy of the file's own link id (VHD UUID, VHDX
    DataWriteGuid)."""
    kinds = {"vhd.footer": 68, "vhd.footer_copy": 68, "vhdx.header": 32}
    return [(s.offset + kinds[s.kind], 16) for s in structure.structures(data)
            if s.kind in kinds]


def set_own_id(data: bytearray, raw: bytes) -> None:
    for st in structure.structures(data):
        at = {"vhd.footer": 68, "vhd.footer_copy": 68, "vhdx.header": 32}.get(st.kind)
        if at is not None and st.fix is not None:
            data[st.offset + at: st.offset + at + 16] = raw
            st.fix(data, st.offset)


def own_id(data: bytearray) -> bytes | None:
    fields = _own_id_field(data)
    if not fields:
        return None
    at, n = fields[0]
    return bytes(data[at: at + n])


def set_parent_id(data: bytearray, raw: bytes) -> bool:
    """Point the file's parent link at id ``raw`` (as its own id field stores it)."""
    for st in structure.structures(data):
        if st.kind == "vhd.header" and st.fix is not None:
            data[st.offset + 40: st.offset + 56] = raw
            st.fix(data, st.offset)
            return True
        if st.kind == "vhdx.parent_locator":
            text = "{" + str(uuid.UUID(bytes_le=raw)) + "}"
            return set_locator_value(data, st, "parent_linkage", text)
    return False


def set_locator_value(data: bytearray, st: Struct, key: str, text: str) -> bool:
    count = struct.unpack_from("<H", data, st.offset + 18)[0]
    for i in range(min(count, 64)):
        e = st.offset + 20 + 12 * i
        ko, vo, kl, vl = struct.unpack_from("<IIHH", data, e)
        name = bytes(data[st.offset + ko: st.offset + ko + kl]).decode("utf-16-le", "replace")
        value = text.encode("utf-16-le")
        if name == key and len(value) == vl:
            data[st.offset + vo: st.offset + vo + vl] = value
            return True
    return False


def _chain_mutation(rnd: random.Random, case: Case, files: list[str]) -> str:
    folder = case.folder
    top = folder / files[-1]
    roll = rnd.random()
    if roll < 0.3:
        victim = rnd.choice(files[:-1])
        (folder / victim).unlink()
        return f"delete parent {victim}"
    if roll < 0.55:
        # Self-loop: the file named like the parent is the child itself, linked to itself.
        parent = folder / files[-2]
        data = bytearray(top.read_bytes())
        own = own_id(data)
        if own is None or not set_parent_id(data, own):
            return "self-loop impossible"
        parent.write_bytes(data)
        case.top = files[-2]
        return f"self-loop: {files[-2]} = {files[-1]} linked to itself"
    if roll < 0.8 and len(files) >= 3:
        # Two-file loop: the base is replaced by a copy of the top carrying the base's id,
        # so top -> middle -> "base" (= top) -> middle again.
        base = folder / files[0]
        base_id = own_id(bytearray(base.read_bytes()))
        data = bytearray(top.read_bytes())
        if base_id is None:
            return "loop impossible"
        set_own_id(data, base_id)
        base.write_bytes(data)
        return f"loop: {files[0]} = copy of {files[-1]} with {files[0]}'s id"
    # Replace a parent by another file of the chain (an id mismatch).
    victim = rnd.choice(files[:-1])
    other = rnd.choice([f for f in files if f != victim])
    shutil.copyfile(folder / other, folder / victim)
    return f"replace parent {victim} by a copy of {other}"


def make_case(seed: int, index: int, seeds: list[Seed], folder: Path) -> Case:
    """Build case ``(seed, index)`` in the empty ``folder``."""
    rnd = random.Random(f"{seed}:{index}")
    src = rnd.choice(seeds)
    for f in src.files:
        shutil.copyfile(src.folder / f, folder / f)
        (folder / f).chmod(0o644)
    case = Case(seed, index, src.name, folder, src.top, src.lenient)
    files = list(src.files)
    seen: list[str] = []
    if len(files) > 1 and rnd.random() < 0.25:
        case.mutations.append(_chain_mutation(rnd, case, files))
    else:
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            target = files[-1] if rnd.random() < 0.7 else rnd.choice(files)
            if (folder / target).exists():
                case.mutations.append(_one_file(rnd, folder / target, seen))
    return case
