"""The scan's header-only reader: one disk file's figures from a few large reads.

The full path (:func:`~vhdlib.scan.walk.classify`, then :func:`~vhdlib.scan.layers.measure`
through :func:`vhdlib.formats.open_layer`) opens each file twice and reads its structures in
a dozen small preads; on a cold cache each is a separate I/O, and the parsing around them is
most of the scan's CPU. Here the file is opened once, its first page (and, for a VHD, its
last KiB) read, then the BAT with the locator data beside it (VHD), or the header area, the
metadata table and the BAT (VHDX), each in one pread. The parsers are the library's own
(footers, dynamic header, locators and the BAT checks of :mod:`vhdlib.vhd`; headers, region
tables, metadata, BAT and locators of :mod:`vhdlib.vhdx`), fed from those buffers; only the
figure formulas of :meth:`vhdlib.layer.Layer.max_bytes` are restated.

Only the plain case is taken: anything the fast path cannot decide as the full path does
(an exception of any kind, a warning, a VHD footer taken from its copy, a dirty VHDX log, a
BAT problem, the file not being the one the walk saw) falls back to the full path, so the
result is never different, only slower for an unusual file.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TypeVar

from vhdlib import fileio, formats
from vhdlib.formats import VHD_COOKIE, VHDX_SIGNATURE, no_readahead
from vhdlib.journal import SUFFIX as JOURNAL_SUFFIX
from vhdlib.layer import DiskType, ParentLink, hole_bytes
from vhdlib.scan import walk
from vhdlib.scan.layers import LayerFigures, attach_link, measure
from vhdlib.vhd import structs as V
from vhdlib.vhd.bat import used_indices, validate_slots
from vhdlib.vhd.footers import choose_footer
from vhdlib.vhd.header import read_header
from vhdlib.vhd.layer import TYPES as VHD_TYPES
from vhdlib.vhd.layout import DATA_ALIGNMENT, align_up, valid_block_size
from vhdlib.vhd.locators import parent_link as vhd_parent_link
from vhdlib.vhd.locators import read_locators
from vhdlib.vhdx import structs as X
from vhdlib.vhdx.bat import VhdxBat
from vhdlib.vhdx.headers import HeaderPair, RegionTables
from vhdlib.vhdx.locators import parent_link
from vhdlib.vhdx.metadata import read_metadata

Examined = tuple["walk.Found | None", "LayerFigures | str | None"]
T = TypeVar("T")
#: One file's examination: yields the file ranges it reads next (asked of the kernel ahead),
#: returns its result.
Steps = Generator[list[tuple[int, int]], None, T]

#: The first read of every file: the probe's signature, a VHD's footer copy and header.
HEAD = 4096
#: The last read of a VHD: both trailing footer forms (512 and the old 511 bytes).
TAIL = 1024
#: Locator data up to this far past the BAT is read with it in one pread (Hyper-V and
#: vhdlib put the W2ru locator right after the 4 KiB-rounded BAT).
NEAR = 128 * 1024
#: Metadata items read with their table (they follow it; the parent locator is the largest).
ITEMS = 4096
_OPEN = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


class Fallback(Exception):
    """The fast path cannot decide this file exactly: use the full path."""


class Buffers:
    """Spans of one file read in a few large preads; the parsers' small reads are served
    from them (a read outside every span is one more pread). A read outside the file is a
    :class:`Fallback`: the full path words that error."""

    __slots__ = ("fd", "reads", "size", "spans")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.spans: list[tuple[int, bytes]] = []
        self.reads = 0

    def load(self, start: int, end: int) -> None:
        start, end = max(0, start), min(end, self.size)
        if end > start:
            data = os.pread(self.fd, end - start, start)
            self.reads += 1
            if len(data) != end - start:
                raise Fallback("short read")
            self.spans.append((start, data))

    def read(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset`` (the order of :meth:`vhdlib.layer.Layer.pread`)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise Fallback("read outside the file")
        for start, data in self.spans:
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start:offset - start + length]
        self.load(offset, offset + length)
        return self.spans[-1][1]

    def at(self, offset: int, length: int) -> bytes:
        """:meth:`read` in the VHDX readers' argument order."""
        return self.read(length, offset)


def examine(path: str, st: os.stat_result) -> Examined:
    """What the file at ``path`` (``st``: its ``lstat``) is, and its figures when it is a
    disk: exactly what :func:`full` says, from fewer reads."""
    return examine_all([(path, st)])[0]


def examine_all(items: list[tuple[str, os.stat_result]]) -> list[Examined]:
    """:func:`examine` of each ``(path, lstat)``, in order, the files' reads overlapped.

    Each file is a generator that yields the ranges it reads next; they are asked of the
    kernel (``WILLNEED`` starts the reads without waiting) and the file is resumed only
    after every other file of the batch had its turn, so one thread waits for a batch's
    reads about once per step instead of once per read.
    """
    if not _built_in_probes():
        return [full(path, st) for path, st in items]
    named = formats.detected_suffixes()
    fds = [_open(path, st) for path, st in items]
    try:
        got: list[Examined | None] = [None] * len(items)
        active: list[tuple[int, Steps[Examined | None]]] = [
            (i, _examine(path, fd, st, path.lower().endswith(named)))
            for i, ((path, st), fd) in enumerate(zip(items, fds, strict=True))
            if fd is not None]
        while active:
            waiting = []
            for i, steps in active:
                try:
                    ranges = next(steps)
                except StopIteration as done:
                    got[i] = done.value
                    continue
                except Exception:  # any doubt: the full path decides, and words it
                    continue
                fd = fds[i]
                assert fd is not None
                _hint(fd, ranges)
                waiting.append((i, steps))
            active = waiting
        return [g if g is not None else full(path, st)
                for g, (path, st) in zip(got, items, strict=True)]
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


def _built_in_probes() -> bool:
    """Whether the registry recognises files exactly as this reader does: VHDX, then VHD,
    no other format with a probe (a registered one goes to the full path)."""
    probing = [f for f in formats.FORMATS if f.probe is not None]
    return len(probing) == 2 and probing[0] is formats.VHDX and probing[1] is formats.VHD


def full(path: str, st: os.stat_result) -> Examined:
    """The full path: the content probe, then the layer opened as every operation opens it."""
    found = walk.classify(path, st)
    if found is None or found.kind != "disk":
        return found, None
    return found, measure(path, found.fmt)


def _open(path: str, st: os.stat_result) -> int | None:
    """A descriptor to read ``path`` by (its first page asked for), ``None`` when the full
    path decides without one (or the open fails: the full path words the error)."""
    name = path.lower()
    if name.endswith(JOURNAL_SUFFIX) or name.endswith(walk.PARTIAL_SUFFIX) or st.st_size < 511:
        return None  # decided by name and size, nothing to read
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    no_readahead(fd)
    _hint(fd, [(0, HEAD)])
    return fd


def _hint(fd: int, ranges: list[tuple[int, int]]) -> None:
    for start, end in ranges:
        if end > start:
            fileio.will_need(fd, start, end - start)


def _examine(path: str, fd: int, st: os.stat_result, by_name: bool
             ) -> Steps[Examined | None]:
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino, fst.st_size) != (st.st_dev, st.st_ino, st.st_size):
        return None  # not the file the walk saw (replaced, or changing)
    size = fst.st_size
    buf = Buffers(fd, size)
    buf.load(0, HEAD)
    head = buf.spans[0][1][:8]
    # As formats.probe decides: the VHDX identifier, a VHD footer copy, or a trailing footer.
    fmt = "vhdx" if head == VHDX_SIGNATURE else "vhd" if head == VHD_COOKIE else None
    if fmt != "vhdx" and size > HEAD:
        yield [(size - TAIL, size), *(_bat_guess(buf.spans[0][1], size) if fmt else [])]
        buf.load(size - TAIL, size)
    if fmt is None:
        for back in (512, 511):
            if buf.read(8, size - back) == VHD_COOKIE:
                fmt = "vhd"
                break
        else:
            return None if by_name else (None, None)  # a named non-disk: the full path words it
    fig = yield from (_vhd(path, fst, buf) if fmt == "vhd" else _vhdx(path, fst, buf))
    return walk.Found(path, "disk", fmt=fmt), fig


def _bat_guess(head: bytes, size: int) -> list[tuple[int, int]]:
    """Where the footer copy and dynamic header in the first page say the BAT is (only a
    read hint: nothing is checked here, :func:`_vhd` checks it all)."""
    header = int.from_bytes(head[16:24], "big")
    if header + 32 > len(head) or head[header:header + 8] != V.HEADER_COOKIE:
        return []
    table = int.from_bytes(head[header + 16:header + 24], "big")
    entries = int.from_bytes(head[header + 28:header + 32], "big")
    return [(table, min(size, table + min(entries, 1 << 22) * 4))]


# --- VHD (as VhdLayer._load) ----------------------------------------------------------


def _vhd(path: str, st: os.stat_result, buf: Buffers) -> Steps[LayerFigures]:
    size = st.st_size
    choice = choose_footer(buf.read, size, lenient=False, path=path)
    if choice.warnings or choice.from_copy:
        raise Fallback("footer")
    f = choice.footer
    dtype = VHD_TYPES.get(f.disk_type)
    if dtype is None or f.current_size % V.SECTOR_SIZE or f.current_size <= 0:
        raise Fallback("footer values")
    if dtype is DiskType.FIXED:
        if f.current_size > choice.position:
            raise Fallback("truncated fixed disk")
        return _figures(path, "vhd", dtype, f.current_size, 0, st, _file_max(st, 0),
                        str(f.unique_id))
    warnings: list[str] = []
    h = read_header(buf.read, f.data_offset, size, lenient=False, path=path,
                    warnings=warnings)
    bs = h.block_size
    if not valid_block_size(bs):
        raise Fallback("block size")
    nblocks = -(-f.current_size // bs)
    bat_bytes = h.max_table_entries * 4
    if h.max_table_entries < nblocks or h.table_offset % V.SECTOR_SIZE \
            or h.table_offset < V.SECTOR_SIZE or h.table_offset + bat_bytes > size:
        raise Fallback("BAT bounds")
    differencing = dtype is DiskType.DIFFERENCING
    near = _near(h, nblocks * 4, differencing)
    yield [near]
    buf.load(*near)
    raw = buf.read(nblocks * 4, h.table_offset)
    off = f.data_offset
    meta = [(0, V.SECTOR_SIZE), (off, off + V.HEADER_SIZE),
            (h.table_offset, h.table_offset + bat_bytes)]
    link: ParentLink | None = None
    if differencing:
        scan = read_locators(h, path, size, buf.read)
        if scan.warnings:
            raise Fallback("locators")
        meta.extend(scan.ranges)
        link = vhd_parent_link(h, scan.candidates, path)
    used = used_indices(raw)
    entries = [int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in used]
    bitmap = V.bitmap_size(bs)
    if warnings or validate_slots(sorted(zip(entries, used, strict=True)), size, meta,
                                  bitmap_size=bitmap, slot_size=bitmap + bs):
        raise Fallback("BAT problems")
    # VhdLayer.unallocated_blocks() x bytes_per_new_block() (4 KiB-aligned block data).
    grow = (nblocks - len(used)) * align_up(bitmap + bs, DATA_ALIGNMENT)
    return _figures(path, "vhd", dtype, f.current_size, bs, st, _file_max(st, 0) + grow,
                    str(f.unique_id), link)


def _near(h: V.DynamicHeader, bat_len: int, differencing: bool) -> tuple[int, int]:
    """The BAT's range, with the locator data within :data:`NEAR` of it (Hyper-V and vhdlib
    put W2ku just before the BAT and W2ru just after it): read in one pread."""
    lo, hi = h.table_offset, h.table_offset + bat_len
    if differencing:
        for loc in h.locators:
            a, b = loc.data_offset, loc.data_offset + loc.data_length
            if loc.data_length and b > HEAD and a >= lo - NEAR and b <= hi + NEAR:
                lo, hi = min(lo, a), max(hi, b)
    return lo, hi


# --- VHDX (as VhdxReader._load) -------------------------------------------------------


def _vhdx(path: str, st: os.stat_result, buf: Buffers) -> Steps[LayerFigures]:
    size = st.st_size
    table_end = X.REGION_TABLE2_OFFSET + X.REGION_TABLE_SIZE
    if size < table_end:
        raise Fallback("too small")
    # Headers and region tables; the identifier's padding past its first page is not read.
    yield [(X.HEADER1_OFFSET, table_end)]
    buf.load(X.HEADER1_OFFSET, table_end)
    head = buf.spans[0][1] + bytes(X.HEADER1_OFFSET - HEAD) + buf.spans[-1][1]
    X.FileIdentifier.parse(head)
    warnings: list[str] = []
    headers = HeaderPair.load(head, file_size=size, lenient=False, path=path, problems=[],
                              warnings=warnings)
    h = headers.current
    if h.log_guid != X.ZERO_GUID and h.log_length != 0:
        raise Fallback("log")  # the full path decides whether it replays
    regions = RegionTables.load(head, h, file_size=size, lenient=False, path=path,
                                problems=[], warnings=warnings)
    mr, br = regions.metadata, regions.bat
    table = (mr.file_offset, mr.file_offset + min(mr.length, X.METADATA_TABLE_SIZE + ITEMS))
    yield [table]
    buf.load(*table)
    md = read_metadata(buf.at, mr, path=path)
    fp = md.file_parameters
    bs = fp.block_size
    ratio = X.chunk_ratio(bs, md.logical_sector_size)
    count = X.bat_entry_count(md.virtual_size, bs, md.logical_sector_size, fp.has_parent)
    if count * 8 > br.length or warnings:
        raise Fallback("BAT region")
    yield [(br.file_offset, br.file_offset + count * 8)]
    bat = VhdxBat.parse(buf.read(count * 8, br.file_offset), block_size=bs,
                        virtual_size=md.virtual_size, chunk_ratio=ratio, path=path)
    dtype = DiskType.DIFFERENCING if fp.has_parent else DiskType.DYNAMIC
    if not fp.has_parent and fp.leave_blocks_allocated:
        states = {bat.payload_state(i) for i in range(bat.data_blocks)}
        if states == {X.PAYLOAD_BLOCK_FULLY_PRESENT}:
            dtype = DiskType.FIXED
    # VhdxReader.never_written_bytes: padding of the header area and both regions.
    bat_used = align_up(bat.count * 8, 4096)
    spans = [(0, X.MiB), (mr.file_offset, mr.file_offset + mr.length),
             (br.file_offset + bat_used, br.file_offset + br.length)]
    never = sum(hole_bytes(buf.fd, a, b) for a, b in spans)
    most = _file_max(st, never)
    link: ParentLink | None = None
    if dtype is not DiskType.FIXED:
        most += bat.unallocated() * bs
    if dtype is DiskType.DIFFERENCING:
        # A 1 MiB sector bitmap per chunk still to allocate (MS-VHDX 2.5.1.2).
        states_b = bat.bitmap_states()
        most += (len(states_b) - states_b.count(X.SB_BLOCK_PRESENT)) * X.MiB
        if md.parent_locator is not None:
            link = parent_link(md.parent_locator, path)
    return _figures(path, "vhdx", dtype, md.virtual_size, bs, st, most,
                    str(h.data_write_guid), link)


# --- figures (as layers.figures_of) ---------------------------------------------------


def _file_max(st: os.stat_result, never_written: int) -> int:
    """Layer.max_bytes without the blocks: the file in whole volume blocks, less the
    padding no writer fills, or what it occupies now if more."""
    fs_block = st.st_blksize or 4096
    return max(-(-st.st_size // fs_block) * fs_block - never_written, st.st_blocks * 512)


def _figures(path: str, fmt: str, dtype: DiskType, virtual: int, block: int,
             st: os.stat_result, most: int, link_id: str,
             link: ParentLink | None = None) -> LayerFigures:
    fig = LayerFigures(
        path=os.path.abspath(path), format=fmt, type=dtype.value, virtual_size=virtual,
        block_size=block, file_size=st.st_size, allocated_bytes=st.st_blocks * 512,
        max_bytes=most, device=st.st_dev, inode=st.st_ino, nlink=st.st_nlink,
        mtime=st.st_mtime, link_id=link_id)
    if link is not None:
        attach_link(fig, link)
    return fig


__all__ = ["Buffers", "Fallback", "examine", "examine_all", "full"]
