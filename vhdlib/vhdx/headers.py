"""The VHDX header pair (MS-VHDX 2.2.2) and region tables (2.2.3) in the first MiB."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from uuid import UUID

from vhdlib import fileio
from vhdlib.errors import ChecksumError, ImageError, UnsupportedError
from vhdlib.layer import Problem
from vhdlib.vhdx import structs as S

MiB = S.MiB
_HEADER_OFFSETS = (S.HEADER1_OFFSET, S.HEADER2_OFFSET)
_TABLE_OFFSETS = (S.REGION_TABLE1_OFFSET, S.REGION_TABLE2_OFFSET)


class _Checksummed(Protocol):
    @property
    def valid(self) -> bool: ...


C = TypeVar("C", bound=_Checksummed)


def _two_copies(head: bytes, offsets: tuple[int, int], size: int,
                parse: Callable[[bytes], C], *, name: str, code: str, refused: str,
                warned: str, lenient: bool, path: str, problems: list[Problem],
                warnings: list[str]) -> tuple[list[C | None], list[C]]:
    """Parse both copies of a structure kept twice (the headers, 2.2.2; the region tables,
    2.2.3): each missing or damaged one is a ``code`` problem (repairable from a valid one).
    Returns every copy (``None`` where unreadable) and the usable ones: the valid, else,
    when ``lenient``, the damaged ones (``warned``); none usable is :class:`ChecksumError`."""
    found: list[C | None] = []
    for off in offsets:
        try:
            found.append(parse(head[off:off + size]))
        except S.StructError:
            found.append(None)
    valid = [c for c in found if c is not None and c.valid]
    for i, c in enumerate(found):
        if c is None or not c.valid:
            problems.append(Problem(code, f"{name} {i + 1} is missing or its CRC-32C is wrong",
                                    repairable=bool(valid)))
    if not valid:
        damaged = [c for c in found if c is not None]
        if not (lenient and damaged):
            raise ChecksumError(refused, path=path)
        warnings.append(warned)
        valid = damaged
    return found, valid


class HeaderPair:
    """Both headers; the current one is the valid one with the higher sequence number."""

    def __init__(self, headers: list[S.Header | None], slot: int, path: str) -> None:
        self.headers = headers
        self.slot = slot
        self.path = path

    @property
    def current(self) -> S.Header:
        h = self.headers[self.slot]
        assert h is not None
        return h

    @property
    def damaged(self) -> bool:
        return any(h is None or not h.valid for h in self.headers)

    @classmethod
    def load(cls, head: bytes, *, file_size: int, lenient: bool, path: str,
             problems: list[Problem], warnings: list[str]) -> HeaderPair:
        """2.2.2: parse both, report the damaged ones, check the current one."""
        found, valid = _two_copies(
            head, _HEADER_OFFSETS, S.HEADER_SIZE, S.Header.parse, name="header",
            code="header_checksum", refused="both VHDX headers are missing or fail their "
            "CRC-32C (MS-VHDX 2.2.2)", warned="both headers fail their CRC-32C; using the "
            "newer one", lenient=lenient, path=path, problems=problems, warnings=warnings)
        # Equal sequence numbers in two valid headers are legal: Disk2vhd writes two identical
        # headers (qemu-iotests test-disk2vhd.vhdx); either one is current then.
        h = max(valid, key=lambda h: h.sequence_number)
        pair = cls(found, found.index(h), path)
        if h.version != 1:
            raise UnsupportedError(f"VHDX header version {h.version} (only 1 is defined)",
                                   path=path)
        if h.log_version != 0:
            raise UnsupportedError(f"VHDX log version {h.log_version}", path=path)
        if (h.log_offset % MiB or h.log_length % MiB or h.log_offset < MiB
                or (h.log_length and h.log_offset + h.log_length > file_size)):
            raise ImageError(f"log region [{h.log_offset}, +{h.log_length}) is misaligned or "
                             "outside the file (MS-VHDX 2.2.2)", path=path)
        return pair

    def update(self, fd: int, **changes: Any) -> None:
        """Update both headers, one at a time (2.2.2.1): each write, then fsync.

        The non-current slot is written first with sequence + 1, then the other with + 2, so
        a torn write always leaves one valid header.
        """
        cur = self.current
        seq = cur.sequence_number
        slot = 1 - self.slot
        for step in (1, 2):
            data = cur.copy(sequence_number=seq + step, **changes).serialize()
            fileio.write_all(fd, [data], _HEADER_OFFSETS[slot], path=self.path)
            os.fsync(fd)
            self.headers[slot] = S.Header.parse(data)
            self.slot = slot
            slot = 1 - slot

    def rewrite_final(self, fd: int, file_write_guid: UUID, data_write_guid: UUID) -> None:
        """Both headers with these GUIDs, LogGuid zero and sequence numbers ``k << 32`` and
        ``(k << 32) + 1`` (see :meth:`VhdxLayer.finalize` for ``k``); idempotent."""
        cur = self.current
        seqs = [h.sequence_number for h in self.headers if h is not None and h.valid]
        k = None
        for h in self.headers:
            if (h is not None and h.valid and h.file_write_guid == file_write_guid
                    and h.data_write_guid == data_write_guid
                    and h.sequence_number & 0xFFFFFFFF in (0, 1)):
                k = h.sequence_number >> 32
        if k is None:
            k = (max(seqs, default=0) >> 32) + 1
        for slot, step in ((0, 0), (1, 1)):
            data = S.Header.new(((k << 32) + step), file_write_guid, data_write_guid,
                                cur.log_offset, cur.log_length).serialize()
            fileio.write_all(fd, [data], _HEADER_OFFSETS[slot], path=self.path)
            os.fsync(fd)
            self.headers[slot] = S.Header.parse(data)
        self.slot = 1


class RegionTables:
    """Both region tables; the first valid copy is used (2.2.3)."""

    def __init__(self, tables: list[S.RegionTable | None], table: S.RegionTable,
                 bat: S.RegionEntry, metadata: S.RegionEntry, path: str) -> None:
        self.path = path
        self.tables = tables
        self.table = table
        self.bat = bat
        self.metadata = metadata

    @property
    def damaged(self) -> bool:
        return any(t is None or not t.valid for t in self.tables)

    @classmethod
    def load(cls, head: bytes, header: S.Header, *, file_size: int, lenient: bool,
             path: str, problems: list[Problem], warnings: list[str]) -> RegionTables:
        tables, valid = _two_copies(
            head, _TABLE_OFFSETS, S.REGION_TABLE_SIZE, S.RegionTable.parse,
            name="region table", code="region_table_checksum", refused="both region tables "
            "are missing or fail their CRC-32C (MS-VHDX 2.2.3)", warned="both region tables "
            "fail their CRC-32C", lenient=lenient, path=path, problems=problems,
            warnings=warnings)
        table = valid[0]
        spans: list[tuple[int, int, str]] = [(0, MiB, "headers")]
        if header.log_length:
            spans.append((header.log_offset, header.log_offset + header.log_length, "log"))
        for e in table.entries:
            # Unknown regions marked Required make the file unreadable to us (2.2.3.2).
            # Required=0 on BAT/metadata (qemu 1.6, iotest-dirtylog) is accepted.
            if e.guid not in (S.BAT_REGION_GUID, S.METADATA_REGION_GUID):
                if e.required:
                    raise UnsupportedError(f"unknown required region {e.guid}", path=path)
                continue
            if e.file_offset % MiB or e.length % MiB or e.length == 0:
                raise ImageError(f"region {e.guid} at {e.file_offset} (+{e.length}) is not "
                                 "1 MiB aligned (MS-VHDX 2.2.3.2)", path=path)
            if e.file_offset + e.length > file_size:
                raise ImageError(f"region {e.guid} [{e.file_offset}, "
                                 f"{e.file_offset + e.length}) lies past the end of the file "
                                 f"({file_size})", path=path)
            spans.append((e.file_offset, e.file_offset + e.length, str(e.guid)))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in itertools.pairwise(spans):
            if b0 < a1:
                raise ImageError(f"regions overlap: {an} [{a0}, {a1}) and {bn} [{b0}, {b1}) "
                                 "(MS-VHDX 2.2.3)", path=path)
        bat = table.find(S.BAT_REGION_GUID)
        meta = table.find(S.METADATA_REGION_GUID)
        if bat is None or meta is None:
            raise ImageError("region table lacks the BAT or the metadata region", path=path)
        return cls(tables, table, bat, meta, path)

    def repair(self, fd: int) -> None:
        """Rewrite the damaged copies from the one in use, then fsync."""
        data = S.RegionTable.new(self.table.entries).serialize()
        for i, t in enumerate(self.tables):
            if t is None or not t.valid:
                fileio.write_all(fd, [data], _TABLE_OFFSETS[i], path=self.path)
        os.fsync(fd)
        self.tables = [S.RegionTable.parse(data), S.RegionTable.parse(data)]
