"""Reading VHDX files (MS-VHDX v1.0): open, replay the log, read segments.

Structures live in :mod:`vhdlib.vhdx.structs`, the log in :mod:`vhdlib.vhdx.log`, the
headers and region tables in :mod:`vhdlib.vhdx.headers`, the metadata in
:mod:`vhdlib.vhdx.metadata`, the BAT and sector bitmaps in :mod:`vhdlib.vhdx.bat`.
A dirty log is replayed at open: to the file when writable, else into an in-memory
overlay every read goes through.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import ImageError
from vhdlib.extents import Segment, SegmentState, coalesce_segments
from vhdlib.layer import DiskType, Layer, ParentLink, Problem, hole_bytes
from vhdlib.vhdx import log as vhdx_log
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.allocation import align_up
from vhdlib.vhdx.bat import SectorBitmaps, VhdxBat, block_segments
from vhdlib.vhdx.headers import HeaderPair, RegionTables
from vhdlib.vhdx.locators import parent_link
from vhdlib.vhdx.metadata import read_metadata

MiB = S.MiB


class VhdxReader(Layer):
    """The reading side of one VHDX/AVHDX file: opening (headers, log replay, regions,
    metadata, BAT), segments, identity and info. :class:`VhdxLayer` adds the writes.

    ``lenient`` accepts one-sided checksum damage silently and bad CRCs in both copies with
    a warning.
    """

    format = "vhdx"
    bat: VhdxBat
    bitmaps: SectorBitmaps

    def __init__(self, path: str, fd: int, *, writable: bool, lenient: bool = False) -> None:
        super().__init__(path, fd, writable=writable)
        self.lenient = lenient
        self._overlay: vhdx_log.Overlay | None = None
        self._load_problems: list[Problem] = []
        self._replayed = False
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

    def write_file(self, offset: int, data: memoryview) -> None:
        """Write raw file bytes at ``offset`` (payload data; compaction moves slots)."""
        fileio.write_all(self._fd, [data], offset, path=self.path)

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
        self.headers = HeaderPair.load(head, file_size=size, lenient=self.lenient,
                                       path=self.path, problems=self._load_problems,
                                       warnings=self.warnings)
        self._load_log()
        if self._overlay is not None:
            head = self._read(0, S.REGION_TABLE2_OFFSET + S.REGION_TABLE_SIZE)
        self.regions = RegionTables.load(head, self.header, file_size=self._size,
                                         lenient=self.lenient, path=self.path,
                                         problems=self._load_problems, warnings=self.warnings)
        self.region_table = self.regions.table
        self.bat_region = self.regions.bat
        self.metadata_region = self.regions.metadata
        self._load_metadata()
        self._load_bat()

    @property
    def header(self) -> S.Header:
        """The current header (2.2.2)."""
        return self.headers.current

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
                self.headers.update(self._fd, log_guid=S.ZERO_GUID)
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
            self.headers.update(self._fd, log_guid=S.ZERO_GUID)
        else:
            self._overlay = vhdx_log.Overlay(seq, os.fstat(self._fd).st_size)
            self.warnings.append("the log is dirty: replayed in memory (file not modified)")

    def _load_metadata(self) -> None:
        md = read_metadata(self._read, self.metadata_region, path=self.path)
        self.metadata_table = md.table
        self.file_parameters = md.file_parameters
        self.block_size = md.file_parameters.block_size
        self.virtual_size = md.virtual_size
        self.logical_sector_size = md.logical_sector_size
        self.physical_sector_size = md.physical_sector_size
        self.virtual_disk_id = md.virtual_disk_id
        self.parent_locator = md.parent_locator
        # Refined to FIXED after the BAT is read.
        self.disk_type = DiskType.DIFFERENCING if md.file_parameters.has_parent \
            else DiskType.DYNAMIC
        self.chunk_ratio = S.chunk_ratio(self.block_size, self.logical_sector_size)
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
        raw = self._read(self.bat_region.file_offset, count * 8)
        self.bat = VhdxBat.parse(raw, block_size=self.block_size,
                                 virtual_size=self.virtual_size, chunk_ratio=self.chunk_ratio,
                                 path=self.path)
        self.bat_count = count
        self.bitmaps = SectorBitmaps(self.bat, self.logical_sector_size, self._read)
        if not self.file_parameters.has_parent and self.file_parameters.leave_blocks_allocated:
            states = {self.bat.payload_state(i) for i in range(self.data_blocks)}
            if states == {S.PAYLOAD_BLOCK_FULLY_PRESENT}:
                self.disk_type = DiskType.FIXED

    def _regions_end(self) -> int:
        end = MiB
        if self.header.log_length:
            end = max(end, self.header.log_offset + self.header.log_length)
        for e in (self.bat_region, self.metadata_region):
            end = max(end, e.file_offset + e.length)
        return end

    def _compute_alloc_end(self) -> int:
        """First free 1 MiB-aligned offset after every region and referenced block."""
        return align_up(max(self._regions_end(), self.bat.slots_end()), MiB)

    def payload_state(self, block: int) -> int:
        return self.bat.payload_state(block)

    # --- growth figures (headers and BAT only) ------------------------------------------

    def unallocated_blocks(self) -> int:
        return 0 if self.disk_type is DiskType.FIXED else self.bat.unallocated()

    def never_written_bytes(self) -> int:
        # 2.1: the header section, the metadata region and the BAT region past its entries
        # are padded to 1 MiB; nothing writes the padding (the log region is written).
        bat_used = align_up(self.bat.count * 8, 4096)
        meta, bat = self.metadata_region, self.bat_region
        spans = [(0, MiB), (meta.file_offset, meta.file_offset + meta.length),
                 (bat.file_offset + bat_used, bat.file_offset + bat.length)]
        return sum(hole_bytes(self._fd, a, b) for a, b in spans)

    def max_bytes(self) -> int:
        # Differencing layers also allocate a 1 MiB sector bitmap per chunk (2.5.1.2).
        extra = 0
        if self.disk_type is DiskType.DIFFERENCING:
            states = self.bat.bitmap_states()
            extra = (len(states) - states.count(S.SB_BLOCK_PRESENT)) * MiB
        return super().max_bytes() + extra

    @property
    def differencing(self) -> bool:
        """True when the disk has a parent (sector bitmaps in use)."""
        return self.disk_type is DiskType.DIFFERENCING

    # --- identity ---------------------------------------------------------------------

    @property
    def link_id(self) -> UUID:
        return self.header.data_write_guid

    def structure_checksum(self) -> str:
        return f"{self.header.checksum:08x}"

    @property
    def parent_link(self) -> ParentLink | None:
        if not self.differencing or self.parent_locator is None:
            return None
        return parent_link(self.parent_locator, self.path)

    # --- reading ----------------------------------------------------------------------

    def segments(self, offset: int, length: int) -> Iterator[Segment]:
        bs = self.block_size
        end = offset + length
        diff = self.differencing

        def gen() -> Iterator[Segment]:
            pos = offset
            while pos < end:
                block = pos // bs
                lo = pos - block * bs
                hi = min(bs, end - block * bs)
                yield from block_segments(self.bat, self.bitmaps, block, lo, hi,
                                          differencing=diff)
                pos = block * bs + hi
        return coalesce_segments(gen())

    def present_sectors(self) -> int:
        """Sectors this layer defines with data (FULLY + bitmap bits of PARTIALLY)."""
        sector = self.logical_sector_size
        total = 0
        for seg in self.segments(0, self.virtual_size):
            if seg.state is SegmentState.PRESENT:
                total += seg.length // sector
        return total

    def bat_state_counts(self) -> dict[str, int]:
        return self.bat.state_counts()

    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update({
            "creator": self.creator,
            "header_sequence_numbers": [h.sequence_number if h is not None else None
                                        for h in self.headers.headers],
            "current_header": self.headers.slot + 1,
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

    def reserved_ranges(self) -> list[tuple[int, int]]:
        """File ranges of everything but payload blocks: headers, log, regions, bitmaps."""
        out = [(0, MiB)]
        if self.header.log_length:
            out.append((self.header.log_offset,
                        self.header.log_offset + self.header.log_length))
        for r in (self.bat_region, self.metadata_region):
            out.append((r.file_offset, r.file_offset + r.length))
        out.extend(self.bat.bitmap_ranges())
        return sorted(out)
