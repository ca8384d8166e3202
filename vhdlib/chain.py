"""A resolved differencing chain: the disk a guest sees.

:func:`open` follows parent links from the newest layer down to a base and returns a
:class:`Disk` that reads any byte range sector-exactly, maps extents (like ``qemu-img map``)
and describes itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from vhdlib import formats
from vhdlib.errors import (
    ChainError,
    ChainLoopError,
    ImageError,
    ParentMismatchError,
    ParentNotFoundError,
    UsageError,
    VhdlibError,
)
from vhdlib.extents import Extent, ExtentKind, SegmentState, coalesce_extents
from vhdlib.formats import open_layer
from vhdlib.layer import Layer, ParentLink

log = logging.getLogger(__name__)

#: Deepest chain we follow; Hyper-V's limit is far lower, this only stops runaway input.
MAX_CHAIN_DEPTH = 256

_ZEROS = bytes(4 << 20)


class Disk:
    """A chain of layers, newest first. Reads are sector-exact through the whole chain."""

    def __init__(self, layers: list[Layer]) -> None:
        if not layers:
            raise UsageError("a disk needs at least one layer")
        self.layers = layers

    # --- description ------------------------------------------------------------------

    @property
    def top(self) -> Layer:
        return self.layers[0]

    @property
    def base(self) -> Layer:
        return self.layers[-1]

    @property
    def virtual_size(self) -> int:
        return self.top.virtual_size

    @property
    def logical_sector_size(self) -> int:
        return self.top.logical_sector_size

    @property
    def chain(self) -> list[str]:
        """Paths of the layers, newest first."""
        return [layer.path for layer in self.layers]

    def info(self) -> dict[str, Any]:
        top = self.top
        d = top.info()
        d["chain"] = [layer.info() for layer in self.layers]
        d["chain_allocated_bytes"] = sum(layer.allocated_bytes for layer in self.layers)
        d["chain_file_size"] = sum(layer.file_size for layer in self.layers)
        return d

    # --- mapping ----------------------------------------------------------------------

    def _resolve(self, offset: int, length: int, level: int) -> Iterator[Extent]:
        layer = self.layers[level]
        end = offset + length
        # A parent smaller than its child reads as unallocated beyond its end.
        inner_end = min(end, layer.virtual_size)
        if inner_end > offset:
            for seg in layer.segments(offset, inner_end - offset):
                if seg.state is SegmentState.PRESENT:
                    yield Extent(seg.offset, seg.length, ExtentKind.DATA, level, seg.file_offset)
                elif seg.state is SegmentState.ZERO:
                    yield Extent(seg.offset, seg.length, ExtentKind.ZERO, level)
                elif level + 1 < len(self.layers):
                    yield from self._resolve(seg.offset, seg.length, level + 1)
                else:
                    yield Extent(seg.offset, seg.length, ExtentKind.UNALLOCATED)
        if end > max(inner_end, offset):
            start = max(inner_end, offset)
            yield Extent(start, end - start, ExtentKind.UNALLOCATED)

    def extents(self, offset: int = 0, length: int | None = None, *,
                levels: int | None = None) -> Iterator[Extent]:
        """Coalesced extents covering ``[offset, offset+length)``.

        ``levels`` limits resolution to the newest ``levels`` layers (what lies below is
        reported UNALLOCATED): merge uses it to find what the children define.
        """
        if length is None:
            length = self.virtual_size - offset
        self._check_range(offset, length)
        if levels is None or levels >= len(self.layers):
            yield from coalesce_extents(self._resolve(offset, length, 0))
            return
        sub = Disk(self.layers[:levels])
        yield from coalesce_extents(sub._resolve(offset, length, 0))

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise UsageError(
                f"range [{offset}, {offset + length}) outside the disk (size "
                f"{self.virtual_size})", path=self.top.path)

    # --- reading ----------------------------------------------------------------------

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        """Fill ``buf`` with the disk's bytes at ``offset``; returns ``len(buf)``.

        Any byte offset and length are accepted; layers are asked for whole sectors.
        """
        mv = memoryview(buf).cast("B")
        length = len(mv)
        self._check_range(offset, length)
        sector = self.logical_sector_size
        start = offset - offset % sector
        end = -(-(offset + length) // sector) * sector
        if start == offset and end == offset + length:
            self._read_aligned(start, mv)
        else:
            tmp = bytearray(end - start)
            self._read_aligned(start, memoryview(tmp))
            mv[:] = tmp[offset - start: offset - start + length]
        return length

    def read(self, offset: int, size: int) -> bytes:
        """Return ``size`` bytes of the disk at ``offset``."""
        buf = bytearray(size)
        self.readinto(offset, buf)
        return bytes(buf)

    def _read_aligned(self, offset: int, mv: memoryview) -> None:
        for ext in self._resolve(offset, len(mv), 0):
            lo = ext.offset - offset
            hi = lo + ext.length
            if ext.kind is ExtentKind.DATA:
                assert ext.layer is not None
                self.layers[ext.layer].pread_into(ext.file_offset, mv[lo:hi])
            else:
                pos = lo
                while pos < hi:
                    n = min(hi - pos, len(_ZEROS))
                    mv[pos:pos + n] = _ZEROS[:n]
                    pos += n

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        for layer in self.layers:
            layer.close()

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Disk {self.top.path!r} chain of {len(self.layers)}>"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_parent(child: Layer, link: ParentLink, *, lenient: bool = False) -> Layer:
    """Open the parent named by ``link``, trying each locator then a search by id.

    A found file whose id does not match is a :class:`ParentMismatchError` unless a later
    candidate matches; when nothing is found the error lists every location tried, and
    says why each candidate that exists could not be used. A locator path holding a NUL
    is invalid: it is skipped with a warning on ``child``. The child itself is never its
    own parent: a link that only leads back to it is a :class:`ChainLoopError`.
    """
    accepted = {link.expected_id, *link.alternate_ids}
    tried: list[str] = []
    mismatched: list[str] = []
    seen: set[str] = set()
    itself = False
    for label, cand in link.candidates:
        if "\0" in cand:
            shown = cand.split("\0", 1)[0]
            child.warnings.append(f"{label} locator {shown!r} holds a NUL: invalid, skipped")
            tried.append(f"{label} {shown!r}... (invalid: holds a NUL)")
            continue
        tried.append(f"{label} {cand}")
        real = os.path.realpath(cand)
        if real in seen or not os.path.isfile(cand):
            continue
        seen.add(real)
        if _same_file(cand, child.path):
            itself = True
            continue
        layer, why = _try_open(cand, lenient)
        if layer is None:
            mismatched.append(f"{cand} (not a readable image: {why})")
            continue
        if layer.link_id in accepted:
            return layer
        mismatched.append(f"{cand} (id {layer.link_id})")
        layer.close()
    if link.search_dir and os.path.isdir(link.search_dir):
        tried.append(f"search by id in {link.search_dir}")
        suffixes = link.search_suffixes or formats.get(child.format).all_suffixes
        for name in sorted(os.listdir(link.search_dir)):
            cand = os.path.join(link.search_dir, name)
            if not name.lower().endswith(suffixes) or not os.path.isfile(cand):
                continue
            if os.path.realpath(cand) in seen or _same_file(cand, child.path):
                continue
            layer, _why = _try_open(cand, lenient)
            if layer is None:
                continue
            if layer.link_id in accepted:
                return layer
            layer.close()
    if mismatched:
        raise ParentMismatchError(
            f"parent id {link.expected_id} not found; candidates with other ids: "
            + ", ".join(mismatched), path=child.path)
    if itself:
        raise ChainLoopError("the parent locator points at the disk itself",
                             path=child.path)
    raise ParentNotFoundError(f"parent {link.expected_id} not found", path=child.path,
                              tried=tried)


def _try_open(path: str, lenient: bool) -> tuple[Layer | None, str]:
    """The layer at ``path``, or ``None`` and why it cannot be opened."""
    try:
        return open_layer(path, lenient=lenient), ""
    except VhdlibError as e:
        log.debug("candidate parent %s not usable: %s", path, e)
        return None, e.message


def open(path: str | os.PathLike[str], *, lenient: bool = False,
         resolve_parents: bool = True, fmt: str | None = None) -> Disk:
    """Open a VHD or VHDX file and resolve its whole chain, read-only.

    ``lenient`` accepts images whose checksums are wrong (with a warning on the layer).
    ``resolve_parents=False`` opens only this file (parent sectors then read as zeros).
    ``fmt`` skips detection (``"raw"`` cannot be detected).
    """
    path = os.fspath(path)
    layer = open_layer(path, lenient=lenient, fmt=fmt)
    if not resolve_parents:
        return Disk([layer])
    try:
        return resolve(layer, lenient=lenient)
    except BaseException:
        layer.close()
        raise


def resolve(top: Layer, *, lenient: bool = False) -> Disk:
    """The chain below the open layer ``top``: every parent opened as :func:`open` opens
    it (``lenient`` for the parents only). On success the :class:`Disk` owns ``top``; on
    an error the parents opened so far are closed and ``top`` is left open.
    """
    path = top.path
    layers: list[Layer] = [top]
    try:
        layer = top
        seen = {os.path.realpath(path)}
        ids = {layer.link_id}
        while True:
            link = layer.parent_link
            if link is None:
                break
            if len(layers) >= MAX_CHAIN_DEPTH:
                raise ChainLoopError(f"chain deeper than {MAX_CHAIN_DEPTH}", path=path)
            parent = find_parent(layer, link, lenient=lenient)
            real = os.path.realpath(parent.path)
            if real in seen or (parent.link_id in ids and parent.parent_link is not None
                                and parent.parent_link.expected_id in ids):
                parent.close()
                raise ChainLoopError(f"parent link of {layer.path} leads back to "
                                     f"{parent.path}, already in the chain", path=path)
            seen.add(real)
            ids.add(parent.link_id)
            layers.append(parent)
            if parent.virtual_size != layer.virtual_size:
                # MS-VHDX 2.6.2.6 / VHD spec: a differencing disk has its parent's size.
                raise ChainError(
                    f"virtual size {layer.virtual_size} differs from the parent's "
                    f"({parent.virtual_size}, {parent.path}): a chain must agree on size",
                    path=layer.path)
            layer = parent
        return Disk(layers)
    except BaseException:
        for opened in layers[1:]:
            opened.close()
        raise


def check_sizes(disk: Disk) -> None:
    """Refuse a chain whose layers disagree on sector size (cannot be read sector-exact)."""
    sizes = {layer.logical_sector_size for layer in disk.layers}
    if len(sizes) > 1:
        raise ImageError(f"layers disagree on logical sector size: {sorted(sizes)}",
                         path=disk.top.path)
