"""VHDX layers (MS-VHDX v1.0): read, replay, write, check/repair.

Structures live in :mod:`vhdlib.vhdx.structs`, the log in :mod:`vhdlib.vhdx.log`, the
headers and region tables in :mod:`vhdlib.vhdx.headers`, the metadata in
:mod:`vhdlib.vhdx.metadata`, the BAT and sector bitmaps in :mod:`vhdlib.vhdx.bat`.

Write model: payload data is written in place (new blocks at the allocation end, 1 MiB
aligned); BAT and sector-bitmap changes are kept as dirty 4 KiB pages in memory and reach
the file only through the log on :meth:`VhdxLayer.flush` (data fsync, log entry, fsync,
apply, fsync). A kill at any instant leaves a file that opens: unreferenced data is an
orphan tail, which ``repair`` trims and the next allocation reuses.

Bit-identical resume: see :meth:`VhdxLayer.finalize`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from uuid import UUID, uuid4

from vhdlib import fileio
from vhdlib.errors import UsageError
from vhdlib.layer import BlockStore, DiskType, Problem
from vhdlib.vhdx import log as vhdx_log
from vhdlib.vhdx import structs as S
from vhdlib.vhdx.allocation import Allocation
from vhdlib.vhdx.bat import READS_ZERO, UNDEFINED
from vhdlib.vhdx.blockstore import VhdxBlockStore
from vhdlib.vhdx.check import bat_problems
from vhdlib.vhdx.reader import VhdxReader
from vhdlib.vhdx.session import LogSession

MiB = S.MiB
_ZERO_MIB = bytes(MiB)
#: Dirty metadata pages kept before an automatic flush (keeps each flush one log entry).
_AUTO_FLUSH_PAGES = 192

GuidFactory = Callable[[], UUID]


def _derive_guid(seed: bytes, label: bytes) -> UUID:
    """A version-4-shaped GUID that is a pure function of ``seed`` and ``label``."""
    h = bytearray(hashlib.sha256(seed + b"\0vhdx\0" + label).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    return UUID(bytes=bytes(h))


class VhdxLayer(VhdxReader):
    """One VHDX/AVHDX file. Read-only unless ``writable``.

    ``lenient`` accepts one-sided checksum damage silently and bad CRCs in both copies with
    a warning. ``guid_factory`` makes every GUID this layer generates (FileWriteGuid,
    DataWriteGuid, LogGuid) come from the caller, for reproducible output.
    """

    def __init__(self, path: str, fd: int, *, writable: bool, lenient: bool = False,
                 guid_factory: GuidFactory | None = None) -> None:
        super().__init__(path, fd, writable=writable, lenient=lenient)
        self._new_guid: GuidFactory = guid_factory or uuid4
        self._alloc = Allocation(self._fd, self.path, self._compute_alloc_end())
        self._session = LogSession(self._fd, self.headers, self._new_guid)

    # --- the log session (write side) -------------------------------------------------

    def _begin_session(self, *, data: bool) -> None:
        """Before the first change of this open: renew the header GUIDs (see LogSession)."""
        self._require_writable()
        self._session.begin(data=data)

    @property
    def _log_writer(self) -> vhdx_log.LogWriter | None:
        return self._session.writer

    def begin_change(self) -> None:
        """Open the log session for a metadata-only change (compaction's moves and drops)."""
        self._begin_session(data=False)

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
        self._session.data_changed = True

    def _dirty_count(self) -> int:
        return len(self.bat.dirty_pages) + len(self.bitmaps.dirty_pages)

    def _commit_metadata(self) -> None:
        """Push dirty BAT and bitmap pages through the log (data fsync first)."""
        if not self._dirty_count():
            return
        if os.fstat(self._fd).st_size < self._alloc.end:
            os.ftruncate(self._fd, self._alloc.end)
        # Payload data (and the file extension) must be durable before the BAT points at it.
        os.fsync(self._fd)
        # Bitmaps before the BAT: a torn sequence leaves bits set under a NOT_PRESENT entry
        # (still the parent's data) rather than a PARTIALLY_PRESENT entry with stale bits.
        sectors = self.bitmaps.dirty_sectors()
        sectors += self.bat.dirty_sectors(self.bat_region.file_offset, self._read)
        self._session.commit(sectors, os.fstat(self._fd).st_size)
        self.bitmaps.dirty_pages.clear()
        self.bat.dirty_pages.clear()

    def flush(self) -> None:
        """Make every write durable: data fsync, then BAT/bitmaps via the log."""
        if not self.writable or self._fd < 0:
            return
        self._commit_metadata()
        os.fsync(self._fd)

    def clean_log(self) -> None:
        """Flush, then mark the log clean (LogGuid zero, MS-VHDX 2.2.2), before the file
        shrinks: every entry is applied by then, and an active one names the longer file
        as flushed, which replay must refuse once the file is shorter (2.3.3)."""
        self.flush()
        self._session.end()

    def close(self) -> None:
        """Flush, then mark the log clean (LogGuid zero) when this open wrote anything."""
        if self._fd >= 0 and self.writable:
            try:
                self.flush()
                self._session.end()
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

    def extend_allocation(self, end: int) -> None:
        """Note that the file is in use up to ``end`` (a slot moved past the end)."""
        self._alloc.end = max(self._alloc.end, end)

    def refresh_allocation(self) -> None:
        """Recompute the allocation end from the BAT (after a truncation)."""
        self._alloc.end = self._compute_alloc_end()

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
        if self._dirty_count() >= _AUTO_FLUSH_PAGES:
            self._commit_metadata()

    def _write_block(self, block: int, lo: int, piece: memoryview) -> None:
        bs = self.block_size
        idx = self.bat.index(block)
        ent = self.bat[idx]
        st = S.bat_state(ent)
        diff = self.differencing
        hi = lo + len(piece)
        if st == S.PAYLOAD_BLOCK_FULLY_PRESENT or (st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT
                                                  and diff):
            self.write_file(S.bat_offset(ent) + lo, piece)
            if st == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                self.bitmaps.set_present(block, lo, hi, self._alloc.new_bitmap_block)
            return
        off = self._alloc.take(bs)
        # Zero what the write does not cover: the slot may reuse an orphan tail.
        if lo:
            self._alloc.zero_fill(off, off + lo)
        self.write_file(off + lo, piece)
        if hi < bs:
            self._alloc.zero_fill(off + hi, off + bs)
        whole = lo == 0 and hi == bs
        if diff and st in (*UNDEFINED, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT) and not whole:
            # Unwritten sectors stay the parent's: a partially present block (2.5.1.1).
            self.bitmaps.set_present(block, lo, hi, self._alloc.new_bitmap_block)
            self.bat.set(idx, S.bat_entry(S.PAYLOAD_BLOCK_PARTIALLY_PRESENT, off))
        else:
            # Dynamic, or a differencing block that read as zeros: every sector is defined.
            self.bat.set(idx, S.bat_entry(S.PAYLOAD_BLOCK_FULLY_PRESENT, off))

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make a range read zero: whole blocks become PAYLOAD_BLOCK_ZERO (not on fixed
        disks); partial blocks get zero bytes unless they already read zero."""
        self._check_range(offset, length)
        if not length:
            return
        bs = self.block_size
        end = offset + length
        pos = offset
        diff = self.differencing
        zero = bytes(min(bs, 8 * MiB))
        while pos < end:
            block = pos // bs
            lo = pos - block * bs
            hi = min(bs, end - block * bs)
            block_end = min(bs, self.virtual_size - block * bs)
            st = self.payload_state(block)
            reads_zero = st in READS_ZERO or (not diff and st in UNDEFINED)
            if reads_zero:
                pass
            elif (lo == 0 and hi >= block_end and self.disk_type is not DiskType.FIXED):
                self._begin_session(data=True)
                self.bat.set(self.bat.index(block), S.bat_entry(S.PAYLOAD_BLOCK_ZERO, 0))
            else:
                p = lo
                while p < hi:
                    n = min(len(zero), hi - p)
                    self.write(block * bs + p, memoryview(zero)[:n])
                    p += n
            pos = block * bs + hi
        if self._dirty_count() >= _AUTO_FLUSH_PAGES:
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
        if os.fstat(self._fd).st_size != self._alloc.end:
            os.ftruncate(self._fd, self._alloc.end)
        os.fsync(self._fd)
        fwg = _derive_guid(seed, b"file_write_guid")
        dwg = (self.header.data_write_guid if keep_data_write_guid
               else _derive_guid(seed, b"data_write_guid"))
        self.headers.rewrite_final(self._fd, fwg, dwg)
        pos = self.header.log_offset
        end = pos + self.header.log_length
        while pos < end:
            n = min(MiB, end - pos)
            fileio.write_all(self._fd, [memoryview(_ZERO_MIB)[:n]], pos, path=self.path)
            pos += n
        os.fsync(self._fd)
        self._session.reset()

    # --- check / repair ---------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Header/region CRCs, dirty log, BAT entries inside the file and not overlapping,
        states valid for the disk type, orphan tail."""
        problems = list(self._load_problems)
        size = self._size
        regions: list[tuple[int, int, str]] = [
            (0, MiB, "headers"),
            (self.bat_region.file_offset, self.bat_region.file_offset
             + self.bat_region.length, "BAT"),
            (self.metadata_region.file_offset, self.metadata_region.file_offset
             + self.metadata_region.length, "metadata")]
        if self.header.log_length:
            regions.append((self.header.log_offset,
                            self.header.log_offset + self.header.log_length, "log"))
        problems += bat_problems(self.bat, regions, size, differencing=self.differencing)
        if size > self._alloc.end:
            problems.append(Problem("orphan_tail", f"{size - self._alloc.end} bytes after the "
                                    f"last block (from {self._alloc.end})", repairable=True))
        return problems

    def repair(self) -> list[str]:
        """Safe repairs: replay the log (done at a writable open), restore a damaged header
        or region table from the good copy, trim an orphan tail."""
        self._require_writable()
        done: list[str] = []
        if self._replayed:
            done.append("replayed the log")
        if self.headers.damaged:
            self.headers.update(self._fd)
            done.append("rewrote the damaged header from the current one")
        if self.regions.damaged:
            self.regions.repair(self._fd)
            done.append("rewrote the damaged region table from the valid one")
        self.flush()
        size = os.fstat(self._fd).st_size
        if size > self._alloc.end:
            os.ftruncate(self._fd, self._alloc.end)
            os.fsync(self._fd)
            done.append(f"trimmed an orphan tail of {size - self._alloc.end} bytes")
        self._load_problems = [p for p in self._load_problems
                               if p.code not in ("dirty_log", "header_checksum",
                                                 "region_table_checksum")]
        return done

    def block_store(self) -> BlockStore | None:
        if self.disk_type is DiskType.FIXED:
            return None
        return VhdxBlockStore(self)
