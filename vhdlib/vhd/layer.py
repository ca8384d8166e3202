"""VHD layers: read, write, check and repair fixed, dynamic and differencing VHDs.

Structures are declared in :mod:`vhdlib.vhd.structs`, the BAT and its bitmaps in
:mod:`vhdlib.vhd.bat`, the footers in :mod:`vhdlib.vhd.footers`, the parent locators in
:mod:`vhdlib.vhd.locators`; this module ties them together. Spec references are to
Microsoft's "Virtual Hard Disk Image Format Specification" 1.0.

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

Disk types
    A fixed disk has no BAT (``bat is None``): its data is the file. Dynamic and
    differencing disks have one; differencing disks also have parent locators, and their
    BAT marks new blocks only where written (``BlockTable.differencing``).

Block allocation: see :mod:`vhdlib.vhd.bat`. Nothing is fsync'd except in
:meth:`VhdLayer.flush`, repairs and compaction steps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import ImageError, UnsupportedError, UsageError
from vhdlib.extents import Segment, SegmentState, coalesce_segments
from vhdlib.fileio import Buffer
from vhdlib.geometry import Geometry
from vhdlib.layer import DiskType, Layer, ParentLink, Problem
from vhdlib.vhd.bat import BlockTable
from vhdlib.vhd.blockstore import VhdBlockStore
from vhdlib.vhd.check import check_layer
from vhdlib.vhd.footers import choose_footer, footer_info
from vhdlib.vhd.header import read_header
from vhdlib.vhd.layout import (
    DATA_ALIGNMENT,
    MAX_BLOCK_SIZE,
    ZEROS,
    align_up,
    slot_position,
    valid_block_size,
)
from vhdlib.vhd.locators import parent_link, read_locators
from vhdlib.vhd.structs import (
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    DISK_TYPE_FIXED,
    FOOTER_SIZE,
    FOOTER_SIZE_OLD,
    HEADER_SIZE,
    SECTOR_SIZE,
    Bat,
    DynamicHeader,
    Footer,
)

TYPES = {DISK_TYPE_FIXED: DiskType.FIXED, DISK_TYPE_DYNAMIC: DiskType.DYNAMIC,
         DISK_TYPE_DIFFERENCING: DiskType.DIFFERENCING}


class VhdLayer(Layer):
    """One VHD file (fixed, dynamic or differencing)."""

    format = "vhd"

    def __init__(self, path: str, fd: int, *, writable: bool = False,
                 lenient: bool = False) -> None:
        super().__init__(path, fd, writable=writable)
        self.lenient = lenient
        self.header: DynamicHeader | None = None
        self.footer_copy: Footer | None = None
        #: The BAT (dynamic and differencing disks); ``None`` for a fixed disk.
        self.bat: BlockTable | None = None
        self._locator_paths: list[tuple[str, str]] = []
        #: What the BAT's validation found (a lenient open keeps them for check()).
        self.bat_problems: list[Problem] = []
        self._space_end = 0
        self._meta: list[tuple[int, int]] = []
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
        # Every structure read is bounds-checked in one place (Layer.check_range).
        return self.pread(size, offset)

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        if size < FOOTER_SIZE_OLD:
            raise ImageError(f"truncated: {size} bytes cannot hold a VHD footer", path=self.path)
        choice = choose_footer(self._pread, size, lenient=self.lenient, path=self.path)
        self.warnings.extend(choice.warnings)
        self.footer = choice.footer
        self.footer_copy = choice.copy
        self._footer_pos = choice.position
        #: The trailing footer is lost (the copy at offset 0 is in charge); it is damaged.
        self.footer_from_copy = choice.from_copy
        self.trailing_checksum_bad = choice.trailing_bad
        f = self.footer
        # Spec "Disk Type": 2 fixed, 3 dynamic, 4 differencing; 1, 5, 6 are deprecated.
        if f.disk_type not in TYPES:
            raise UnsupportedError(f"unsupported VHD disk type {f.disk_type}", path=self.path)
        self.disk_type = TYPES[f.disk_type]
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

    def _load_dynamic(self, size: int) -> None:
        f = self.footer
        h = read_header(self._pread, f.data_offset, size, lenient=self.lenient,
                        path=self.path, warnings=self.warnings)
        self.header = h
        off = f.data_offset
        # Spec "Block Size": a power of two multiple of the sector size.
        bs = h.block_size
        if not valid_block_size(bs):
            raise ImageError(f"block size {bs} is not a power of two in [512, "
                             f"{MAX_BLOCK_SIZE}]", path=self.path)
        self.block_size = bs
        nblocks = -(-self.virtual_size // bs)
        # Spec "Max Table Entries": one entry per block of the disk; never fewer.
        if h.max_table_entries < nblocks:
            raise ImageError(f"BAT has {h.max_table_entries} entries, the disk needs "
                             f"{nblocks}", path=self.path)
        bat_bytes = h.max_table_entries * 4
        # Spec "Table Offset": the table must lie inside the file; checked before allocating.
        if h.table_offset % SECTOR_SIZE or h.table_offset < SECTOR_SIZE \
                or h.table_offset + bat_bytes > size:
            raise ImageError(f"BAT of {h.max_table_entries} entries at {h.table_offset} lies "
                             f"outside the file ({size} bytes)", path=self.path)
        raw_bat = self._pread(nblocks * 4, h.table_offset)
        self.bat = BlockTable(
            Bat.parse(raw_bat, nblocks).entries, block_size=bs,
            virtual_size=self.virtual_size, table_offset=h.table_offset,
            differencing=self.disk_type is DiskType.DIFFERENCING, path=self.path,
            read=self._pread, hint=self._hint,
            # Looked up per call: every write of the layer goes through _io_write.
            write=lambda offset, bufs: self._io_write(offset, bufs))
        self._meta = [(0, SECTOR_SIZE), (off, off + HEADER_SIZE),
                      (h.table_offset, h.table_offset + bat_bytes)]
        if self.disk_type is DiskType.DIFFERENCING:
            scan = read_locators(h, self.path, size, self._pread)
            self.warnings.extend(scan.warnings)
            self._meta.extend(scan.ranges)
            self._space_end = scan.space_end
            self._locator_paths = scan.candidates
        self.bat_problems = self.bat.validate(size, self._meta)
        if self.bat_problems:
            msg = "; ".join(p.message for p in self.bat_problems[:5])
            if not self.lenient:
                raise ImageError(f"bad block allocation table: {msg}", path=self.path)
            self.warnings.append(f"bad block allocation table (accepted: lenient): {msg}")
        if self.footer_from_copy:
            self._footer_pos = self.data_end()
        if self.writable and self.bat_problems:
            raise ImageError("refusing to write: " + "; ".join(
                p.message for p in self.bat_problems), path=self.path)

    # --- layout (public for the block store) ----------------------------------------------

    def metadata_ranges(self) -> list[tuple[int, int]]:
        """File ranges of the structures: footer copy, header, BAT, locator data."""
        return list(self._meta)

    def metadata_end(self) -> int:
        """End of the metadata area: structures, locator spaces, the 4 KiB-padded BAT."""
        end = max(max(e for _, e in self._meta), self._space_end)
        assert self.bat is not None
        return max(end, align_up(self.bat.table_offset + self.bat.count * 4, DATA_ALIGNMENT))

    def data_end(self) -> int:
        """End of everything referenced: metadata and allocated slots.

        The BAT counts as its 4 KiB-padded region, as :func:`create` lays it out (and as
        Hyper-V does: dynamic.vhd's block 0 at sector 15), so the slot a repair or an
        allocation picks after a crash is the one an uninterrupted run picked.
        """
        assert self.bat is not None
        return align_up(max(self.metadata_end(), self.bat.slots_end()), SECTOR_SIZE)

    @property
    def footer_position(self) -> int:
        """Where the trailing footer is (or, when it is lost, where it belongs)."""
        return self._footer_pos

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
        return parent_link(self.header, self._locator_paths, self.path)

    def structure_checksum(self) -> str:
        """Footer checksum (and dynamic header checksum) as hex."""
        s = f"{self.footer.checksum:08x}"
        if self.header is not None:
            s += f"-{self.header.checksum:08x}"
        return s

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.footer.cylinders, self.footer.heads, self.footer.sectors)

    def info(self) -> dict[str, Any]:
        """Layer info plus the VHD footer and header facts.

        ``chs_size`` is what qemu 7.2 reports for ``vpc ``-creator and fixed disks of
        creators it does not know (MANIFEST section 7); ``virtual_size`` is current_size.
        """
        d = super().info()
        d.update({"chs_size": self.geometry.size, "geometry": self.geometry.to_dict()})
        d.update(footer_info(self.footer))
        if self.header is not None and self.bat is not None:
            d.update({
                "bat_offset": self.header.table_offset,
                "bat_entries": self.header.max_table_entries,
                "blocks": self.bat.count,
                "allocated_blocks": self.bat.allocated_count(),
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

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        """Segments of ``[offset, offset+length)``: fixed disks are one PRESENT segment."""
        self._check_range(offset, length)
        if length == 0:
            return
        if self.bat is None:
            yield Segment(offset, length, SegmentState.PRESENT, offset)
            return
        yield from coalesce_segments(self.bat.segments(offset, length))

    # --- low-level writes (one place, so tests can record the syscalls) -----------------

    def _hint(self, offset: int, length: int) -> None:
        fileio.will_need(self._fd, offset, length)

    def _io_write(self, offset: int, bufs: Sequence[Buffer]) -> None:
        """pwritev ``bufs`` at ``offset``, looping over short writes."""
        fileio.write_all(self._fd, bufs, offset, path=self.path)

    def _io_truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def write_file(self, offset: int, buffers: Sequence[Buffer]) -> None:
        """Write ``buffers`` at file ``offset`` (raw file bytes; compaction moves slots)."""
        self._require_writable()
        self._io_write(offset, buffers)

    def end_file_at(self, end: int) -> None:
        """Truncate the file to ``end``, then write the trailing footer there (a kill
        between leaves the copy at offset 0 in charge), then fsync."""
        self._require_writable()
        self._io_truncate(end)
        self._io_write(end, [self.footer.serialize()])
        os.fsync(self._fd)
        self._footer_pos = end
        self.footer_from_copy = False

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
        bat = self.bat
        if bat is None:
            self._write_plain(offset, mv, length)
            return
        bs = self.block_size
        pos = offset
        while pos < end:
            block = pos // bs
            slot = bat.slot_offset(block)
            if slot is not None:
                stop = min(end, (block + 1) * bs)
                piece = None if mv is None else mv[pos - offset:stop - offset]
                # Data first, then (if needed) the bitmap bits: a kill in between leaves
                # the sectors absent and reading the parent, as before the write.
                self._write_plain(slot + bat.bitmap_size + pos - block * bs, piece, stop - pos)
                bat.set_present(block, pos - block * bs, stop - pos)
                pos = stop
                continue
            last = bat.unallocated_run(block, end)
            stop = min(end, (last + 1) * bs)
            if mv is None and not bat.differencing:
                pos = stop  # unallocated dynamic blocks already read as zeros
                continue
            piece = None if mv is None else mv[pos - offset:stop - offset]
            self._ensure_clean_tail()
            self._footer_pos = bat.allocate(block, last + 1, pos, piece, stop - pos,
                                            at=self._footer_pos,
                                            footer=self.footer.serialize())
            self.footer_from_copy = False
            pos = stop

    def _write_plain(self, file_offset: int, mv: memoryview | None, length: int) -> None:
        if mv is not None:
            self._io_write(file_offset, [mv])
            return
        done = 0
        while done < length:
            n = min(length - done, len(ZEROS))
            self._io_write(file_offset + done, [memoryview(ZEROS)[:n]])
            done += n

    def _ensure_clean_tail(self) -> None:
        """Before appending: the bytes past the footer position must be a hole (zeros)."""
        size = os.fstat(self._fd).st_size
        if size > self._footer_pos + FOOTER_SIZE or self.footer_from_copy:
            # An orphan tail (interrupted allocation): nothing references it.
            self._io_truncate(self._footer_pos)

    def flush(self) -> None:
        """fsync everything written so far (the only fsync of the write path)."""
        if self.writable:
            os.fsync(self._fd)

    # --- check / repair -----------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Checksums, footer copy, BAT entries, orphan tail, bitmap bits past the end."""
        return check_layer(self)

    def repair(self) -> list[str]:
        """Safe repairs only: trailing footer from a valid copy, orphan tail trimmed,
        footer copy rewritten from a valid trailing footer. Returns what was done."""
        self._require_writable()
        done: list[str] = []
        if self.header is None or self.bat_problems:
            return done
        f = self.footer
        if not f.checksum_ok:
            return done  # nothing trustworthy to copy from
        codes = {p.code for p in self.check()}
        if "footer_missing" in codes or "orphan_tail" in codes:
            pos = slot_position(self.data_end())
            # Footer first (into unreferenced space), then the truncation: a kill between
            # leaves a valid footer at the very end either way.
            self._io_write(pos, [f.serialize()])
            self._io_truncate(pos + FOOTER_SIZE)
            os.fsync(self._fd)
            done.append(f"wrote the trailing footer at {pos} and trimmed the file to "
                        f"{pos + FOOTER_SIZE} bytes")
            self._footer_pos = pos
            self.footer_from_copy = False
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
        pos = self._footer_pos if not self.footer_from_copy else os.fstat(self._fd).st_size
        self._io_write(pos, [f.serialize()])
        if self.header is not None:
            self._io_write(0, [f.serialize()])
            self.footer_copy = f
        os.fsync(self._fd)
        self.footer = f
        self._footer_pos = pos
        self.footer_from_copy = False

    def unallocated_blocks(self) -> int:
        return self.bat.count - self.bat.allocated_count() if self.bat is not None else 0

    def bytes_per_new_block(self) -> int:
        # Slots are placed so each block's data is 4 KiB aligned (layout.slot_position).
        return align_up(self.bat.slot_size, DATA_ALIGNMENT) if self.bat is not None else 0

    def block_store(self) -> VhdBlockStore | None:
        if self.bat is None:
            return None
        return VhdBlockStore(self, self.bat)
