"""The VHDX metadata log (MS-VHDX 2.3): find the active sequence, replay it, write entries.

Replay goes either to the file (writable opens) or into an :class:`Overlay` that patches
reads in memory (read-only opens never write).

Our writer keeps every entry self-contained: an entry's ``Tail`` points at itself, because
the previous entry was applied and flushed before it was written. A torn entry fails its
CRC, so replay falls back to the previous (already applied) entry: the file replays to the
old or to the new state, never to a mixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from vhdlib import fileio
from vhdlib.checksum import crc32c
from vhdlib.vhdx.structs import (
    DATA_DESC_SIGNATURE,
    DESCRIPTOR_SIZE,
    LOG_ENTRY_HEADER_SIZE,
    LOG_SECTOR_SIZE,
    ZERO_DESC_SIGNATURE,
    DataDescriptor,
    DataSector,
    LogEntryHeader,
    StructError,
    ZeroDescriptor,
)

#: Log data descriptors may not rewrite the file identifier, headers and region tables
#: (2.3: "the log is not used for the headers"); everything below this offset is refused.
MIN_DESCRIPTOR_OFFSET = 1024 * 1024
#: LastFileOffset beyond this is absurd (far past the 64 TiB disk limit): refused.
MAX_FILE_OFFSET = 1 << 48


class LogError(ValueError):
    """The log is corrupt in a way that makes replay unsafe (translated by the layer)."""


@dataclass
class LogEntry:
    """One valid entry: its position in the log, header, and the writes it describes."""

    position: int
    header: LogEntryHeader
    #: In order: (file_offset, 4 KiB sector) for data, (file_offset, length) for zero.
    writes: list[tuple[int, bytes | int]] = field(default_factory=list)


def _descriptor_sectors(count: int) -> int:
    """4 KiB sectors holding the entry header and ``count`` descriptors (2.3.1.1)."""
    return -(-(LOG_ENTRY_HEADER_SIZE + DESCRIPTOR_SIZE * count) // LOG_SECTOR_SIZE)


def _read_log(read: Callable[[int, int], bytes], log_offset: int, log_length: int,
              pos: int, length: int) -> bytes:
    """``length`` bytes of the circular log starting at ``pos`` (wrapping at the end)."""
    out = bytearray()
    while length > 0:
        n = min(length, log_length - pos)
        out += read(log_offset + pos, n)
        pos = (pos + n) % log_length
        length -= n
    return bytes(out)


def read_entry(read: Callable[[int, int], bytes], log_offset: int, log_length: int,
               pos: int, log_guid: UUID) -> LogEntry | None:
    """Parse and verify the entry at ``pos``; ``None`` when it is not a valid entry there.

    Checks (2.3.1.1): signature, LogGuid, EntryLength a multiple of 4 KiB within the log,
    descriptors fit, CRC-32C over the whole entry with the checksum zeroed, and every
    descriptor and data sector carries the entry's sequence number.
    """
    first = _read_log(read, log_offset, log_length, pos, LOG_SECTOR_SIZE)
    try:
        hdr = LogEntryHeader.parse(first)
    except StructError:
        return None
    if hdr.log_guid != log_guid:
        return None  # stale entry of an earlier log (the dirtylog fixture has six)
    if (hdr.entry_length == 0 or hdr.entry_length % LOG_SECTOR_SIZE
            or hdr.entry_length > log_length or hdr.tail % LOG_SECTOR_SIZE
            or hdr.tail >= log_length):
        return None
    dsec = _descriptor_sectors(hdr.descriptor_count)
    if dsec * LOG_SECTOR_SIZE > hdr.entry_length:
        return None
    raw = bytearray(_read_log(read, log_offset, log_length, pos, hdr.entry_length))
    raw[4:8] = b"\0\0\0\0"
    if crc32c(raw) != hdr.checksum:
        return None
    entry = LogEntry(pos, hdr)
    data_index = dsec
    for i in range(hdr.descriptor_count):
        at = LOG_ENTRY_HEADER_SIZE + DESCRIPTOR_SIZE * i
        sig = bytes(raw[at:at + 4])
        if sig == ZERO_DESC_SIGNATURE:
            z = ZeroDescriptor.parse(bytes(raw[at:at + DESCRIPTOR_SIZE]))
            if z.sequence_number != hdr.sequence_number:
                return None
            entry.writes.append((z.file_offset, z.zero_length))
        elif sig == DATA_DESC_SIGNATURE:
            d = DataDescriptor.parse(bytes(raw[at:at + DESCRIPTOR_SIZE]))
            if d.sequence_number != hdr.sequence_number:
                return None
            if (data_index + 1) * LOG_SECTOR_SIZE > hdr.entry_length:
                return None
            sraw = bytes(raw[data_index * LOG_SECTOR_SIZE:(data_index + 1) * LOG_SECTOR_SIZE])
            try:
                ds = DataSector.parse(sraw)
            except StructError:
                return None
            if ds.sequence_number != hdr.sequence_number:
                return None
            entry.writes.append((d.file_offset, d.leading_bytes + ds.data + d.trailing_bytes))
            data_index += 1
        else:
            return None
    return entry


def find_active_sequence(read: Callable[[int, int], bytes], log_offset: int,
                         log_length: int, log_guid: UUID) -> list[LogEntry]:
    """The active sequence (2.3.3), tail first; empty when the log holds no valid entry.

    Every 4 KiB position is a candidate start. A sequence is a run of valid entries, each
    directly after the previous one with the next sequence number. It is complete when its
    head's Tail points at one of its entries. The active sequence is the complete one
    whose head has the highest sequence number; replay starts at the head's Tail.
    """
    entries: dict[int, LogEntry] = {}
    for pos in range(0, log_length, LOG_SECTOR_SIZE):
        e = read_entry(read, log_offset, log_length, pos, log_guid)
        if e is not None:
            entries[pos] = e
    best: list[LogEntry] = []
    for start, e in entries.items():
        seq = [e]
        seen = {start}
        while True:
            cur = seq[-1]
            nxt_pos = (cur.position + cur.header.entry_length) % log_length
            nxt = entries.get(nxt_pos)
            if (nxt is None or nxt_pos in seen
                    or nxt.header.sequence_number != cur.header.sequence_number + 1):
                break
            seq.append(nxt)
            seen.add(nxt_pos)
        head = seq[-1]
        positions = [x.position for x in seq]
        if head.header.tail not in positions:
            continue
        seq = seq[positions.index(head.header.tail):]
        if not best or head.header.sequence_number > best[-1].header.sequence_number:
            best = seq
    return best


def validate_sequence(seq: list[LogEntry], file_size: int, log_offset: int,
                      log_length: int) -> None:
    """Refuse a sequence whose replay would be unsafe (2.3.3: FlushedFileOffset check).

    The file must be at least the head's FlushedFileOffset long (else writes the log relied
    on were lost); LastFileOffset must not be absurd; descriptors must stay clear of the
    headers and of the log itself, and inside LastFileOffset.
    """
    if not seq:
        return
    head = seq[-1].header
    if file_size < head.flushed_file_offset:
        raise LogError(f"file is {file_size} bytes but the log says {head.flushed_file_offset} "
                       "were flushed: data the log relies on is lost")
    for e in seq:
        h = e.header
        if h.last_file_offset > MAX_FILE_OFFSET or h.flushed_file_offset > MAX_FILE_OFFSET:
            raise LogError(f"log entry {h.sequence_number} names an absurd file size "
                           f"{h.last_file_offset}")
        limit = max(h.last_file_offset, file_size)
        for off, what in e.writes:
            length = what if isinstance(what, int) else len(what)
            if off % LOG_SECTOR_SIZE or length % LOG_SECTOR_SIZE:
                raise LogError(f"log descriptor at {off} (+{length}) is not 4 KiB aligned")
            if off < MIN_DESCRIPTOR_OFFSET:
                raise LogError(f"log descriptor rewrites the header area at {off}")
            if off < log_offset + log_length and off + length > log_offset:
                raise LogError(f"log descriptor at {off} rewrites the log itself")
            if off + length > limit:
                raise LogError(f"log descriptor at {off} (+{length}) points past the end of "
                               f"the file ({limit})")


def last_file_offset(seq: list[LogEntry]) -> int:
    return max((e.header.last_file_offset for e in seq), default=0)


def replay_to_file(fd: int, seq: list[LogEntry]) -> None:
    """Apply the sequence to the file in order, extend it to LastFileOffset, fsync (2.3.3).

    Idempotent: a kill during replay leaves the log intact, and replaying again yields the
    same bytes.
    """
    if not seq:
        return
    zero = bytes(1 << 20)
    for e in seq:
        for off, what in e.writes:
            if isinstance(what, int):
                pos, end = off, off + what
                while pos < end:
                    n = min(len(zero), end - pos)
                    fileio.pwrite(fd, zero[:n], pos)
                    pos += n
            else:
                fileio.pwrite(fd, what, off)
    want = last_file_offset(seq)
    if os.fstat(fd).st_size < want:
        os.ftruncate(fd, want)
    os.fsync(fd)


class Overlay:
    """The replayed log held in memory: patches reads of the unmodified file (read-only)."""

    def __init__(self, seq: list[LogEntry], file_size: int) -> None:
        self.ops: list[tuple[int, int, bytes | None]] = []
        for e in seq:
            for off, what in e.writes:
                if isinstance(what, int):
                    self.ops.append((off, off + what, None))
                else:
                    self.ops.append((off, off + len(what), what))
        #: The file as replay would have extended it.
        self.size = max(file_size, last_file_offset(seq))
        self.lo = min((o[0] for o in self.ops), default=0)
        self.hi = max((o[1] for o in self.ops), default=0)

    def __bool__(self) -> bool:
        return True

    def patch(self, file_offset: int, buf: memoryview) -> None:
        """Apply the replayed writes that intersect ``[file_offset, +len(buf))``, in order."""
        end = file_offset + len(buf)
        if end <= self.lo or file_offset >= self.hi:
            return
        for lo, hi, data in self.ops:
            s, e = max(lo, file_offset), min(hi, end)
            if s >= e:
                continue
            if data is None:
                buf[s - file_offset:e - file_offset] = bytes(e - s)
            else:
                buf[s - file_offset:e - file_offset] = data[s - lo:e - lo]


class LogWriter:
    """Writes self-contained log entries (Tail = the entry itself) into the circular log."""

    def __init__(self, fd: int, log_offset: int, log_length: int, log_guid: UUID) -> None:
        self.fd = fd
        self.log_offset = log_offset
        self.log_length = log_length
        self.log_guid = log_guid
        self.head = 0
        self.sequence_number = 1

    def max_sectors_per_entry(self) -> int:
        """Data sectors one entry can carry so that it fits in the log."""
        total = self.log_length // LOG_SECTOR_SIZE
        n = total - 1
        while n > 0 and _descriptor_sectors(n) + n > total:
            n -= 1
        return n

    def build_entry(self, sectors: list[tuple[int, bytes]], file_size: int) -> bytes:
        """Serialize an entry rewriting ``sectors`` ((offset, 4 KiB)) at the current head."""
        seqno = self.sequence_number
        dsec = _descriptor_sectors(len(sectors))
        length = (dsec + len(sectors)) * LOG_SECTOR_SIZE
        buf = bytearray(length)
        hdr = LogEntryHeader.new(length, self.head, seqno, len(sectors), self.log_guid,
                                 file_size, file_size)
        buf[0:LOG_ENTRY_HEADER_SIZE] = hdr.serialize()
        for i, (off, sector) in enumerate(sectors):
            at = LOG_ENTRY_HEADER_SIZE + DESCRIPTOR_SIZE * i
            buf[at:at + DESCRIPTOR_SIZE] = DataDescriptor.new(sector, off, seqno).serialize()
            s = (dsec + i) * LOG_SECTOR_SIZE
            buf[s:s + LOG_SECTOR_SIZE] = DataSector.new(sector, seqno).serialize()
        hdr.checksum = crc32c(buf)
        buf[0:LOG_ENTRY_HEADER_SIZE] = hdr.serialize()
        return bytes(buf)

    def commit(self, sectors: list[tuple[int, bytes]], file_size: int) -> None:
        """Write entries for ``sectors``, then apply them: entry, fsync, apply, fsync.

        ``file_size`` is the (already flushed) file size: FlushedFileOffset = LastFileOffset.
        """
        step = self.max_sectors_per_entry()
        for i in range(0, len(sectors), step):
            part = sectors[i:i + step]
            length = (_descriptor_sectors(len(part)) + len(part)) * LOG_SECTOR_SIZE
            if self.head + length > self.log_length:
                self.head = 0  # entries never wrap: start again at the log's beginning
            entry = self.build_entry(part, file_size)
            fileio.pwrite(self.fd, entry, self.log_offset + self.head)
            os.fsync(self.fd)
            for off, sector in part:
                fileio.pwrite(self.fd, sector, off)
            os.fsync(self.fd)
            self.head = (self.head + length) % self.log_length
            self.sequence_number += 1
