"""VHDX layers (MS-VHDX v1.0): read, replay, write, create, check/repair, compaction.

Structures live in :mod:`vhdlib.vhdx_structs`, the log in :mod:`vhdlib.vhdx_log`.

Write model: payload data is written in place (new blocks at the allocation end, 1 MiB
aligned); BAT and sector-bitmap changes are kept as dirty 4 KiB pages in memory and reach
the file only through the log on :meth:`VhdxLayer.flush` (data fsync, log entry, fsync,
apply, fsync). A kill at any instant leaves a file that opens: unreferenced data is an
orphan tail, which ``repair`` trims and the next allocation reuses.

Bit-identical resume: see :meth:`VhdxLayer.finalize`.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

from vhdlib import bitmap as bm
from vhdlib import fileio, vhdx_log
from vhdlib import vhdx_structs as S
from vhdlib.errors import (
    ChecksumError,
    ImageError,
    InternalError,
    UnsupportedError,
    UsageError,
)
from vhdlib.extents import Segment, SegmentState, coalesce_segments
from vhdlib.layer import BlockStore, DiskType, Layer, ParentLink, Problem

MiB = S.MiB
_PAGE = 4096
_ZERO_MIB = bytes(MiB)
#: Dirty metadata pages kept before an automatic flush (keeps each flush one log entry).
_AUTO_FLUSH_PAGES = 192
#: Sector-bitmap slices cached per layer (LRU).
_BITMAP_CACHE = 256
#: Bytes of metadata region we are willing to read (the spec's is 1 MiB in practice).
_MAX_METADATA_REGION = 256 * MiB

GuidFactory = Callable[[], UUID]


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _derive_guid(seed: bytes, label: bytes) -> UUID:
    """A version-4-shaped GUID that is a pure function of ``seed`` and ``label``."""
    h = bytearray(hashlib.sha256(seed + b"\0vhdx\0" + label).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    return UUID(bytes=bytes(h))


class VhdxLayer(Layer):
    """One VHDX/AVHDX file. Read-only unless ``writable``.

    ``lenient`` accepts one-sided checksum damage silently and bad CRCs in both copies with
    a warning. ``guid_factory`` makes every GUID this layer generates (FileWriteGuid,
    DataWriteGuid, LogGuid) come from the caller, for reproducible output.
    """

    format = "vhdx"

    def __init__(self, path: str, fd: int, *, writable: bool, lenient: bool = False,
                 guid_factory: GuidFactory | None = None) -> None:
        super().__init__(path, fd, writable=writable)
        self.lenient = lenient
        self._new_guid: GuidFactory = guid_factory or uuid4
        self._overlay: vhdx_log.Overlay | None = None
        self._load_problems: list[Problem] = []
        self._replayed = False
        self._session_open = False   # headers carry our LogGuid (first write happened)
        self._data_changed = False
        self._log_writer: vhdx_log.LogWriter | None = None
        self._dirty_bat_pages: set[int] = set()
        self._dirty_pages: dict[int, bytearray] = {}   # sector-bitmap pages, by file offset
        self._bitmap_cache: OrderedDict[int, bytes] = OrderedDict()
        try:
            self._load()
        except (ValueError, OverflowError, S.StructError) as e:
            raise ImageError(f"invalid VHDX: {e}", path=path) from e

    # --- low-level IO -----------------------------------------------------------------

    def _read(self, offset: int, length: int) -> bytes:
        """Metadata read through the log overlay; short reads past EOF are an ImageError."""
        buf = bytearray(length)
        self.pread_into(offset, memoryview(buf))
        return bytes(buf)

    def pread_into(self, file_offset: int, buf: memoryview) -> None:
        ov = self._overlay
        if ov is None:
            super().pread_into(file_offset, buf)
            return
        # Read-only open of a dirty log: the file as replay would leave it.
        real = os.fstat(self._fd).st_size
        want = len(buf)
        if file_offset + want > ov.size:
            raise ImageError(f"truncated: needed bytes up to {file_offset + want} but the file "
                             f"ends at {ov.size}", path=self.path)
        n = max(0, min(want, real - file_offset))
        if n:
            super().pread_into(file_offset, buf[:n])
        if n < want:
            buf[n:] = bytes(want - n)
        ov.patch(file_offset, buf)

    @property
    def reads_file_bytes(self) -> bool:
        """False while a dirty log is replayed in memory (read-only open)."""
        return self._overlay is None

    @property
    def _size(self) -> int:
        """File size as the reader sees it (after an in-memory replay)."""
        real = os.fstat(self._fd).st_size
        return max(real, self._overlay.size) if self._overlay is not None else real

    # --- loading ----------------------------------------------------------------------

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        if size < S.REGION_TABLE2_OFFSET + S.REGION_TABLE_SIZE:
            raise ImageError(f"file of {size} bytes is too small for a VHDX", path=self.path)
        head = self._read(0, S.REGION_TABLE2_OFFSET + S.REGION_TABLE_SIZE)
        # 2.2.1 file identifier
        try:
            self.creator = S.FileIdentifier.parse(head).creator
        except S.StructError as e:
            raise ImageError(str(e), path=self.path) from e
        self._load_headers(head)
        self._load_log()
        if self._overlay is not None:
            head = self._read(0, S.REGION_TABLE2_OFFSET + S.REGION_TABLE_SIZE)
        self._load_regions(head)
        self._load_metadata()
        self._load_bat()
        self._alloc_end = self._compute_alloc_end()

    def _load_headers(self, head: bytes) -> None:
        """2.2.2: both headers; current = valid one with the higher sequence number."""
        found: list[S.Header | None] = []
        for off in (S.HEADER1_OFFSET, S.HEADER2_OFFSET):
            try:
                found.append(S.Header.parse(head[off:off + S.HEADER_SIZE]))
            except S.StructError:
                found.append(None)
        self._headers = found
        valid = [h for h in found if h is not None and h.valid]
        for i, h in enumerate(found):
            if h is None or not h.valid:
                self._load_problems.append(Problem(
                    "header_checksum", f"header {i + 1} is missing or its CRC-32C is wrong",
                    repairable=bool(valid)))
        if not valid:
            damaged = [h for h in found if h is not None]
            if not (self.lenient and damaged):
                raise ChecksumError("both VHDX headers are missing or fail their CRC-32C "
                                    "(MS-VHDX 2.2.2)", path=self.path)
            self.warnings.append("both headers fail their CRC-32C; using the newer one")
            valid = damaged
        # Equal sequence numbers in two valid headers are legal: Disk2vhd writes two identical
        # headers (qemu-iotests test-disk2vhd.vhdx); either one is current then.
        self.header = max(valid, key=lambda h: h.sequence_number)
        self._current_slot = found.index(self.header)
        h = self.header
        if h.version != 1:
            raise UnsupportedError(f"VHDX header version {h.version} (only 1 is defined)",
                                   path=self.path)
        if h.log_version != 0:
            raise UnsupportedError(f"VHDX log version {h.log_version}", path=self.path)
        if (h.log_offset % MiB or h.log_length % MiB or h.log_offset < MiB
                or (h.log_length and h.log_offset + h.log_length > self._size_hint())):
            raise ImageError(f"log region [{h.log_offset}, +{h.log_length}) is misaligned or "
                             "outside the file (MS-VHDX 2.2.2)", path=self.path)

    def _size_hint(self) -> int:
        return os.fstat(self._fd).st_size

    def _load_log(self) -> None:
        """2.3.3: replay a non-empty log (to the file if writable, else into memory)."""
        h = self.header
        if h.log_guid == S.ZERO_GUID or h.log_length == 0:
            return

        def raw_read(off: int, n: int) -> bytes:
            buf = bytearray(n)
            Layer.pread_into(self, off, memoryview(buf))
            return bytes(buf)

        seq = vhdx_log.find_active_sequence(raw_read, h.log_offset, h.log_length, h.log_guid)
        if not seq:
            # LogGuid set but no entry carries it (a kill right after the header update):
            # nothing to replay (2.3.3). A writable open marks the log clean.
            if self.writable:
                self._write_headers(log_guid=S.ZERO_GUID)
            return
        try:
            vhdx_log.validate_sequence(seq, os.fstat(self._fd).st_size, h.log_offset,
                                       h.log_length)
        except vhdx_log.LogError as e:
            raise ImageError(f"log cannot be replayed: {e}", path=self.path) from e
        self._load_problems.append(Problem(
            "dirty_log", f"the log holds {len(seq)} entries not yet replayed", repairable=True))
        if self.writable:
            vhdx_log.replay_to_file(self._fd, seq)
            self._replayed = True
            # The log is applied: clear LogGuid so nobody replays it again (2.3.3).
            self._write_headers(log_guid=S.ZERO_GUID)
        else:
            self._overlay = vhdx_log.Overlay(seq, os.fstat(self._fd).st_size)
            self.warnings.append("the log is dirty: replayed in memory (file not modified)")

    def _load_regions(self, head: bytes) -> None:
        """2.2.3: region tables; the first valid copy is used."""
        tables: list[S.RegionTable | None] = []
        for off in (S.REGION_TABLE1_OFFSET, S.REGION_TABLE2_OFFSET):
            try:
                tables.append(S.RegionTable.parse(head[off:off + S.REGION_TABLE_SIZE]))
            except S.StructError:
                tables.append(None)
        valid = [t for t in tables if t is not None and t.valid]
        for i, t in enumerate(tables):
            if t is None or not t.valid:
                self._load_problems.append(Problem(
                    "region_table_checksum",
                    f"region table {i + 1} is missing or its CRC-32C is wrong",
                    repairable=bool(valid)))
        if not valid:
            damaged = [t for t in tables if t is not None]
            if not (self.lenient and damaged):
                raise ChecksumError("both region tables are missing or fail their CRC-32C "
                                    "(MS-VHDX 2.2.3)", path=self.path)
            self.warnings.append("both region tables fail their CRC-32C")
            valid = damaged
        self._region_tables = tables
        table = valid[0]
        self.region_table = table
        size = self._size
        spans: list[tuple[int, int, str]] = [(0, MiB, "headers")]
        if self.header.log_length:
            spans.append((self.header.log_offset,
                          self.header.log_offset + self.header.log_length, "log"))
        for e in table.entries:
            # Unknown regions marked Required make the file unreadable to us (2.2.3.2).
            # Required=0 on BAT/metadata (qemu 1.6, iotest-dirtylog) is accepted.
            if e.guid not in (S.BAT_REGION_GUID, S.METADATA_REGION_GUID):
                if e.required:
                    raise UnsupportedError(f"unknown required region {e.guid}", path=self.path)
                continue
            if e.file_offset % MiB or e.length % MiB or e.length == 0:
                raise ImageError(f"region {e.guid} at {e.file_offset} (+{e.length}) is not "
                                 "1 MiB aligned (MS-VHDX 2.2.3.2)", path=self.path)
            if e.file_offset + e.length > size:
                raise ImageError(f"region {e.guid} [{e.file_offset}, "
                                 f"{e.file_offset + e.length}) lies past the end of the file "
                                 f"({size})", path=self.path)
            spans.append((e.file_offset, e.file_offset + e.length, str(e.guid)))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in itertools.pairwise(spans):
            if b0 < a1:
                raise ImageError(f"regions overlap: {an} [{a0}, {a1}) and {bn} [{b0}, {b1}) "
                                 "(MS-VHDX 2.2.3)", path=self.path)
        bat = table.find(S.BAT_REGION_GUID)
        meta = table.find(S.METADATA_REGION_GUID)
        if bat is None or meta is None:
            raise ImageError("region table lacks the BAT or the metadata region",
                             path=self.path)
        self.bat_region = bat
        self.metadata_region = meta

    def _load_metadata(self) -> None:
        """2.6: the metadata table and the system items, each bounds-checked."""
        reg = self.metadata_region
        if reg.length > _MAX_METADATA_REGION or reg.length < S.METADATA_TABLE_SIZE:
            raise ImageError(f"metadata region of {reg.length} bytes", path=self.path)
        table = S.MetadataTable.parse(self._read(reg.file_offset, S.METADATA_TABLE_SIZE))
        self.metadata_table = table
        known = {S.FILE_PARAMETERS_GUID, S.VIRTUAL_DISK_SIZE_GUID, S.PAGE83_DATA_GUID,
                 S.LOGICAL_SECTOR_SIZE_GUID, S.PHYSICAL_SECTOR_SIZE_GUID,
                 S.PARENT_LOCATOR_GUID}
        items: dict[UUID, bytes] = {}
        for e in table.entries:
            # 2.6.1.2: items lie after the 64 KiB table and inside the region.
            if e.length and (e.offset < S.METADATA_TABLE_SIZE
                             or e.offset + e.length > reg.length):
                raise ImageError(f"metadata item {e.item_id} [{e.offset}, +{e.length}) lies "
                                 "outside the metadata region (MS-VHDX 2.6.1.2)",
                                 path=self.path)
            if e.is_user:
                continue
            if e.item_id not in known:
                if e.is_required:
                    raise UnsupportedError(f"unknown required metadata item {e.item_id}",
                                           path=self.path)
                continue
            items[e.item_id] = self._read(reg.file_offset + e.offset, e.length)

        def need(g: UUID, n: int, name: str) -> bytes:
            data = items.get(g)
            if data is None or len(data) < n:
                raise ImageError(f"metadata item {name} missing or too short", path=self.path)
            return data

        fp = S.FileParameters.parse(need(S.FILE_PARAMETERS_GUID, 8, "file parameters"))
        # 2.6.2.1: block size is a power of two between 1 MiB and 256 MiB.
        if not (S.MIN_BLOCK_SIZE <= fp.block_size <= S.MAX_BLOCK_SIZE
                and fp.block_size & (fp.block_size - 1) == 0):
            raise ImageError(f"block size {fp.block_size} is not a power of two in "
                             "1-256 MiB (MS-VHDX 2.6.2.1)", path=self.path)
        self.file_parameters = fp
        self.block_size = fp.block_size
        self.virtual_size = S.parse_u64(need(S.VIRTUAL_DISK_SIZE_GUID, 8, "virtual disk size"))
        lss = S.parse_u32(need(S.LOGICAL_SECTOR_SIZE_GUID, 4, "logical sector size"))
        pss = S.parse_u32(need(S.PHYSICAL_SECTOR_SIZE_GUID, 4, "physical sector size"))
        if lss not in (512, 4096) or pss not in (512, 4096):
            raise ImageError(f"sector sizes {lss}/{pss} (MS-VHDX 2.6.2.4-5 allow 512, 4096)",
                             path=self.path)
        self.logical_sector_size = lss
        self.physical_sector_size = pss
        # 2.6.2.2: a multiple of the logical sector size, at most 64 TiB.
        if (self.virtual_size == 0 or self.virtual_size % lss
                or self.virtual_size > S.MAX_VIRTUAL_SIZE):
            raise ImageError(f"virtual disk size {self.virtual_size} is invalid "
                             "(MS-VHDX 2.6.2.2)", path=self.path)
        p83 = items.get(S.PAGE83_DATA_GUID)
        self.virtual_disk_id = S.guid(p83[:16]) if p83 and len(p83) >= 16 else S.ZERO_GUID
        self.parent_locator: S.ParentLocator | None = None
        if fp.has_parent:
            raw = items.get(S.PARENT_LOCATOR_GUID)
            if raw is None:
                raise ImageError("differencing VHDX without a parent locator",
                                 path=self.path)
            try:
                self.parent_locator = S.ParentLocator.parse(raw)
            except UnicodeDecodeError as e:
                raise ImageError(f"parent locator is not UTF-16: {e}", path=self.path) from e
            self.disk_type = DiskType.DIFFERENCING
        else:
            self.disk_type = DiskType.DYNAMIC  # refined to FIXED after the BAT is read
        self.chunk_ratio = S.chunk_ratio(self.block_size, lss)
        self.data_blocks = -(-self.virtual_size // self.block_size)

    def _load_bat(self) -> None:
        """2.5: the whole BAT into an array (8 bytes per entry, bounded by the region)."""
        count = S.bat_entry_count(self.virtual_size, self.block_size, self.logical_sector_size,
                                  self.file_parameters.has_parent)
        # Old qemu wrote a BAT sized for the differencing layout on dynamic disks; read
        # what is there up to the formula's count, refusing a region that cannot hold it.
        if count * 8 > self.bat_region.length:
            raise ImageError(f"BAT region of {self.bat_region.length} bytes cannot hold "
                             f"{count} entries (MS-VHDX 2.5)", path=self.path)
        bat = array.array("Q")
        raw = self._read(self.bat_region.file_offset, count * 8)
        bat.frombytes(raw)
        if sys.byteorder == "big":  # pragma: no cover
            bat.byteswap()
        self.bat = bat
        self.bat_count = count
        if not self.file_parameters.has_parent and self.file_parameters.leave_blocks_allocated:
            states = {S.bat_state(bat[self._bat_index(i)]) for i in range(self.data_blocks)}
            if states == {S.PAYLOAD_BLOCK_FULLY_PRESENT}:
                self.disk_type = DiskType.FIXED

    def _compute_alloc_end(self) -> int:
        """First free 1 MiB-aligned offset after every region and referenced block."""
        end = MiB
        if self.header.log_length:
            end = max(end, self.header.log_offset + self.header.log_length)
        for e in (self.bat_region, self.metadata_region):
            end = max(end, e.file_offset + e.length)
        bs = self.block_size
        for i in range(self.data_blocks):
            ent = self.bat[self._bat_index(i)]
            if S.bat_state(ent) in (S.PAYLOAD_BLOCK_FULLY_PRESENT,
                                    S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
                end = max(end, S.bat_offset(ent) + bs)
        for c in range(self._bitmap_count()):
            ent = self.bat[self._sb_index(c)]
            if S.bat_state(ent) == S.SB_BLOCK_PRESENT:
                end = max(end, S.bat_offset(ent) + MiB)
        return _align_up(end, MiB)

    # --- BAT geometry -----------------------------------------------------------------

    def _bat_index(self, block: int) -> int:
        """Payload block ``block``'s BAT index: a bitmap entry follows every chunk (2.5)."""
        return block + block // self.chunk_ratio

    def _sb_index(self, chunk: int) -> int:
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def _bitmap_count(self) -> int:
        """Sector-bitmap entries present in this BAT layout."""
        return self.bat_count // (self.chunk_ratio + 1)

    def payload_state(self, block: int) -> int:
        return S.bat_state(self.bat[self._bat_index(block)])

    # --- identity ---------------------------------------------------------------------

    @property
    def link_id(self) -> UUID:
        return self.header.data_write_guid

    def structure_checksum(self) -> str:
        return f"{self.header.checksum:08x}"

    @property
    def parent_link(self) -> ParentLink | None:
        pl = self.parent_locator
        if self.disk_type is not DiskType.DIFFERENCING or pl is None:
            return None
        folder = os.path.dirname(os.path.abspath(self.path))
        link = _parse_guid_text(pl.get("parent_linkage"))
        if link is None:
            raise ImageError("parent locator lacks a valid parent_linkage", path=self.path)
        alt = _parse_guid_text(pl.get("parent_linkage2"))
        cands: list[tuple[str, str]] = []
        for key in ("relative_path", "volume_path", "absolute_win32_path"):
            value = pl.get(key)
            if not value:
                continue
            for p in _windows_candidates(value, folder, relative=(key == "relative_path")):
                cands.append((key, p))
        return ParentLink(link, cands, folder,
                          alternate_ids=(alt,) if alt is not None and alt != S.ZERO_GUID else ())

    # --- reading ----------------------------------------------------------------------

    def _payload_segments(self, block: int, lo: int, hi: int) -> Iterator[Segment]:
        """Segments of block ``block`` for in-block byte range [lo, hi)."""
        base = block * self.block_size
        ent = self.bat[self._bat_index(block)]
        st = S.bat_state(ent)
        diff = self.disk_type is DiskType.DIFFERENCING
        if st == S.PAYLOAD_BLOCK_FULLY_PRESENT:
            yield Segment(base + lo, hi - lo, SegmentState.PRESENT, S.bat_offset(ent) + lo)
        elif st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and diff:
            sector = self.logical_sector_size
            bits = self._block_bitmap(block)
            for start, n, present in bm.runs(bits, lo // sector, (hi - lo) // sector,
                                             msb_first=False):
                off = start * sector
                if present:
                    yield Segment(base + off, n * sector, SegmentState.PRESENT,
                                  S.bat_offset(ent) + off)
                else:
                    yield Segment(base + off, n * sector, SegmentState.ABSENT)
        elif st in (S.PAYLOAD_BLOCK_ZERO, S.PAYLOAD_BLOCK_UNMAPPED,
                    S.PAYLOAD_BLOCK_UNMAPPED_V095):
            # 2.5.1.1: ZERO reads zeros. UNMAPPED content is "undefined"; qemu and libvhdi
            # read it as zeros (discutils lvm2.vhdx has 25 such blocks), and so do we.
            yield Segment(base + lo, hi - lo, SegmentState.ZERO)
        elif st in (S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED,
                    S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            # NOT_PRESENT: the parent's data (differencing) or zeros (dynamic). UNDEFINED
            # likewise. PARTIALLY_PRESENT is meaningless without a parent (2.5.1.1).
            yield Segment(base + lo, hi - lo, SegmentState.ABSENT)
        else:
            raise ImageError(f"BAT entry of block {block} has reserved state {st} "
                             "(MS-VHDX 2.5.1.1)", path=self.path)

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        bs = self.block_size
        end = offset + length

        def gen() -> Iterator[Segment]:
            pos = offset
            while pos < end:
                block = pos // bs
                lo = pos - block * bs
                hi = min(bs, end - block * bs)
                yield from self._payload_segments(block, lo, hi)
                pos = block * bs + hi
        return coalesce_segments(gen())

    def _bitmap_location(self, block: int) -> tuple[int, int] | None:
        """(file offset of block's slice of its chunk's sector bitmap, slice length)."""
        chunk = block // self.chunk_ratio
        ent = self.bat[self._sb_index(chunk)]
        if S.bat_state(ent) != S.SB_BLOCK_PRESENT:
            return None
        per_block = self.block_size // self.logical_sector_size // 8
        return S.bat_offset(ent) + (block % self.chunk_ratio) * per_block, per_block

    def _block_bitmap(self, block: int) -> bytes:
        """The LSB-first sector bitmap bits of ``block`` (2.5.1.2), LRU-cached."""
        cached = self._bitmap_cache.get(block)
        if cached is not None:
            self._bitmap_cache.move_to_end(block)
            return cached
        loc = self._bitmap_location(block)
        if loc is None:
            # 2.5.1.1: PARTIALLY_PRESENT needs a present bitmap block; without one no
            # sector is present.
            data = bytes(self.block_size // self.logical_sector_size // 8)
        else:
            data = self._meta_read(*loc)
        self._bitmap_cache[block] = data
        if len(self._bitmap_cache) > _BITMAP_CACHE:
            self._bitmap_cache.popitem(last=False)
        return data

    def _meta_read(self, offset: int, length: int) -> bytes:
        """Read through the overlay and our dirty (uncommitted) metadata pages."""
        buf = bytearray(self._read(offset, length))
        if self._dirty_pages:
            first = offset - offset % _PAGE
            for page in range(first, offset + length, _PAGE):
                data = self._dirty_pages.get(page)
                if data is None:
                    continue
                s, e = max(page, offset), min(page + _PAGE, offset + length)
                buf[s - offset:e - offset] = data[s - page:e - page]
        return bytes(buf)

    def present_sectors(self) -> int:
        """Sectors this layer defines with data (FULLY + bitmap bits of PARTIALLY)."""
        sector = self.logical_sector_size
        total = 0
        for seg in self.segments(0, self.virtual_size):
            if seg.state is SegmentState.PRESENT:
                total += seg.length // sector
        return total

    def bat_state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for i in range(self.data_blocks):
            st = self.payload_state(i)
            name = S.PAYLOAD_STATE_NAMES.get(st, f"reserved_{st}")
            counts[name] = counts.get(name, 0) + 1
        return counts

    def info(self) -> dict[str, Any]:
        d = super().info()
        hs = self._headers
        d.update({
            "creator": self.creator,
            "header_sequence_numbers": [h.sequence_number if h is not None else None
                                        for h in hs],
            "current_header": self._current_slot + 1,
            "file_write_guid": str(self.header.file_write_guid),
            "data_write_guid": str(self.header.data_write_guid),
            "log_guid": str(self.header.log_guid),
            "virtual_disk_id": str(self.virtual_disk_id),
            "chunk_ratio": self.chunk_ratio,
            "leave_blocks_allocated": self.file_parameters.leave_blocks_allocated,
            "bat_states": self.bat_state_counts(),
            "log": ("dirty (replayed in memory)" if self._overlay is not None
                    else "replayed at open" if self._replayed else "clean"),
        })
        if self.parent_locator is not None:
            d["parent_locator"] = dict(self.parent_locator.entries)
        return d

    # --- headers and the log (write side) ---------------------------------------------

    def _write_headers(self, **changes: Any) -> None:
        """Update both headers, one at a time (2.2.2.1): each write, then fsync.

        The non-current slot is written first with sequence + 1, then the other with + 2, so
        a torn write always leaves one valid header.
        """
        cur = self.header
        seq = cur.sequence_number
        slot = 1 - self._current_slot
        for step in (1, 2):
            h = cur.copy(sequence_number=seq + step, **changes)
            data = h.serialize()
            fileio.pwrite(self._fd, data, (S.HEADER1_OFFSET, S.HEADER2_OFFSET)[slot])
            os.fsync(self._fd)
            h = S.Header.parse(data)
            self._headers[slot] = h
            self.header = h
            self._current_slot = slot
            slot = 1 - slot

    def _begin_session(self, *, data: bool) -> None:
        """First change of this open: new FileWriteGuid and LogGuid (and DataWriteGuid)."""
        self._require_writable()
        if not self._session_open:
            changes: dict[str, Any] = {"file_write_guid": self._new_guid(),
                                       "log_guid": self._new_guid()}
            if data and not self._data_changed:
                changes["data_write_guid"] = self._new_guid()
                self._data_changed = True
            self._write_headers(**changes)
            h = self.header
            self._log_writer = vhdx_log.LogWriter(self._fd, h.log_offset, h.log_length,
                                                  h.log_guid)
            self._session_open = True
        elif data and not self._data_changed:
            self._write_headers(data_write_guid=self._new_guid())
            self._data_changed = True

    def keep_link_id(self) -> None:
        self.keep_data_write_guid()

    def renew_link_id(self, seed: bytes) -> None:
        self.finalize(seed)  # a new DataWriteGuid (MS-VHDX 2.2.2)

    def seal(self, seed: bytes, *, keep_link_id: bool = False) -> None:
        self.finalize(seed, keep_data_write_guid=keep_link_id)

    def keep_data_write_guid(self) -> None:
        """Write data in this open without renewing DataWriteGuid (MS-VHDX 2.2.2).

        For an in-place merge only: the children being merged link to this id and must
        keep reading the chain (a cancelled merge leaves it reading as before). The merge
        renews the id with :meth:`finalize` before it retires them.
        """
        self._data_changed = True

    def _set_bat(self, index: int, value: int) -> None:
        self.bat[index] = value
        self._dirty_bat_pages.add((index * 8) // _PAGE)

    def _commit_metadata(self) -> None:
        """Push dirty BAT and bitmap pages through the log (data fsync first)."""
        if not self._dirty_bat_pages and not self._dirty_pages:
            return
        if self._log_writer is None:
            raise InternalError("metadata dirty without an open log session")
        if os.fstat(self._fd).st_size < self._alloc_end:
            os.ftruncate(self._fd, self._alloc_end)
        # Payload data (and the file extension) must be durable before the BAT points at it.
        os.fsync(self._fd)
        sectors: list[tuple[int, bytes]] = []
        # Bitmaps before the BAT: a torn sequence leaves bits set under a NOT_PRESENT entry
        # (still the parent's data) rather than a PARTIALLY_PRESENT entry with stale bits.
        for off in sorted(self._dirty_pages):
            sectors.append((off, bytes(self._dirty_pages[off])))
        raw = self.bat.tobytes() if sys.byteorder == "little" else self._bat_le()
        bat_off = self.bat_region.file_offset
        for page in sorted(self._dirty_bat_pages):
            chunk = raw[page * _PAGE:(page + 1) * _PAGE]
            if len(chunk) < _PAGE:
                # The last BAT page extends past the entries: keep what the file holds there.
                tail = self._read(bat_off + page * _PAGE + len(chunk), _PAGE - len(chunk))
                chunk = chunk + tail
            sectors.append((bat_off + page * _PAGE, chunk))
        self._log_writer.commit(sectors, os.fstat(self._fd).st_size)
        self._dirty_pages.clear()
        self._dirty_bat_pages.clear()

    def _bat_le(self) -> bytes:  # pragma: no cover - big-endian hosts only
        b = array.array("Q", self.bat)
        b.byteswap()
        return b.tobytes()

    def flush(self) -> None:
        """Make every write durable: data fsync, then BAT/bitmaps via the log."""
        if not self.writable or self._fd < 0:
            return
        self._commit_metadata()
        os.fsync(self._fd)

    def close(self) -> None:
        """Flush, then mark the log clean (LogGuid zero) when this open wrote anything."""
        if self._fd >= 0 and self.writable:
            try:
                self.flush()
                if self._session_open:
                    self._write_headers(log_guid=S.ZERO_GUID)
                    self._session_open = False
            finally:
                super().close()
        else:
            super().close()

    # --- writing ----------------------------------------------------------------------

    def _check_range(self, offset: int, length: int) -> None:
        sector = self.logical_sector_size
        if offset % sector or length % sector:
            raise UsageError(f"write at {offset} (+{length}) is not aligned to the "
                             f"{sector}-byte logical sector", path=self.path)
        if offset < 0 or offset + length > self.virtual_size:
            raise UsageError(f"write [{offset}, {offset + length}) outside the disk "
                             f"({self.virtual_size})", path=self.path)

    def _allocate(self, size: int) -> int:
        """Reserve ``size`` bytes (1 MiB aligned) at the allocation end."""
        off = self._alloc_end
        self._alloc_end = off + _align_up(size, MiB)
        return off

    def _zero_fill(self, start: int, end: int) -> None:
        """Make [start, end) read zero: writes zeros below EOF, extends above it."""
        real = os.fstat(self._fd).st_size
        pos = start
        stop = min(end, real)
        while pos < stop:
            n = min(len(_ZERO_MIB), stop - pos)
            fileio.pwrite(self._fd, _ZERO_MIB[:n], pos)
            pos += n
        if end > real:
            os.ftruncate(self._fd, end)

    def _pwrite_all(self, data: memoryview, off: int) -> None:
        done = 0
        while done < len(data):
            done += fileio.pwrite(self._fd, data[done:], off + done)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write sector-aligned ``data`` at virtual ``offset`` (may span blocks).

        New payload blocks go to the allocation end (1 MiB aligned), written with their
        zero-filled remainder; on differencing layers the written sectors' bitmap bits are
        set. BAT and bitmap changes reach the file at the next :meth:`flush` (or sooner when
        many are pending), through the log.
        """
        mv = memoryview(data).cast("B")
        self._check_range(offset, len(mv))
        if not len(mv):
            return
        self._begin_session(data=True)
        bs = self.block_size
        pos = 0
        while pos < len(mv):
            voff = offset + pos
            block = voff // bs
            lo = voff - block * bs
            n = min(bs - lo, len(mv) - pos)
            self._write_block(block, lo, mv[pos:pos + n])
            pos += n
        if len(self._dirty_bat_pages) + len(self._dirty_pages) >= _AUTO_FLUSH_PAGES:
            self._commit_metadata()

    def _write_block(self, block: int, lo: int, piece: memoryview) -> None:
        bs = self.block_size
        idx = self._bat_index(block)
        ent = self.bat[idx]
        st = S.bat_state(ent)
        diff = self.disk_type is DiskType.DIFFERENCING
        hi = lo + len(piece)
        if st == S.PAYLOAD_BLOCK_FULLY_PRESENT or (st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT
                                                  and diff):
            self._pwrite_all(piece, S.bat_offset(ent) + lo)
            if st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                self._set_present(block, lo, hi)
            return
        off = self._allocate(bs)
        # Zero what the write does not cover: the slot may reuse an orphan tail.
        if lo:
            self._zero_fill(off, off + lo)
        self._pwrite_all(piece, off + lo)
        if hi < bs:
            self._zero_fill(off + hi, off + bs)
        whole = lo == 0 and hi == bs
        if diff and st in (S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED,
                           S.PAYLOAD_BLOCK_PARTIALLY_PRESENT) and not whole:
            # Unwritten sectors stay the parent's: a partially present block (2.5.1.1).
            self._set_present(block, lo, hi)
            self._set_bat(idx, S.bat_entry(S.PAYLOAD_BLOCK_PARTIALLY_PRESENT, off))
        else:
            # Dynamic, or a differencing block that read as zeros: every sector is defined.
            self._set_bat(idx, S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, off))

    def _set_present(self, block: int, lo: int, hi: int) -> None:
        """Set the sector-bitmap bits of [lo, hi) in ``block`` (allocating the bitmap)."""
        sector = self.logical_sector_size
        chunk = block // self.chunk_ratio
        sb_idx = self._sb_index(chunk)
        if S.bat_state(self.bat[sb_idx]) != S.SB_BLOCK_PRESENT:
            off = self._allocate(MiB)
            self._zero_fill(off, off + MiB)
            self._set_bat(sb_idx, S.bat_entry(S.SB_BLOCK_PRESENT, off))
        loc = self._bitmap_location(block)
        assert loc is not None
        slice_off, _ = loc
        first_bit = lo // sector
        count = (hi - lo) // sector
        # Bits are LSB-first; the block's slice starts on a byte boundary.
        bit_lo = first_bit
        bit_hi = first_bit + count
        page_lo = (slice_off + bit_lo // 8) - (slice_off + bit_lo // 8) % _PAGE
        page_hi = slice_off + -(-bit_hi // 8)
        for page in range(page_lo, page_hi, _PAGE):
            buf = self._dirty_pages.get(page)
            if buf is None:
                buf = bytearray(self._read(page, _PAGE))
                self._dirty_pages[page] = buf
            # Bits of this page: byte range [page, page+4096) of the file.
            b0 = max(bit_lo, (page - slice_off) * 8)
            b1 = min(bit_hi, (page + _PAGE - slice_off) * 8)
            if b1 > b0:
                bm.set_bits(buf, b0 - (page - slice_off) * 8, b1 - b0, msb_first=False)
        self._bitmap_cache.pop(block, None)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make a range read zero: whole blocks become PAYLOAD_BLOCK_ZERO (not on fixed
        disks); partial blocks get zero bytes unless they already read zero."""
        self._check_range(offset, length)
        if not length:
            return
        bs = self.block_size
        end = offset + length
        pos = offset
        diff = self.disk_type is DiskType.DIFFERENCING
        zero = bytes(min(bs, 8 * MiB))
        while pos < end:
            block = pos // bs
            lo = pos - block * bs
            hi = min(bs, end - block * bs)
            block_end = min(bs, self.virtual_size - block * bs)
            st = self.payload_state(block)
            reads_zero = st in (S.PAYLOAD_BLOCK_ZERO, S.PAYLOAD_BLOCK_UNMAPPED,
                                S.PAYLOAD_BLOCK_UNMAPPED_V095) or (
                not diff and st in (S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED))
            if reads_zero:
                pass
            elif (lo == 0 and hi >= block_end and self.disk_type is not DiskType.FIXED):
                self._begin_session(data=True)
                self._set_bat(self._bat_index(block), S.bat_entry(S.PAYLOAD_BLOCK_ZERO, 0))
            else:
                p = lo
                while p < hi:
                    n = min(len(zero), hi - p)
                    self.write(block * bs + p, memoryview(zero)[:n])
                    p += n
            pos = block * bs + hi
        if len(self._dirty_bat_pages) + len(self._dirty_pages) >= _AUTO_FLUSH_PAGES:
            self._commit_metadata()

    # --- deterministic finish ---------------------------------------------------------

    def finalize(self, seed: bytes, *, keep_data_write_guid: bool = False) -> None:
        """Make the file's bytes a pure function of its content and ``seed``.

        ``keep_data_write_guid``: the content did not change (compaction), so children
        linked to this disk must still resolve to it; the DataWriteGuid stays as it is.

        Contract for callers that resume after kill -9 and need bit-identical output:

        1. create the file with :func:`create` passing explicit GUIDs (``file_write_guid``,
           ``data_write_guid``, ``virtual_disk_id``) and ``creator`` derived from the seed,
           and perform the same sequence of writes (same order, same data) in every run;
           opening a layer writable changes nothing until its first write;
        2. call ``finalize(seed)`` as the very last step, with nothing written after it;
           if killed during finalize, reopen writable and call it again with the same
           seed, without writing in between (it is idempotent);
        3. close the layer.

        It commits pending metadata through the log, trims any orphan tail (so reused or
        abandoned allocations leave no trace), rewrites both headers with FileWriteGuid and
        DataWriteGuid derived from ``seed``, LogGuid zero and sequence numbers ``k << 32`` and
        ``(k << 32) + 1``, where ``k`` is one more than the high 32 bits of every earlier
        sequence number (or the same ``k`` when a previous finalize with this seed got as
        far as writing a header), and zeroes the log region.
        """
        self._require_writable()
        self._commit_metadata()
        os.fsync(self._fd)
        # Trim an orphan tail (or restore a short file) so the size is a function of the BAT.
        if os.fstat(self._fd).st_size != self._alloc_end:
            os.ftruncate(self._fd, self._alloc_end)
        os.fsync(self._fd)
        fwg = _derive_guid(seed, b"file_write_guid")
        dwg = (self.header.data_write_guid if keep_data_write_guid
               else _derive_guid(seed, b"data_write_guid"))
        seqs = [h.sequence_number for h in self._headers if h is not None and h.valid]
        k = None
        for h in self._headers:
            if (h is not None and h.valid and h.file_write_guid == fwg
                    and h.data_write_guid == dwg and h.sequence_number & 0xFFFFFFFF in (0, 1)):
                k = h.sequence_number >> 32
        if k is None:
            k = (max(seqs, default=0) >> 32) + 1
        for slot, step in ((0, 0), (1, 1)):
            h = S.Header.new(((k << 32) + step), fwg, dwg, self.header.log_offset,
                             self.header.log_length)
            data = h.serialize()
            fileio.pwrite(self._fd, data, (S.HEADER1_OFFSET, S.HEADER2_OFFSET)[slot])
            os.fsync(self._fd)
            self._headers[slot] = S.Header.parse(data)
        self.header = self._headers[1]  # type: ignore[assignment]
        self._current_slot = 1
        pos = self.header.log_offset
        end = pos + self.header.log_length
        while pos < end:
            n = min(MiB, end - pos)
            fileio.pwrite(self._fd, _ZERO_MIB[:n], pos)
            pos += n
        os.fsync(self._fd)
        self._session_open = False
        self._log_writer = None
        self._data_changed = False

    # --- check / repair ---------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Header/region CRCs, dirty log, BAT entries inside the file and not overlapping,
        states valid for the disk type, orphan tail."""
        problems = list(self._load_problems)
        size = self._size
        spans: list[tuple[int, int, str]] = [
            (0, MiB, "headers"),
            (self.bat_region.file_offset, self.bat_region.file_offset
             + self.bat_region.length, "BAT"),
            (self.metadata_region.file_offset, self.metadata_region.file_offset
             + self.metadata_region.length, "metadata")]
        if self.header.log_length:
            spans.append((self.header.log_offset,
                          self.header.log_offset + self.header.log_length, "log"))
        diff = self.disk_type is DiskType.DIFFERENCING
        for i in range(self.data_blocks):
            ent = self.bat[self._bat_index(i)]
            st = S.bat_state(ent)
            if st not in S.PAYLOAD_STATE_NAMES:
                problems.append(Problem("bat_state", f"block {i} has reserved state {st}"))
                continue
            if st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and not diff:
                problems.append(Problem("bat_state", f"block {i} is PARTIALLY_PRESENT in a "
                                        "disk without parent"))
            if st in (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
                spans.append((S.bat_offset(ent), S.bat_offset(ent) + self.block_size,
                              f"block {i}"))
        for c in range(self._bitmap_count()):
            ent = self.bat[self._sb_index(c)]
            if S.bat_state(ent) == S.SB_BLOCK_PRESENT:
                spans.append((S.bat_offset(ent), S.bat_offset(ent) + MiB, f"bitmap {c}"))
        for lo, hi, name in spans:
            if hi > size and name.startswith(("block", "bitmap")):
                problems.append(Problem("bat_past_eof", f"{name} [{lo}, {hi}) lies past the "
                                        f"end of the file ({size})"))
        spans.sort()
        reach = spans[0]
        for sp in spans[1:]:
            if sp[0] < reach[1]:
                problems.append(Problem("bat_overlap", f"{sp[2]} [{sp[0]}, {sp[1]}) overlaps "
                                        f"{reach[2]} [{reach[0]}, {reach[1]})"))
            if sp[1] > reach[1]:
                reach = sp
        if size > self._alloc_end:
            problems.append(Problem("orphan_tail", f"{size - self._alloc_end} bytes after the "
                                    f"last block (from {self._alloc_end})", repairable=True))
        return problems

    def repair(self) -> list[str]:
        """Safe repairs: replay the log (done at a writable open), restore a damaged header
        or region table from the good copy, trim an orphan tail."""
        self._require_writable()
        done: list[str] = []
        if self._replayed:
            done.append("replayed the log")
        if any(h is None or not h.valid for h in self._headers):
            self._write_headers()
            done.append("rewrote the damaged header from the current one")
        if any(t is None or not t.valid for t in self._region_tables):
            data = S.RegionTable.new(self.region_table.entries).serialize()
            for i, t in enumerate(self._region_tables):
                if t is None or not t.valid:
                    fileio.pwrite(self._fd, data, (S.REGION_TABLE1_OFFSET,
                                               S.REGION_TABLE2_OFFSET)[i])
            os.fsync(self._fd)
            self._region_tables = [S.RegionTable.parse(data), S.RegionTable.parse(data)]
            done.append("rewrote the damaged region table from the valid one")
        self.flush()
        size = os.fstat(self._fd).st_size
        if size > self._alloc_end:
            os.ftruncate(self._fd, self._alloc_end)
            os.fsync(self._fd)
            done.append(f"trimmed an orphan tail of {size - self._alloc_end} bytes")
        self._load_problems = [p for p in self._load_problems
                               if p.code not in ("dirty_log", "header_checksum",
                                                 "region_table_checksum")]
        return done

    def block_store(self) -> BlockStore | None:
        if self.disk_type is DiskType.FIXED:
            return None
        return VhdxBlockStore(self)


class VhdxBlockStore(BlockStore):
    """Payload blocks as compaction slots (1 MiB aligned; bitmaps are reserved ranges)."""

    def __init__(self, layer: VhdxLayer) -> None:
        self.layer = layer
        self.block_count = layer.data_blocks
        self.block_size = layer.block_size
        self.slot_size = layer.block_size
        self.slot_alignment = MiB

    def slot_offset(self, index: int) -> int | None:
        ent = self.layer.bat[self.layer._bat_index(index)]
        if S.bat_state(ent) in (S.PAYLOAD_BLOCK_FULLY_PRESENT,
                                S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            return S.bat_offset(ent)
        return None

    def droppable(self, index: int) -> bool:
        lay = self.layer
        off = self.slot_offset(index)
        if off is None:
            return lay.disk_type is not DiskType.DIFFERENCING or lay.payload_state(index) in (
                S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED)
        if lay.disk_type is DiskType.DIFFERENCING:
            if lay.payload_state(index) == S.PAYLOAD_BLOCK_FULLY_PRESENT:
                return False
            return lay._block_bitmap(index).count(0) == len(lay._block_bitmap(index))
        buf = bytearray(8 * MiB)
        pos = 0
        while pos < self.block_size:
            n = min(len(buf), self.block_size - pos)
            mv = memoryview(buf)[:n]
            lay.pread_into(off + pos, mv)
            if mv.tobytes().count(0) != n:
                return False
            pos += n
        return True

    def drop(self, index: int) -> None:
        lay = self.layer
        idx = lay._bat_index(index)
        # Dynamic: ZERO says "reads zeros" explicitly. Differencing: NOT_PRESENT, since a
        # droppable block defines no sector (its zeros would otherwise hide the parent).
        state = (S.PAYLOAD_BLOCK_NOT_PRESENT if lay.disk_type is DiskType.DIFFERENCING
                 else S.PAYLOAD_BLOCK_ZERO)
        if lay.bat[idx] == S.bat_entry(state, 0):
            return
        lay._begin_session(data=False)
        lay._set_bat(idx, S.bat_entry(state, 0))
        lay.flush()

    def move(self, index: int, new_offset: int) -> None:
        lay = self.layer
        if new_offset % MiB:
            raise UsageError(f"slot offset {new_offset} is not 1 MiB aligned", path=lay.path)
        idx = lay._bat_index(index)
        ent = lay.bat[idx]
        old = S.bat_offset(ent)
        if S.bat_state(ent) not in (S.PAYLOAD_BLOCK_FULLY_PRESENT,
                                    S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            raise UsageError(f"block {index} has no slot to move", path=lay.path)
        if old == new_offset:
            return
        lay._begin_session(data=False)
        buf = bytearray(min(self.block_size, 8 * MiB))
        pos = 0
        while pos < self.block_size:
            n = min(len(buf), self.block_size - pos)
            mv = memoryview(buf)[:n]
            lay.pread_into(old + pos, mv)
            lay._pwrite_all(mv, new_offset + pos)
            pos += n
        lay._alloc_end = max(lay._alloc_end, new_offset + self.block_size)
        lay._set_bat(idx, S.bat_entry(S.bat_state(ent), new_offset))
        lay.flush()

    def reserved_ranges(self) -> list[tuple[int, int]]:
        lay = self.layer
        out = [(0, MiB)]
        if lay.header.log_length:
            out.append((lay.header.log_offset, lay.header.log_offset + lay.header.log_length))
        for r in (lay.bat_region, lay.metadata_region):
            out.append((r.file_offset, r.file_offset + r.length))
        for c in range(lay._bitmap_count()):
            ent = lay.bat[lay._sb_index(c)]
            if S.bat_state(ent) == S.SB_BLOCK_PRESENT:
                out.append((S.bat_offset(ent), S.bat_offset(ent) + MiB))
        return sorted(out)

    def data_area_start(self) -> int:
        return max(hi for _, hi in self.reserved_ranges()[:4])

    def truncate_after(self, end: int) -> None:
        lay = self.layer
        lay.flush()
        end = _align_up(end, MiB)
        reserved_end = max(hi for _, hi in self.reserved_ranges())
        end = max(end, reserved_end)
        os.ftruncate(lay.fd, end)
        os.fsync(lay.fd)
        lay._alloc_end = lay._compute_alloc_end()


# --- parent locator helpers -----------------------------------------------------------------

def _parse_guid_text(text: str | None) -> UUID | None:
    if not text:
        return None
    try:
        return UUID(text.strip().strip("{}"))
    except ValueError:
        return None


def _windows_candidates(value: str, folder: str, *, relative: bool) -> list[str]:
    """Local paths a Windows path may denote, best first (2.6.2.6.2).

    Relative paths resolve against the child's folder. ``\\\\?\\Volume{...}\\`` and
    ``C:\\...`` paths only exist on Windows: they are mapped onto the child's folder (same
    file name). ``Z:\\`` is Wine's mapping of the Unix root, which :func:`create` writes.
    """
    v = value.replace("\\", "/")
    name = v.rsplit("/", 1)[-1]
    out: list[str] = []
    if relative:
        rel = v[2:] if v.startswith("./") else v.lstrip("/")
        out.append(os.path.normpath(os.path.join(folder, rel)))
        return out
    if len(v) >= 3 and v[1] == ":" and v[2] == "/" and v[0] in "zZ":
        out.append(v[2:])
    if name:
        out.append(os.path.join(folder, name))
    return out


def _relative_windows(target: str, start_dir: str) -> str:
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(start_dir))
    return ".\\" + rel.replace("/", "\\") if not rel.startswith("..") else rel.replace("/", "\\")


# --- creation ---------------------------------------------------------------------------------

def create(path: str | os.PathLike[str], virtual_size: int, disk_type: DiskType | str, *,
           block_size: int = 32 * MiB, logical_sector_size: int = 512,
           physical_sector_size: int = 4096, parent: Layer | None = None,
           sparse: bool = False, file_write_guid: UUID | None = None,
           data_write_guid: UUID | None = None, virtual_disk_id: UUID | None = None,
           creator: str = "vhdmend", guid_factory: GuidFactory | None = None) -> VhdxLayer:
    """Create a VHDX file and return it opened writable.

    Layout (as Hyper-V and qemu): identifier, headers, region tables in the first MiB; a
    1 MiB log at 1 MiB; 1 MiB metadata at 2 MiB; the BAT at 3 MiB; payload blocks after.
    ``fixed``: every block FULLY_PRESENT, space reserved with ``posix_fallocate`` unless
    ``sparse`` (only metadata is written). ``differencing``: ``parent`` is required; the
    locator holds ``parent_linkage`` (the parent's DataWriteGuid), ``relative_path`` and
    ``absolute_win32_path`` (``Z:`` + the POSIX path, Wine's convention). GUIDs not given
    come from ``guid_factory`` (default random).
    """
    path = os.fspath(path)
    dt = DiskType(disk_type) if isinstance(disk_type, str) else disk_type
    gen = guid_factory or uuid4
    if os.path.lexists(path):
        raise UsageError("target already exists", path=path)
    if logical_sector_size not in (512, 4096) or physical_sector_size not in (512, 4096):
        raise UsageError("sector sizes must be 512 or 4096", path=path)
    if not (S.MIN_BLOCK_SIZE <= block_size <= S.MAX_BLOCK_SIZE
            and block_size & (block_size - 1) == 0):
        raise UsageError(f"block size {block_size} must be a power of two in 1-256 MiB",
                         path=path)
    if dt is DiskType.DIFFERENCING:
        if parent is None:
            raise UsageError("a differencing disk needs a parent", path=path)
        if parent.logical_sector_size != logical_sector_size:
            raise UsageError(f"parent has {parent.logical_sector_size}-byte sectors",
                             path=path)
    elif parent is not None:
        raise UsageError("only differencing disks have a parent", path=path)
    if (not isinstance(virtual_size, int) or virtual_size <= 0
            or virtual_size % logical_sector_size or virtual_size > S.MAX_VIRTUAL_SIZE):
        raise UsageError(f"virtual size {virtual_size} must be a positive multiple of "
                         f"{logical_sector_size} up to 64 TiB", path=path)
    has_parent = dt is DiskType.DIFFERENCING
    fixed = dt is DiskType.FIXED
    log_off, log_len = MiB, MiB
    meta_off, meta_len = 2 * MiB, MiB
    bat_off = 3 * MiB
    count = S.bat_entry_count(virtual_size, block_size, logical_sector_size, has_parent)
    bat_len = _align_up(count * 8, MiB)
    data_start = bat_off + bat_len
    data_blocks = -(-virtual_size // block_size)
    ratio = S.chunk_ratio(block_size, logical_sector_size)

    fwg = file_write_guid or gen()
    dwg = data_write_guid or gen()
    vdid = virtual_disk_id or gen()

    # Metadata items (2.6.2), each at a 64 KiB-aligned... the spec only asks for >= 64 KiB;
    # we pack them after the table like Hyper-V.
    items: list[tuple[UUID, bytes, bool]] = [
        (S.FILE_PARAMETERS_GUID, S.FileParameters.new(block_size, fixed, has_parent)
         .serialize(), False),
        (S.VIRTUAL_DISK_SIZE_GUID, S.serialize_u64(virtual_size), True),
        (S.PAGE83_DATA_GUID, vdid.bytes_le, True),
        (S.LOGICAL_SECTOR_SIZE_GUID, S.serialize_u32(logical_sector_size), True),
        (S.PHYSICAL_SECTOR_SIZE_GUID, S.serialize_u32(physical_sector_size), True),
    ]
    if has_parent:
        assert parent is not None
        folder = os.path.dirname(os.path.abspath(path))
        ppath = os.path.abspath(parent.path)
        loc = S.ParentLocator.new([
            ("parent_linkage", "{" + str(parent.link_id) + "}"),
            ("relative_path", _relative_windows(ppath, folder)),
            ("absolute_win32_path", "Z:" + ppath.replace("/", "\\")),
        ])
        items.append((S.PARENT_LOCATOR_GUID, loc.serialize(), False))
    meta = bytearray(meta_len)
    entries = []
    pos = S.METADATA_TABLE_SIZE
    for g, data, is_vd in items:
        meta[pos:pos + len(data)] = data
        entries.append(S.MetadataEntry(g, pos, len(data), False, is_vd, True))
        pos += _align_up(len(data), 8)
    meta[0:S.METADATA_TABLE_SIZE] = S.MetadataTable.new(entries).serialize()

    bat = array.array("Q", bytes(count * 8))
    if fixed:
        for i in range(data_blocks):
            bat[i + i // ratio] = S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT,
                                              data_start + i * block_size)
    file_size = data_start + (data_blocks * block_size if fixed else 0)

    regions = S.RegionTable.new([S.RegionEntry(S.BAT_REGION_GUID, bat_off, bat_len, True),
                                 S.RegionEntry(S.METADATA_REGION_GUID, meta_off, meta_len,
                                               True)]).serialize()
    h1 = S.Header.new(0, fwg, dwg, log_off, log_len).serialize()
    h2 = S.Header.new(1, fwg, dwg, log_off, log_len).serialize()
    with fileio.new_image(path, needed=file_size) as fd:
        os.ftruncate(fd, file_size)
        if fixed and not sparse:
            fileio.allocate(fd, data_start, file_size - data_start)
        fileio.pwrite(fd, S.FileIdentifier.new(creator).serialize(), 0)
        fileio.pwrite(fd, h1, S.HEADER1_OFFSET)
        fileio.pwrite(fd, h2, S.HEADER2_OFFSET)
        fileio.pwrite(fd, regions, S.REGION_TABLE1_OFFSET)
        fileio.pwrite(fd, regions, S.REGION_TABLE2_OFFSET)
        fileio.pwrite(fd, bytes(meta), meta_off)
        raw = bat.tobytes()
        if sys.byteorder == "big":  # pragma: no cover
            b2 = array.array("Q", bat)
            b2.byteswap()
            raw = b2.tobytes()
        fileio.pwrite(fd, raw, bat_off)
        os.fsync(fd)
        return VhdxLayer(path, fd, writable=True, guid_factory=guid_factory)
