"""Damage one field of an image file, as the bad-input tests need it.

Fields are found by :mod:`tests.vhdlib.fuzz.structure` (a parser that shares nothing with
vhdlib), so a test states the damage in the specification's terms: which structure, which
field, what value, and whether the structure's checksum is recomputed afterwards.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tests.vhdlib.fuzz import mutate, structure
from tests.vhdlib.fuzz.structure import Struct


def find(path: Path, kind: str, index: int = 0) -> Struct:
    """The ``index``-th structure of ``kind`` in the file."""
    found = [s for s in structure.structures(path.read_bytes()) if s.kind == kind]
    return found[index]


def get_field(path: Path, kind: str, name: str, index: int = 0) -> int:
    st = find(path, kind, index)
    f = next(f for f in st.fields if f.name == name)
    data = path.read_bytes()
    return int.from_bytes(data[st.offset + f.offset: st.offset + f.offset + f.size],
                          "big" if f.big_endian else "little")


def set_field(path: Path, kind: str, name: str, value: int, *, fix: bool = True,
              index: int = 0) -> None:
    """Set field ``name`` of the ``index``-th ``kind`` structure; recompute its checksum
    when ``fix``."""
    data = bytearray(path.read_bytes())
    st = [s for s in structure.structures(data) if s.kind == kind][index]
    f = next(f for f in st.fields if f.name == name)
    at = st.offset + f.offset
    data[at: at + f.size] = value.to_bytes(f.size, "big" if f.big_endian else "little")
    if fix and st.fix is not None:
        st.fix(data, st.offset)
    path.write_bytes(data)


def link_to_itself(path: Path) -> None:
    """Make the differencing disk's parent link name its own id (checksums recomputed)."""
    data = bytearray(path.read_bytes())
    own = mutate.own_id(data)
    assert own is not None and mutate.set_parent_id(data, own)
    path.write_bytes(data)


def set_locator_value(path: Path, key: str, text: str) -> None:
    """Rewrite a VHDX parent locator value in place (same length in UTF-16)."""
    data = bytearray(path.read_bytes())
    st = next(s for s in structure.structures(data) if s.kind == "vhdx.parent_locator")
    assert mutate.set_locator_value(data, st, key, text), f"no {key} of that length"
    path.write_bytes(data)


def locator_value(path: Path, key: str) -> str:
    data = path.read_bytes()
    st = next(s for s in structure.structures(data) if s.kind == "vhdx.parent_locator")
    count = struct.unpack_from("<H", data, st.offset + 18)[0]
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from("<IIHH", data, st.offset + 20 + 12 * i)
        if data[st.offset + ko: st.offset + ko + kl].decode("utf-16-le") == key:
            return data[st.offset + vo: st.offset + vo + vl].decode("utf-16-le")
    raise KeyError(key)
