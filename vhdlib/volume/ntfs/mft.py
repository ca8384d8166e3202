"""The Master File Table as a whole: records by number through ``$MFT``'s own run list,
and attributes gathered across extension records through ``$ATTRIBUTE_LIST``
(libfsntfs "MFT", "Attribute list attribute").
"""

from __future__ import annotations

import dataclasses

from vhdlib.volume.errors import VolumeStructureError
from vhdlib.volume.ntfs import record as r
from vhdlib.volume.ntfs.attrlist import AttrListEntry
from vhdlib.volume.ntfs.boot import BootSector
from vhdlib.volume.ntfs.runlist import Run
from vhdlib.volume.source import Window

MAX_SEGMENTS = 4096  # bound an attribute list's fan-out
#: A cap on the memory a non-resident $ATTRIBUTE_LIST may take: 4 MiB holds over 7,000
#: entries of the longest kind (0x1A bytes and a 255-character name); more keeps whole.
MAX_ATTRLIST_BYTES = 4 * 1024 * 1024


def read_runs(win: Window, runs: tuple[Run, ...] | list[Run], cluster_size: int, offset: int,
              length: int) -> bytes:
    """``length`` bytes at byte ``offset`` of the stream the runs map (sparse runs read as
    zeros); bytes the runs do not map are a structure error."""
    out = bytearray()
    pos, end = offset, offset + length
    for run in runs:
        if pos >= end:
            break
        r_start, r_end = run.vcn * cluster_size, (run.vcn + run.length) * cluster_size
        if pos < r_start:
            raise VolumeStructureError(f"stream byte {pos} is in no run")
        if pos >= r_end:
            continue
        n = min(end, r_end) - pos
        if run.lcn is None:
            out += bytes(n)
        else:
            out += win.read(run.lcn * cluster_size + pos - r_start, n)
        pos += n
    if pos < end:
        raise VolumeStructureError(f"stream byte {pos} is in no run")
    return bytes(out)


class Mft:
    """Record access for one NTFS volume (cached, fixups applied, bound-checked)."""

    def __init__(self, win: Window, boot: BootSector) -> None:
        self.win, self.boot = win, boot
        self._records: dict[int, r.MftRecord] = {}
        size = boot.mft_record_size
        raw0 = win.read(boot.mft_lcn * boot.cluster_size, size)
        rec0 = r.MftRecord.parse(raw0, 0, boot.total_clusters)
        base = [a for a in rec0.find(r.AT_DATA) if not a.resident and a.first_vcn == 0]
        if not rec0.in_use or len(base) != 1 or base[0].runs[:1] == () or (
                base[0].runs[0].lcn != boot.mft_lcn):
            raise VolumeStructureError("$MFT record 0 does not map the $MFT")
        # Until the attribute list is followed, only the base segment's runs are known;
        # the extension records of $MFT lie in them (Windows places them low).
        self.runs: tuple[Run, ...] = base[0].runs
        self.count = base[0].initialized_size // size
        self._records[0] = rec0
        self.data = r.plain(self._gather(rec0, r.AT_DATA, "", "$MFT"), "$MFT")
        # A sparse run would read as zeros (no records) yet count towards the records a
        # walk visits: the $MFT is never sparse, so its size is bounded by the volume.
        if any(run.lcn is None for run in self.data.runs):
            raise VolumeStructureError("$MFT has a sparse run")
        self.runs = self.data.runs
        self.count = self.data.initialized_size // size

    def raw(self, number: int) -> bytes:
        if not 0 <= number < self.count:
            raise VolumeStructureError(f"MFT record {number} beyond the $MFT")
        size = self.boot.mft_record_size
        return read_runs(self.win, self.runs, self.boot.cluster_size, number * size, size)

    def fixed(self, number: int) -> bytes:
        return r.apply_fixups(self.raw(number), b"FILE", f"MFT record {number}")

    def record(self, number: int) -> r.MftRecord:
        if number not in self._records:
            self._records[number] = r.MftRecord.parse(
                self.raw(number), number, self.boot.total_clusters)
        return self._records[number]

    def read_value(self, attr: r.Attribute, size: int | None = None, offset: int = 0) -> bytes:
        """Bytes of an attribute's value; past the initialized size they read zero."""
        size = attr.data_size - offset if size is None else size
        if offset < 0 or size < 0 or offset + size > attr.data_size:
            raise VolumeStructureError(f"read past the end of attribute {attr.type:#x}")
        if attr.resident:
            return attr.value[offset:offset + size]
        live = max(0, min(offset + size, attr.initialized_size) - offset)
        data = read_runs(self.win, attr.runs, self.boot.cluster_size, offset, live)
        return data + bytes(size - live)

    def attribute(self, rec: r.MftRecord, atype: int, name: str) -> r.Attribute | None:
        """The attribute ``atype``/``name`` of a file, all segments joined; None if absent."""
        try:
            return self._gather(rec, atype, name, f"attribute {atype:#x} of record "
                                f"{rec.number}")
        except LookupError:
            return None

    def data_segments(self, rec: r.MftRecord, what: str) -> r.Attribute:
        """A system file's unnamed ``$DATA``, required, in use and not compressed."""
        if not rec.in_use:
            raise VolumeStructureError(f"{what} record is not in use")
        attr = self.attribute(rec, r.AT_DATA, "")
        if attr is None:
            raise VolumeStructureError(f"{what} has no $DATA")
        # A sparse run would read as zeros: for $Bitmap that is "free", so refuse it.
        if any(run.lcn is None for run in attr.runs):
            raise VolumeStructureError(f"{what} has a sparse run")
        return r.plain(attr, what)

    def _gather(self, rec: r.MftRecord, atype: int, name: str, what: str) -> r.Attribute:
        lists = rec.find(r.AT_ATTRIBUTE_LIST)
        if not lists:
            found = rec.find(atype, name)
            if not found:
                raise LookupError(what)
            if len(found) != 1:
                raise VolumeStructureError(f"{what}: {len(found)} copies in one record")
            return self._sized(found[0], what)
        if len(lists) != 1:
            raise VolumeStructureError(f"record {rec.number}: several attribute lists")
        alist = self._sized(lists[0], f"attribute list of record {rec.number}")
        if not alist.resident and (alist.data_size > MAX_ATTRLIST_BYTES or any(
                run.lcn is None for run in alist.runs)):
            # Sparse runs read as zeros, which hold no entry: only a damaged list has them.
            raise VolumeStructureError(f"attribute list of record {rec.number}: "
                                       f"{alist.data_size} bytes or sparse")
        value = self.read_value(alist) if alist.resident else read_runs(
            self.win, alist.runs, self.boot.cluster_size, 0, alist.data_size)
        wanted = [e for e in AttrListEntry.parse_all(value) if e.type == atype and e.name == name]
        if not wanted:
            raise LookupError(what)
        if len(wanted) > MAX_SEGMENTS:
            raise VolumeStructureError(f"{what}: {len(wanted)} segments")
        segments = []
        for entry in sorted(wanted, key=lambda e: e.first_vcn):
            holder = rec if entry.record == rec.number else self.record(entry.record)
            if holder is not rec and (not holder.in_use or holder.base_reference != rec.number):
                raise VolumeStructureError(
                    f"{what}: extension record {entry.record} does not belong to "
                    f"record {rec.number}")
            match = [a for a in holder.find(atype, name) if a.attr_id == entry.attr_id]
            if len(match) != 1 or (not match[0].resident and
                                   match[0].first_vcn != entry.first_vcn):
                raise VolumeStructureError(f"{what}: attribute list entry not found")
            segments.append(match[0])
            if rec.number == 0 and atype == r.AT_DATA and not match[0].resident:
                self.runs = tuple(run for seg in segments for run in seg.runs)
        return self._sized(_join(segments, what), what)

    def _sized(self, attr: r.Attribute, what: str) -> r.Attribute:
        """``attr`` (all its segments joined) once its sizes agree with its runs.

        libfsntfs "MFT attribute": the first segment carries the sizes, initialized <=
        data <= allocated, and the allocated size is what the runs map, a whole number of
        clusters; ntfs-3g (``ntfs_attr_map_whole_runlist``) refuses an attribute whose last
        segment's highest VCN is not ``allocated_size / cluster_size - 1``. Each non-sparse
        run maps clusters of the volume, so together they map at most its cluster count
        (more means runs overlap). Any loop over an attribute's bytes is thereby bounded
        by its runs, and, for a non-sparse attribute, by the volume.
        """
        if attr.resident:
            return attr
        mapped = (attr.last_vcn + 1) * self.boot.cluster_size
        if attr.allocated_size != mapped or not (
                attr.initialized_size <= attr.data_size <= attr.allocated_size):
            raise VolumeStructureError(
                f"{what}: sizes {attr.initialized_size}/{attr.data_size}/"
                f"{attr.allocated_size} disagree with its runs ({mapped} bytes)")
        if sum(run.length for run in attr.runs if run.lcn is not None) > (
                self.boot.total_clusters):
            raise VolumeStructureError(f"{what}: runs map more clusters than the volume has")
        return attr


def _join(segments: list[r.Attribute], what: str) -> r.Attribute:
    """One attribute from its segments (the first carries the sizes); VCNs must chain."""
    first = segments[0]
    if first.resident:
        if len(segments) != 1:
            raise VolumeStructureError(f"{what}: resident attribute in several segments")
        return first
    if first.first_vcn != 0:
        raise VolumeStructureError(f"{what}: no segment starts at VCN 0")
    runs: list[Run] = []
    next_vcn = 0
    for seg in segments:
        if seg.resident or seg.first_vcn != next_vcn:
            raise VolumeStructureError(f"{what}: segments do not chain at VCN {next_vcn}")
        runs.extend(seg.runs)
        next_vcn = seg.last_vcn + 1
    return dataclasses.replace(first, runs=tuple(runs), last_vcn=next_vcn - 1)
