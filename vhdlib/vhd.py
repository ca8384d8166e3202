"""VHD layers: read, write, create, check and repair fixed, dynamic and differencing VHDs.

Structures are declared in :mod:`vhdlib.vhd_structs`; this module holds the behaviour.
Spec references are to Microsoft's "Virtual Hard Disk Image Format Specification" 1.0.

Virtual size
    ``virtual_size`` is the footer's ``current_size`` (what Hyper-V, Disk2vhd and libvhdi
    use). ``info()`` also reports the CHS size: qemu 7.2 takes the size from CHS for images
    whose creator is not ``win ``/``qem2``/``d2v ``/``CTXS``/``tap\\0`` (so for ``vpc ``
    images, mkimg's ``*img`` fixed disks and our own ``vhdm`` images) unless CHS is pinned at
    the maximum (MANIFEST section 7).

Sector bitmaps of dynamic (non-differencing) disks
    qemu ignores them (an allocated block is data), libvhdi reads them; on every real image
    the two agree because the bitmaps of allocated blocks are all ones (Disk2vhd even sets
    bits past the virtual end). We follow the spec: a set bit is PRESENT, a clear bit ABSENT
    (reads zero: a dynamic disk has no parent). All-ones bitmaps, the only kind Hyper-V,
    qemu, Disk2vhd and vhdlib write, take a fast path: the whole block is one PRESENT
    segment. Bits past the virtual end are never consulted.

Block allocation (crash-safe, VHD spec "Block Allocation Table and Data Blocks")
    1. bitmap + data of the new blocks at the old trailing-footer position (overwriting it),
    2. the trailing footer at the new end,
    3. the BAT entries.
    A kill after 1 leaves no valid trailing footer: the copy at offset 0 is used (warning).
    A kill after 2 leaves an unreferenced slot before the footer (an orphan tail that
    :meth:`VhdLayer.repair` trims). Writes into allocated differencing blocks write data,
    then bitmap bits. Nothing is fsync'd except in :meth:`VhdLayer.flush`.

Layout (as Hyper-V does, see dissect dynamic.vhd and dfvfs fat-differential.vhd)
    footer copy at 0, header at 512, (differencing: W2ku locator at 4096), BAT in a
    4 KiB-rounded region, (differencing: W2ru locator, 64 KiB space), then slots placed so
    that every block's data is 4 KiB aligned (its 512-byte bitmap sits just before), and the
    trailing footer at the position of the next slot.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import uuid as uuid_mod
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

from vhdlib import bitmap as bitmap_mod
from vhdlib import fileio
from vhdlib.errors import (
    ChecksumError,
    ImageError,
    InsufficientSpaceError,
    InternalError,
    UnsupportedError,
    UsageError,
)
from vhdlib.extents import Segment, SegmentState, coalesce_segments
from vhdlib.geometry import Geometry, chs_for_size
from vhdlib.layer import BlockStore, DiskType, Layer, ParentLink, Problem
from vhdlib.vhd_structs import (
    BAT_ENTRY_UNUSED,
    DEFAULT_BLOCK_SIZE,
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    DISK_TYPE_FIXED,
    FIXED_DATA_OFFSET,
    FOOTER_COOKIE,
    FOOTER_SIZE,
    FOOTER_SIZE_OLD,
    HEADER_COOKIE,
    HEADER_SIZE,
    HEADER_VERSION,
    MAX_VIRTUAL_SIZE,
    PLATFORM_CODE_MACX,
    PLATFORM_CODE_W2KU,
    PLATFORM_CODE_W2RU,
    PLATFORM_CODE_WI2K,
    PLATFORM_CODE_WI2R,
    SECTOR_SIZE,
    Bat,
    DynamicHeader,
    Footer,
    ParentLocator,
    bitmap_size,
    entries_bytes,
    unix_time,
    vhd_timestamp,
)

__all__ = ["MAX_VIRTUAL_SIZE", "VhdBlockStore", "VhdLayer", "create", "vhd_timestamp"]

_TYPES = {DISK_TYPE_FIXED: DiskType.FIXED, DISK_TYPE_DYNAMIC: DiskType.DYNAMIC,
          DISK_TYPE_DIFFERENCING: DiskType.DIFFERENCING}
_TYPE_CODES = {v: k for k, v in _TYPES.items()}
#: Slots are placed so that block data is aligned to this (Hyper-V's layout).
DATA_ALIGNMENT = 4096
#: Largest block size we accept; the spec's default is 2 MiB and Hyper-V never exceeds it.
MAX_BLOCK_SIZE = 256 << 20
#: Locator data larger than this is not a path (W2ku paths are at most 32767 UTF-16 units).
MAX_LOCATOR_LENGTH = 65536
#: Bitmaps kept in the LRU cache: 512 bytes each at the default block size, so 8 MiB
#: covers 32 GiB of allocated blocks (a copy and its verify pass read each once).
BITMAP_CACHE_BLOCKS = 16384
#: Blocks allocated per batched pwritev (keeps the iovec under IOV_MAX).
MAX_ALLOC_GROUP = 64
_ZEROS = bytes(4 << 20)

_FULL = 1  # block state cache: bitmap is all ones
_PARTIAL = 2


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _slot_position(end: int) -> int:
    """First slot position at or after ``end`` whose data (after a 512-byte bitmap) is
    4 KiB aligned: Hyper-V's layout (dynamic.vhd block 0 at sector 15, stride 2 MiB + 4 KiB)."""
    return _align_up(end + SECTOR_SIZE, DATA_ALIGNMENT) - SECTOR_SIZE


class VhdLayer(Layer):
    """One VHD file (fixed, dynamic or differencing)."""

    format = "vhd"

    def __init__(self, path: str, fd: int, *, writable: bool = False,
                 lenient: bool = False) -> None:
        super().__init__(path, fd, writable=writable)
        self.lenient = lenient
        self.header: DynamicHeader | None = None
        self.footer_copy: Footer | None = None
        self._bat = array("I")
        self._bitmaps: OrderedDict[int, bytes] = OrderedDict()
        self._state = bytearray()
        self._locator_paths: list[tuple[str, str]] = []
        self._bat_problems: list[Problem] = []
        self._header_checksum_bad = False
        self._space_end = 0
        try:
            self._load()
        except (ValueError, OverflowError, EOFError) as e:
            raise ImageError(f"unreadable VHD structure: {e}", path=path) from e
        except OSError as e:
            raise ImageError(f"I/O error reading the image: {e.strerror or e}", path=path) from e

    def __enter__(self) -> VhdLayer:
        return self

    # --- loading ------------------------------------------------------------------------

    def _pread(self, size: int, offset: int) -> bytes:
        return fileio.pread(self._fd, size, offset)

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        if size < FOOTER_SIZE_OLD:
            raise ImageError(f"truncated: {size} bytes cannot hold a VHD footer", path=self.path)
        self._load_footer(size)
        f = self.footer
        # Spec "Disk Type": 2 fixed, 3 dynamic, 4 differencing; 1, 5, 6 are deprecated.
        if f.disk_type not in _TYPES:
            raise UnsupportedError(f"unsupported VHD disk type {f.disk_type}", path=self.path)
        self.disk_type = _TYPES[f.disk_type]
        # Spec "Current Size": the virtual size in bytes; we address whole sectors.
        if f.current_size % SECTOR_SIZE or f.current_size <= 0:
            raise ImageError(f"current size {f.current_size} is not a positive multiple of "
                             f"{SECTOR_SIZE}", path=self.path)
        self.virtual_size = f.current_size
        if self.disk_type is DiskType.FIXED:
            # Spec "Fixed Hard Disk Image": data, then the footer; nothing else.
            if f.current_size > self._footer_pos:
                raise ImageError(
                    f"truncated: fixed disk of {f.current_size} bytes but only "
                    f"{self._footer_pos} bytes of data before the footer", path=self.path)
            self.block_size = 0
            return
        self._load_dynamic(size)

    def _load_footer(self, size: int) -> None:
        """Pick the footer: the trailing one, else (dynamic) the copy at offset 0."""
        tail = self._pread(FOOTER_SIZE, size - FOOTER_SIZE) if size >= FOOTER_SIZE else b""
        old = self._pread(FOOTER_SIZE_OLD, size - FOOTER_SIZE_OLD)
        head = self._pread(FOOTER_SIZE, 0) if size >= FOOTER_SIZE else b""
        trailing: Footer | None = None
        pos = size - FOOTER_SIZE
        if tail[:8] == FOOTER_COOKIE:
            trailing = Footer.parse(tail)
        elif old[:8] == FOOTER_COOKIE:
            # Spec "Hard Disk Footer Format": pre-2004 Virtual PC wrote 511 bytes.
            trailing = Footer.parse(old)
            pos = size - FOOTER_SIZE_OLD
            self.warnings.append("old 511-byte footer")
        copy = Footer.parse(head) if head[:8] == FOOTER_COOKIE else None
        self.footer_copy = copy
        self._footer_from_copy = False
        self._trailing_checksum_bad = trailing is not None and not trailing.checksum_ok
        copy_ok = (copy is not None and copy.checksum_ok
                   and copy.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING))
        if trailing is not None and trailing.checksum_ok:
            self.footer = trailing
            self._footer_pos: int = pos
            return
        if copy_ok:
            assert copy is not None
            # Spec "Dynamic Hard Disk Image": the copy at offset 0 exists for exactly this.
            why = "damaged" if trailing is not None else "missing"
            self.warnings.append(f"trailing footer {why} (interrupted block allocation?); "
                                 "using the footer copy at offset 0")
            self.footer = copy
            self._footer_from_copy = True
            self._footer_pos = -1  # computed from the BAT once it is loaded
            return
        if trailing is None and copy is None:
            raise ImageError("not a VHD: no 'conectix' footer at the end or at offset 0",
                             path=self.path)
        # Spec "Checksum": ones' complement of the footer's byte sum.
        bad = trailing if trailing is not None else copy
        assert bad is not None
        msg = (f"footer checksum mismatch: stored 0x{bad.checksum:08x}, computed "
               f"0x{bad.compute_checksum():08x}")
        if not self.lenient:
            raise ChecksumError(msg + " (open with lenient to read anyway)", path=self.path)
        self.warnings.append(msg + " (accepted: lenient)")
        self.footer = bad
        if trailing is not None:
            self._footer_pos = pos
        else:
            self._footer_from_copy = True
            self._footer_pos = -1

    def _load_dynamic(self, size: int) -> None:
        f = self.footer
        # Spec "Data Offset": absolute offset of the dynamic header.
        off = f.data_offset
        if off % SECTOR_SIZE or off < SECTOR_SIZE or off + HEADER_SIZE > size:
            raise ImageError(f"dynamic header offset {off} outside the file ({size} bytes)",
                             path=self.path)
        raw = self._pread(HEADER_SIZE, off)
        if raw[:8] != HEADER_COOKIE:
            raise ImageError(f"no 'cxsparse' dynamic header at offset {off}", path=self.path)
        h = DynamicHeader.parse(raw)
        self.header = h
        if not h.checksum_ok:
            # Spec "Dynamic Disk Header Format", Checksum (dfvfs image-differential.vhd).
            msg = (f"dynamic header checksum mismatch: stored 0x{h.checksum:08x}, computed "
                   f"0x{h.compute_checksum():08x}")
            if not self.lenient:
                raise ChecksumError(msg + " (open with lenient to read anyway)", path=self.path)
            self.warnings.append(msg + " (accepted: lenient)")
            self._header_checksum_bad = True
        if h.header_version != HEADER_VERSION:
            raise UnsupportedError(f"dynamic header version 0x{h.header_version:08x}",
                                   path=self.path)
        # Spec "Block Size": a power of two multiple of the sector size.
        bs = h.block_size
        if bs < SECTOR_SIZE or bs & (bs - 1) or bs > MAX_BLOCK_SIZE:
            raise ImageError(f"block size {bs} is not a power of two in [512, "
                             f"{MAX_BLOCK_SIZE}]", path=self.path)
        self.block_size = bs
        self._spb = bs // SECTOR_SIZE
        self._bm_size = bitmap_size(bs)
        self._slot_size = self._bm_size + bs
        self._nblocks = -(-self.virtual_size // bs)
        # Spec "Max Table Entries": one entry per block of the disk; never fewer.
        if h.max_table_entries < self._nblocks:
            raise ImageError(f"BAT has {h.max_table_entries} entries, the disk needs "
                             f"{self._nblocks}", path=self.path)
        bat_bytes = h.max_table_entries * 4
        # Spec "Table Offset": the table must lie inside the file; checked before allocating.
        if h.table_offset % SECTOR_SIZE or h.table_offset < SECTOR_SIZE \
                or h.table_offset + bat_bytes > size:
            raise ImageError(f"BAT of {h.max_table_entries} entries at {h.table_offset} lies "
                             f"outside the file ({size} bytes)", path=self.path)
        raw_bat = self._pread(self._nblocks * 4, h.table_offset)
        self._bat = Bat.parse(raw_bat, self._nblocks).entries
        self._state = bytearray(self._nblocks)
        self._meta: list[tuple[int, int]] = [(0, SECTOR_SIZE), (off, off + HEADER_SIZE),
                                             (h.table_offset, h.table_offset + bat_bytes)]
        self._read_locators(size)
        self._validate_bat(size)
        if self._footer_from_copy:
            self._footer_pos = self._data_end()
        if self.writable and self._bat_problems:
            raise ImageError("refusing to write: " + "; ".join(
                p.message for p in self._bat_problems), path=self.path)

    def _read_locators(self, size: int) -> None:
        """Parent locators (spec "Parent Locator Entries") -> candidate paths."""
        assert self.header is not None
        if self.disk_type is not DiskType.DIFFERENCING:
            return
        child_dir = os.path.dirname(os.path.abspath(self.path))
        order = [PLATFORM_CODE_W2RU, PLATFORM_CODE_W2KU, PLATFORM_CODE_MACX,
                 PLATFORM_CODE_WI2R, PLATFORM_CODE_WI2K]
        locs = sorted((loc for loc in self.header.locators if loc.platform_code in order),
                      key=lambda loc: order.index(loc.platform_code))
        for loc in locs:
            code = loc.platform_code.decode("ascii")
            if loc.data_length == 0 or loc.data_length > MAX_LOCATOR_LENGTH \
                    or loc.data_offset + loc.data_length > size:
                self.warnings.append(f"{code} locator data at {loc.data_offset} "
                                     f"(+{loc.data_length}) is outside the file; ignored")
                continue
            # "data length" bytes, whatever the space unit (Windows writes bytes).
            # Only the bytes read count as metadata (overlap checks): the space field's unit
            # is ambiguous. The reserved space still bounds where the first slot goes (our
            # W2ru reserves 64 KiB), so a post-crash allocation lands where create's did.
            self._meta.append((loc.data_offset,
                               loc.data_offset + _align_up(loc.data_length, SECTOR_SIZE)))
            self._space_end = max(self._space_end, min(size, loc.data_offset
                                                       + loc.space_bytes()))
            raw = self._pread(loc.data_length, loc.data_offset)
            if loc.platform_code in (PLATFORM_CODE_W2RU, PLATFORM_CODE_W2KU):
                text = raw.decode("utf-16-le", errors="replace")
            elif loc.platform_code == PLATFORM_CODE_MACX:
                text = raw.decode("utf-8", errors="replace")
            else:
                text = raw.decode("latin-1")
            text = text.rstrip("\0")
            if not text:
                continue
            if loc.platform_code in (PLATFORM_CODE_W2RU, PLATFORM_CODE_WI2R):
                rel = text.replace("\\", "/")
                while rel.startswith("./"):
                    rel = rel[2:]
                self._add_candidate(f"{code} {text}", os.path.join(child_dir, rel))
            elif loc.platform_code == PLATFORM_CODE_MACX:
                p = unquote(urlparse(text).path) if "://" in text else text
                self._add_candidate(f"{code} {text}", p)
                self._add_candidate(f"{code} {text} (by name)",
                                    os.path.join(child_dir, posixpath.basename(p)))
            else:
                # Absolute Windows path: as is (it may be a POSIX path we wrote), then by
                # basename in the child's folder (the usual case after copying a chain).
                self._add_candidate(f"{code} {text}", text)
                base = text.replace("\\", "/").rsplit("/", 1)[-1]
                self._add_candidate(f"{code} {text} (by name)", os.path.join(child_dir, base))
        name = self.header.parent_unicode_name
        if name:
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            if base:
                self._add_candidate(f"name {name}", os.path.join(child_dir, base))

    def _add_candidate(self, label: str, path: str) -> None:
        # Same path from another locator is kept: the error lists every locator tried
        # (find_parent opens each real file once).
        if (label, path) not in self._locator_paths:
            self._locator_paths.append((label, path))

    def _validate_bat(self, size: int) -> None:
        """BAT entries inside the file, outside the metadata, not overlapping each other."""
        slots = sorted((e, i) for i, e in enumerate(self._bat) if e != BAT_ENTRY_UNUSED)
        problems: list[Problem] = []
        prev_end = 0
        prev_idx = -1
        for entry, idx in slots:
            start = entry * SECTOR_SIZE
            end = start + self._slot_size
            if start + self._bm_size > size:
                problems.append(Problem("bat_past_eof", f"BAT entry {idx} points to {start}, "
                                        f"past the end of the file ({size})"))
            elif any(s < end and start < e for s, e in self._meta):
                problems.append(Problem("bat_overlaps_metadata",
                                        f"BAT entry {idx} ({start}) overlaps the metadata"))
            if start < prev_end:
                problems.append(Problem("bat_overlap", f"BAT entries {prev_idx} and {idx} "
                                        f"overlap at {start}"))
            if end > prev_end:
                prev_end, prev_idx = end, idx
        self._bat_problems = problems
        if problems:
            msg = "; ".join(p.message for p in problems[:5])
            if not self.lenient:
                raise ImageError(f"bad block allocation table: {msg}", path=self.path)
            self.warnings.append(f"bad block allocation table (accepted: lenient): {msg}")

    def _meta_end(self) -> int:
        """End of the metadata area: structures, locator spaces, the 4 KiB-padded BAT."""
        end = max(max(e for _, e in self._meta), self._space_end)
        assert self.header is not None
        return max(end, _align_up(self.header.table_offset + self._nblocks * 4,
                                  DATA_ALIGNMENT))

    def _data_end(self) -> int:
        """End of everything referenced: metadata and allocated slots.

        The BAT counts as its 4 KiB-padded region, as :func:`create` lays it out (and as
        Hyper-V does: dynamic.vhd's block 0 at sector 15), so the slot a repair or an
        allocation picks after a crash is the one an uninterrupted run picked.
        """
        end = self._meta_end()
        for entry in self._bat:
            if entry != BAT_ENTRY_UNUSED:
                end = max(end, entry * SECTOR_SIZE + self._slot_size)
        return _align_up(end, SECTOR_SIZE)

    # --- identity -----------------------------------------------------------------------

    @property
    def link_id(self) -> UUID:
        """The footer's Unique Id (spec "Unique Id"): what a child's Parent Unique ID names."""
        return self.footer.unique_id

    @property
    def parent_link(self) -> ParentLink | None:
        """W2ru, W2ku, MacX locators, then the header's parent name, then a UUID search."""
        if self.disk_type is not DiskType.DIFFERENCING or self.header is None:
            return None
        return ParentLink(self.header.parent_unique_id, list(self._locator_paths),
                          os.path.dirname(os.path.abspath(self.path)))

    def structure_checksum(self) -> str:
        """Footer checksum (and dynamic header checksum) as hex."""
        s = f"{self.footer.checksum:08x}"
        if self.header is not None:
            s += f"-{self.header.checksum:08x}"
        return s

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.footer.cylinders, self.footer.heads, self.footer.sectors)

    @property
    def bat(self) -> array:
        """The BAT entries of the disk's blocks (sector offsets; 0xFFFFFFFF = unallocated)."""
        return self._bat

    def info(self) -> dict[str, Any]:
        """Layer info plus the VHD footer and header facts.

        ``chs_size`` is what qemu 7.2 reports for ``vpc ``-creator and fixed disks of
        creators it does not know (MANIFEST section 7); ``virtual_size`` is current_size.
        """
        d = super().info()
        f = self.footer
        d.update({
            "chs_size": self.geometry.size,
            "geometry": self.geometry.to_dict(),
            "original_size": f.original_size,
            "creator_app": f.creator_app.decode("latin-1"),
            "creator_version": f"{f.creator_version >> 16}.{f.creator_version & 0xFFFF}",
            "creator_host_os": f.creator_host_os.decode("latin-1"),
            "timestamp": f.timestamp,
            "timestamp_unix": unix_time(f.timestamp),
            "uuid": str(f.unique_id),
            "saved_state": bool(f.saved_state),
            "footer_checksum": f"{f.checksum:08x}",
        })
        if self.header is not None:
            allocated = sum(1 for e in self._bat if e != BAT_ENTRY_UNUSED)
            d.update({
                "bat_offset": self.header.table_offset,
                "bat_entries": self.header.max_table_entries,
                "blocks": self._nblocks,
                "allocated_blocks": allocated,
            })
            if self.disk_type is DiskType.DIFFERENCING:
                d["parent_uuid"] = str(self.header.parent_unique_id)
                d["parent_timestamp"] = self.header.parent_timestamp
                d["parent_name"] = self.header.parent_unicode_name
                d["parent_locators"] = [label for label, _ in self._locator_paths]
        return d

    # --- reading ------------------------------------------------------------------------

    def _check_range(self, offset: int, length: int) -> None:
        if offset % SECTOR_SIZE or length % SECTOR_SIZE:
            raise UsageError(f"range [{offset}, +{length}) is not sector aligned",
                             path=self.path)
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise UsageError(f"range [{offset}, {offset + length}) outside the disk "
                             f"({self.virtual_size} bytes)", path=self.path)

    def _bitmap(self, block: int) -> bytes:
        """Block ``block``'s sector bitmap (allocated blocks only), via the LRU cache."""
        bm = self._bitmaps.get(block)
        if bm is not None:
            self._bitmaps.move_to_end(block)
            return bm
        off = self._bat[block] * SECTOR_SIZE
        bm = self._pread(self._bm_size, off)
        if len(bm) < self._bm_size:
            raise ImageError(f"truncated: bitmap of block {block} at {off} runs past the end",
                             path=self.path)
        self._cache_bitmap(block, bm)
        return bm

    def _cache_bitmap(self, block: int, bm: bytes) -> None:
        self._bitmaps[block] = bm
        self._bitmaps.move_to_end(block)
        if len(self._bitmaps) > BITMAP_CACHE_BLOCKS:
            self._bitmaps.popitem(last=False)
        self._state[block] = _FULL if self._is_full(bm) else _PARTIAL

    def _is_full(self, bm: bytes) -> bool:
        whole = self._spb // 8
        if bm.count(0xFF, 0, whole) != whole:
            return False
        rest = self._spb % 8
        # A block of fewer than 8 sectors: its bits sit at the top of the byte (MSB-first).
        return rest == 0 or (bm[whole] >> (8 - rest)) == (1 << rest) - 1

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        """Segments of ``[offset, offset+length)``: fixed disks are one PRESENT segment."""
        self._check_range(offset, length)
        if length == 0:
            return
        if self.disk_type is DiskType.FIXED:
            yield Segment(offset, length, SegmentState.PRESENT, offset)
            return
        yield from coalesce_segments(self._block_segments(offset, length))

    def _block_segments(self, offset: int, length: int) -> Iterator[Segment]:
        bs = self.block_size
        bat = self._bat
        present = SegmentState.PRESENT
        absent = SegmentState.ABSENT
        pos = offset
        end = offset + length
        while pos < end:
            block = pos // bs
            bstart = block * bs
            bend = min(bstart + bs, end)
            entry = bat[block]
            if entry == BAT_ENTRY_UNUSED:
                yield Segment(pos, bend - pos, absent)
            else:
                data = entry * SECTOR_SIZE + self._bm_size
                if self._state[block] != _FULL:
                    bm = self._bitmap(block)
                if self._state[block] == _FULL:
                    yield Segment(pos, bend - pos, present, data + pos - bstart)
                else:
                    first = (pos - bstart) // SECTOR_SIZE
                    count = (bend - pos) // SECTOR_SIZE
                    for s, n, on in bitmap_mod.runs(bm, first, count, msb_first=True):
                        if on:
                            yield Segment(bstart + s * SECTOR_SIZE, n * SECTOR_SIZE, present,
                                          data + s * SECTOR_SIZE)
                        else:
                            yield Segment(bstart + s * SECTOR_SIZE, n * SECTOR_SIZE, absent)
            pos = bend

    # --- low-level writes (one place, so tests can record the syscalls) -----------------

    def _io_write(self, offset: int, bufs: Sequence[bytes | bytearray | memoryview]) -> None:
        """pwritev ``bufs`` at ``offset``, looping over short writes."""
        views = [memoryview(b).cast("B") for b in bufs if len(b)]
        while views:
            try:
                n = fileio.pwritev(self._fd, views, offset)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientSpaceError(f"no space left writing at {offset}",
                                                 path=self.path) from e
                raise
            offset += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]

    def _io_truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    # --- writing ------------------------------------------------------------------------

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write sector-aligned ``data`` at virtual ``offset`` (allocating crash-safely)."""
        self._require_writable()
        mv = memoryview(data).cast("B")
        self._check_range(offset, len(mv))
        self._write(offset, mv, len(mv))

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make the range read zero. Unallocated blocks of a dynamic disk already do; new
        differencing blocks get only a bitmap (their data area is a hole)."""
        self._require_writable()
        self._check_range(offset, length)
        self._write(offset, None, length)

    def _write(self, offset: int, mv: memoryview | None, length: int) -> None:
        end = offset + length
        if self.disk_type is DiskType.FIXED:
            self._write_plain(offset, mv, length)
            return
        bs = self.block_size
        bat = self._bat
        diff = self.disk_type is DiskType.DIFFERENCING
        pos = offset
        while pos < end:
            block = pos // bs
            if bat[block] != BAT_ENTRY_UNUSED:
                stop = min(end, (block + 1) * bs)
                piece = None if mv is None else mv[pos - offset:stop - offset]
                self._write_allocated(block, pos - block * bs, piece, stop - pos)
                pos = stop
                continue
            last = block
            while (last + 1) * bs < end and bat[last + 1] == BAT_ENTRY_UNUSED \
                    and last + 1 - block < MAX_ALLOC_GROUP:
                last += 1
            stop = min(end, (last + 1) * bs)
            if mv is None and not diff:
                pos = stop  # unallocated dynamic blocks already read as zeros
                continue
            piece = None if mv is None else mv[pos - offset:stop - offset]
            self._allocate(block, last + 1, pos, piece, stop - pos)
            pos = stop

    def _write_plain(self, file_offset: int, mv: memoryview | None, length: int) -> None:
        if mv is not None:
            self._io_write(file_offset, [mv])
            return
        done = 0
        while done < length:
            n = min(length - done, len(_ZEROS))
            self._io_write(file_offset + done, [memoryview(_ZEROS)[:n]])
            done += n

    def _write_allocated(self, block: int, inblock: int, mv: memoryview | None,
                         length: int) -> None:
        """Data first, then (if needed) the bitmap bits: a kill in between leaves the
        sectors absent and reading the parent, as before the write."""
        slot = self._bat[block] * SECTOR_SIZE
        self._write_plain(slot + self._bm_size + inblock, mv, length)
        if self._state[block] != _FULL:
            bm = self._bitmap(block)
        if self._state[block] == _FULL:
            return
        new = bytearray(bm)
        bitmap_mod.set_bits(new, inblock // SECTOR_SIZE, length // SECTOR_SIZE, msb_first=True)
        if new != bm:
            self._io_write(slot, [new])
            self._cache_bitmap(block, bytes(new))

    def _ensure_clean_tail(self) -> None:
        """Before appending: the bytes past the footer position must be a hole (zeros)."""
        size = os.fstat(self._fd).st_size
        if size > self._footer_pos + FOOTER_SIZE or self._footer_from_copy:
            # An orphan tail (interrupted allocation): nothing references it.
            self._io_truncate(self._footer_pos)

    def _allocate(self, first: int, stop: int, pos: int, mv: memoryview | None,
                  length: int) -> None:
        """Allocate blocks ``[first, stop)`` and write ``[pos, pos+length)`` into them.

        One pwritev for every bitmap and data piece (holes left where nothing is written:
        they lie past the old end of file, so they read zero), then the footer, then the
        BAT entries: three syscalls for any number of blocks.
        """
        self._ensure_clean_tail()
        bs = self.block_size
        diff = self.disk_type is DiskType.DIFFERENCING
        old_footer = self._footer_pos
        slot = _slot_position(old_footer)
        end = pos + length
        # Runs of (file offset, buffers); a gap over 64 KiB starts a new run (a hole).
        runs: list[tuple[int, list[bytes | bytearray | memoryview]]] = [(old_footer, [])]
        cursor = old_footer  # file offset the next buffer of the last run lands at

        def put(at: int, buf: bytes | bytearray | memoryview) -> None:
            nonlocal cursor
            gap = at - cursor
            if gap > 65536:
                runs.append((at, []))
            elif gap > 0:
                runs[-1][1].append(memoryview(_ZEROS)[:gap])
            runs[-1][1].append(buf)
            cursor = at + len(buf)

        entries = array("I")
        bitmaps: list[bytes] = []
        full = b"\xff" * self._bm_size
        for block in range(first, stop):
            bstart = block * bs
            lo = max(pos, bstart)
            hi = min(end, bstart + bs)
            if diff:
                bm = bytearray(self._bm_size)
                bitmap_mod.set_bits(bm, (lo - bstart) // SECTOR_SIZE, (hi - lo) // SECTOR_SIZE,
                                    msb_first=True)
                bmb = bytes(bm)
            elif bstart + bs > self.virtual_size:
                # The last block: mark only the sectors inside the disk (no bits past the end).
                bm = bytearray(self._bm_size)
                bitmap_mod.set_bits(bm, 0, (self.virtual_size - bstart) // SECTOR_SIZE,
                                    msb_first=True)
                bmb = bytes(bm)
            else:
                # Hyper-V and qemu mark a new dynamic block fully present; the rest is zero.
                bmb = full
            # The bitmap of the first slot overwrites the old footer (or a zero gap does).
            put(slot, bmb)
            if mv is not None:
                put(slot + self._bm_size + (lo - bstart), mv[lo - pos:hi - pos])
            entries.append(slot // SECTOR_SIZE)
            bitmaps.append(bmb)
            slot = _slot_position(slot + self._slot_size)
        bufs_count = sum(len(b) for _, b in runs)
        if bufs_count > 1000:
            raise InternalError("allocation iovec too long")
        for at, bufs in runs:
            self._io_write(at, bufs)
        new_footer = slot
        self._io_write(new_footer, [self.footer.serialize()])
        assert self.header is not None
        self._io_write(self.header.table_offset + first * 4, [entries_bytes(entries)])
        for i, block in enumerate(range(first, stop)):
            self._bat[block] = entries[i]
            self._cache_bitmap(block, bitmaps[i])
        self._footer_pos = new_footer
        self._footer_from_copy = False

    def flush(self) -> None:
        """fsync everything written so far (the only fsync of the write path)."""
        if self.writable:
            os.fsync(self._fd)

    # --- check / repair -----------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Checksums, footer copy, BAT entries, orphan tail, bitmap bits past the end."""
        out: list[Problem] = []
        f = self.footer
        if self._footer_from_copy:
            out.append(Problem("footer_missing", "trailing footer missing or damaged; the "
                               "copy at offset 0 is valid", repairable=self.disk_type
                               is not DiskType.FIXED))
        elif self._trailing_checksum_bad or not f.checksum_ok:
            out.append(Problem("footer_checksum", f"footer checksum stored 0x{f.checksum:08x},"
                               f" computed 0x{f.compute_checksum():08x}"))
        if self.header is None:
            return out
        h = self.header
        if not h.checksum_ok:
            out.append(Problem("header_checksum", f"dynamic header checksum stored "
                               f"0x{h.checksum:08x}, computed 0x{h.compute_checksum():08x}"))
        if not self._footer_from_copy and self.footer_copy != f:
            out.append(Problem("footer_copy_mismatch", "the footer copy at offset 0 differs "
                               "from the trailing footer", repairable=f.checksum_ok))
        out.extend(self._bat_problems)
        if not self._bat_problems:
            end = self._data_end()
            size = self.file_size
            fpos = self._footer_pos if not self._footer_from_copy else size
            # Layouts leave up to ~8 KiB between the last slot (or the BAT) and the footer:
            # Hyper-V rounds the BAT to 4 KiB and aligns block data to 4 KiB.
            if fpos - end > 2 * DATA_ALIGNMENT:
                out.append(Problem("orphan_tail", f"{fpos - end} bytes between the last "
                                   f"block ({end}) and the footer are unreferenced",
                                   repairable=True))
        past = self._bits_past_end()
        if past:
            out.append(Problem("bitmap_past_end", f"{past} sector bits set past the virtual "
                               "end in the last block (informational; Disk2vhd does this)"))
        return out

    def _bits_past_end(self) -> int:
        last = self._nblocks - 1
        if self._bat[last] == BAT_ENTRY_UNUSED:
            return 0
        used = (self.virtual_size - last * self.block_size) // SECTOR_SIZE
        if used >= self._spb:
            return 0
        bm = self._bitmap(last)
        return sum(n for _, n, on in bitmap_mod.runs(bm, used, self._spb - used,
                                                     msb_first=True) if on)

    def repair(self) -> list[str]:
        """Safe repairs only: trailing footer from a valid copy, orphan tail trimmed,
        footer copy rewritten from a valid trailing footer. Returns what was done."""
        self._require_writable()
        done: list[str] = []
        if self.header is None or self._bat_problems:
            return done
        f = self.footer
        if not f.checksum_ok:
            return done  # nothing trustworthy to copy from
        codes = {p.code for p in self.check()}
        if "footer_missing" in codes or "orphan_tail" in codes:
            pos = _slot_position(self._data_end())
            # Footer first (into unreferenced space), then the truncation: a kill between
            # leaves a valid footer at the very end either way.
            self._io_write(pos, [f.serialize()])
            self._io_truncate(pos + FOOTER_SIZE)
            os.fsync(self._fd)
            done.append(f"wrote the trailing footer at {pos} and trimmed the file to "
                        f"{pos + FOOTER_SIZE} bytes")
            self._footer_pos = pos
            self._footer_from_copy = False
        if self.footer_copy != f:
            self._io_write(0, [f.serialize()])
            os.fsync(self._fd)
            self.footer_copy = f
            done.append("rewrote the footer copy at offset 0")
        return done

    def renew_link_id(self, seed: bytes) -> None:
        """After a merge: a new footer Unique Id derived from ``seed``."""
        self.set_unique_id(UUID(bytes=hashlib.sha256(b"merged" + seed).digest()[:16],
                                version=4))

    def set_unique_id(self, unique_id: UUID) -> None:
        """Give the disk a new identity (footer Unique Id, both copies; VHD spec "Unique Id").

        After an in-place merge the ancestor's content changed: children merged into it
        (archived) must not resolve to it any more. Trailing footer first, then the copy
        at offset 0 (a kill between leaves the trailing one in charge; idempotent).
        """
        self._require_writable()
        if self.footer.unique_id == unique_id and self.footer_copy in (None, self.footer):
            return
        f = replace(self.footer, unique_id=unique_id).with_checksum()
        pos = self._footer_pos if not self._footer_from_copy else os.fstat(self._fd).st_size
        self._io_write(pos, [f.serialize()])
        if self.header is not None:
            self._io_write(0, [f.serialize()])
            self.footer_copy = f
        os.fsync(self._fd)
        self.footer = f
        self._footer_pos = pos
        self._footer_from_copy = False

    def block_store(self) -> VhdBlockStore | None:
        if self.header is None:
            return None
        return VhdBlockStore(self)


class VhdBlockStore(BlockStore):
    """Slots of a dynamic/differencing VHD: a slot is the bitmap (padded to 512) + block."""

    def __init__(self, layer: VhdLayer) -> None:
        assert layer.header is not None
        self.layer = layer
        self.block_count = layer._nblocks
        self.block_size = layer.block_size
        self.slot_size = layer._slot_size
        self.slot_alignment = SECTOR_SIZE

    def slot_offset(self, index: int) -> int | None:
        e = self.layer._bat[index]
        return None if e == BAT_ENTRY_UNUSED else e * SECTOR_SIZE

    def droppable(self, index: int) -> bool:
        lay = self.layer
        off = self.slot_offset(index)
        if off is None:
            return True
        bm = lay._bitmap(index)
        if lay.disk_type is DiskType.DIFFERENCING:
            # Present zeros hide parent data: only a block with no bit set may go.
            return bm.count(0) == len(bm)
        pos = 0
        chunk = 4 << 20
        while pos < self.block_size:
            n = min(chunk, self.block_size - pos)
            data = lay._pread(n, off + lay._bm_size + pos)
            if len(data) < n:
                raise ImageError(f"truncated: block {index}", path=lay.path)
            # Bytes comparison is a memcmp (~20 GB/s); data usually shows in the first page.
            if data[:4096] != _ZEROS[:min(n, 4096)] or data != _ZEROS[:n]:
                return False
            pos += n
        return True

    def _set_entry(self, index: int, value: int) -> None:
        lay = self.layer
        assert lay.header is not None
        lay._io_write(lay.header.table_offset + index * 4, [entries_bytes(array("I",
                                                                                [value]))])
        lay._bat[index] = value
        lay._bitmaps.pop(index, None)
        lay._state[index] = 0

    def drop(self, index: int) -> None:
        """BAT entry -> 0xFFFFFFFF (one aligned 4-byte write: atomic)."""
        self.layer._require_writable()
        if self.layer._bat[index] != BAT_ENTRY_UNUSED:
            self._set_entry(index, BAT_ENTRY_UNUSED)

    def move(self, index: int, new_offset: int) -> None:
        """Copy the slot, fsync, repoint the BAT entry, fsync."""
        lay = self.layer
        lay._require_writable()
        old = self.slot_offset(index)
        if old is None:
            raise UsageError(f"block {index} is not allocated", path=lay.path)
        if old == new_offset:
            return
        if new_offset % self.slot_alignment or new_offset < self.data_area_start() \
                or new_offset + self.slot_size > lay._footer_pos:
            raise UsageError(f"cannot move block {index} to {new_offset}", path=lay.path)
        pos = 0
        chunk = 4 << 20
        while pos < self.slot_size:
            n = min(chunk, self.slot_size - pos)
            data = lay._pread(n, old + pos)
            if len(data) < n:
                raise ImageError(f"truncated: block {index}", path=lay.path)
            lay._io_write(new_offset + pos, [data])
            pos += n
        os.fsync(lay.fd)
        self._set_entry(index, new_offset // SECTOR_SIZE)
        os.fsync(lay.fd)

    def reserved_ranges(self) -> list[tuple[int, int]]:
        lay = self.layer
        # The whole metadata area (padding included: _data_end counts it). Not the trailing
        # footer: it follows the last slot wherever that ends, truncate_after rewrites it.
        return sorted({(0, lay._meta_end()), *lay._meta})

    def data_area_start(self) -> int:
        return _align_up(self.layer._meta_end(), SECTOR_SIZE)

    def truncate_after(self, end: int) -> None:
        """Truncate to ``end``, then write the trailing footer there (a kill between leaves
        the copy at offset 0 in charge), then fsync."""
        lay = self.layer
        lay._require_writable()
        if end % SECTOR_SIZE or end < lay._data_end():
            raise UsageError(f"cannot truncate at {end}: blocks or metadata end at "
                             f"{lay._data_end()}", path=lay.path)
        lay._io_truncate(end)
        lay._io_write(end, [lay.footer.serialize()])
        os.fsync(lay.fd)
        lay._footer_pos = end
        lay._footer_from_copy = False


# --- creation -----------------------------------------------------------------------------


def _utf16le(text: str) -> bytes:
    return text.encode("utf-16-le")


def _relative_locator(parent_path: str, child_path: str) -> str:
    """W2ru text: the parent relative to the child's folder, ``.\\`` and backslashes."""
    rel = os.path.relpath(os.path.abspath(parent_path),
                          os.path.dirname(os.path.abspath(child_path)))
    rel = rel.replace("/", "\\")
    return rel if rel.startswith("..") else ".\\" + rel


def create(path: str | os.PathLike[str], virtual_size: int | None,
           disk_type: DiskType | str, *, block_size: int = DEFAULT_BLOCK_SIZE,
           parent: Layer | None = None, parent_path: str | None = None, sparse: bool = False,
           uuid: UUID | None = None, timestamp: int | None = None,
           creator_app: bytes = b"vhdm") -> VhdLayer:
    """Create a VHD and return it opened writable.

    ``timestamp`` is a VHD timestamp (seconds since 2000-01-01 UTC, see
    :func:`vhd_timestamp`); ``uuid`` and ``timestamp`` default to random / now and are
    parameters so resumed operations produce bit-identical files. Differencing disks need
    ``parent`` (an open VHD layer; ``virtual_size`` may be ``None`` to take the parent's);
    ``parent_path`` is the path recorded in the locators (default ``parent.path``).
    Fixed disks are fully allocated with ``posix_fallocate`` unless ``sparse``.
    """
    path = os.fspath(path)
    try:
        dtype = DiskType(disk_type)
    except ValueError as e:
        raise UsageError(f"unknown disk type {disk_type!r}", path=path) from e
    if os.path.lexists(path):
        raise UsageError("target already exists", path=path)
    if dtype is DiskType.DIFFERENCING:
        if parent is None:
            raise UsageError("a differencing disk needs a parent", path=path)
        if parent.format != "vhd":
            raise UsageError(f"a VHD's parent must be a VHD, not {parent.format}", path=path)
        if virtual_size is None:
            virtual_size = parent.virtual_size
        if virtual_size != parent.virtual_size:
            raise UsageError(f"size {virtual_size} differs from the parent's "
                             f"{parent.virtual_size}", path=path)
    elif parent is not None:
        raise UsageError(f"a {dtype.value} disk has no parent", path=path)
    if virtual_size is None or virtual_size <= 0 or virtual_size % SECTOR_SIZE:
        raise UsageError(f"size {virtual_size} is not a positive multiple of {SECTOR_SIZE}",
                         path=path)
    if virtual_size > MAX_VIRTUAL_SIZE:
        raise UsageError(f"size {virtual_size} exceeds the VHD limit of 2040 GiB "
                         f"({MAX_VIRTUAL_SIZE} bytes); use VHDX", path=path)
    if block_size < SECTOR_SIZE or block_size & (block_size - 1) or block_size > MAX_BLOCK_SIZE:
        raise UsageError(f"block size {block_size} is not a power of two in [512, "
                         f"{MAX_BLOCK_SIZE}]", path=path)
    uid = uuid if uuid is not None else uuid_mod.uuid4()
    ts = vhd_timestamp() if timestamp is None else timestamp
    geo = chs_for_size(virtual_size)
    code = _TYPE_CODES[dtype]
    footer = Footer.new(disk_type=code, size=virtual_size, cylinders=geo.cylinders,
                        heads=geo.heads, sectors=geo.sectors, unique_id=uid, timestamp=ts,
                        creator_app=creator_app,
                        data_offset=FIXED_DATA_OFFSET if code == DISK_TYPE_FIXED
                        else SECTOR_SIZE)
    with fileio.new_image(path) as fd:
        if dtype is DiskType.FIXED:
            _create_fixed(fd, virtual_size, footer, sparse)
        else:
            _create_dynamic(fd, path, virtual_size, footer, block_size, parent, parent_path)
        return VhdLayer(path, fd, writable=True)


def _create_fixed(fd: int, size: int, footer: Footer, sparse: bool) -> None:
    # Spec "Fixed Hard Disk Image": the data, then the 512-byte footer.
    if sparse:
        os.ftruncate(fd, size + FOOTER_SIZE)
    else:
        fileio.allocate(fd, 0, size + FOOTER_SIZE)
    fileio.pwrite(fd, footer.serialize(), size)


def _create_dynamic(fd: int, path: str, size: int, footer: Footer, block_size: int,
                    parent: Layer | None, parent_path: str | None) -> None:
    entries = -(-size // block_size)
    bat_region = _align_up(entries * 4, DATA_ALIGNMENT)
    locators: list[ParentLocator] = []
    blobs: list[tuple[int, bytes]] = []
    parent_uuid = None
    parent_ts = 0
    parent_name = ""
    if parent is None:
        bat_off = 3 * SECTOR_SIZE  # right after the header, as Hyper-V and qemu do
        end = bat_off + bat_region
    else:
        ppath = os.path.abspath(parent_path or parent.path)
        parent_uuid = parent.link_id
        pf = getattr(parent, "footer", None)
        # Spec "Parent Time Stamp": we record the parent footer's timestamp (stable, so a
        # resumed operation writes the same bytes; qemu and libvhdi do not compare it).
        parent_ts = pf.timestamp if isinstance(pf, Footer) else vhd_timestamp(
            os.stat(ppath).st_mtime)
        parent_name = ppath
        # fat-differential.vhd: W2ku at 4096 (4 KiB space), BAT, W2ru (64 KiB space).
        w2ku = _utf16le(ppath)
        w2ru = _utf16le(_relative_locator(ppath, path))
        ku_off = DATA_ALIGNMENT
        ku_space = max(DATA_ALIGNMENT, _align_up(len(w2ku), DATA_ALIGNMENT))
        bat_off = ku_off + ku_space
        ru_off = bat_off + bat_region
        ru_space = max(65536, _align_up(len(w2ru), DATA_ALIGNMENT))
        locators = [ParentLocator.new(PLATFORM_CODE_W2KU, ku_space, len(w2ku), ku_off),
                    ParentLocator.new(PLATFORM_CODE_W2RU, ru_space, len(w2ru), ru_off)]
        blobs = [(ku_off, w2ku), (ru_off, w2ru)]
        end = ru_off + ru_space
    header = DynamicHeader.new(table_offset=bat_off, max_table_entries=entries,
                               block_size=block_size, parent_unique_id=parent_uuid,
                               parent_timestamp=parent_ts, parent_name=parent_name,
                               locators=locators)
    footer_pos = _slot_position(end)
    meta = bytearray(footer_pos)
    meta[0:FOOTER_SIZE] = footer.serialize()
    meta[SECTOR_SIZE:SECTOR_SIZE + HEADER_SIZE] = header.serialize()
    meta[bat_off:bat_off + bat_region] = b"\xff" * bat_region
    for off, blob in blobs:
        meta[off:off + len(blob)] = blob
    buf = bytes(meta) + footer.serialize()
    done = 0
    while done < len(buf):
        done += fileio.pwrite(fd, buf[done:], done)
