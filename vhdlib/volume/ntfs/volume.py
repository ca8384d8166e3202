"""The free clusters of an NTFS volume, read from ``$Bitmap`` (MFT record 6).

Safety (issue 13, "when in doubt, keep"): refused when BitLocker-encrypted, when
``$Volume`` is dirty or mid-repair, when ``$LogFile`` is not clean, when ``hiberfil.sys``
holds a hibernation image (hibernation or Fast Startup), when ``$MFTMirr`` disagrees with
``$MFT``, or when ``$Bitmap`` marks any cluster of the system files free.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from vhdlib.volume.errors import UnsupportedVolumeError, VolumeStateRefusal, VolumeStructureError
from vhdlib.volume.fsmap import FsMap
from vhdlib.volume.ntfs import index
from vhdlib.volume.ntfs import record as r
from vhdlib.volume.ntfs.boot import OEM_BITLOCKER, OEM_NTFS, BootSector
from vhdlib.volume.ntfs.logfile import check_clean
from vhdlib.volume.ntfs.mft import Mft, read_runs
from vhdlib.volume.ranges import Range, clear_runs, first_clear
from vhdlib.volume.source import Window

MFT, MFTMIRR, LOGFILE, VOLUME, ROOT, BITMAP, BOOT = 0, 1, 2, 3, 5, 6, 7

# libfsntfs "Volume information attribute" flags (ntfs-3g layout.h VOLUME_*)
VOLUME_IS_DIRTY = 0x0001
VOLUME_RESIZE_LOG_FILE = 0x0002
VOLUME_DELETE_USN_UNDERWAY = 0x0010
VOLUME_REPAIR_OBJECT_ID = 0x0020
VOLUME_CHKDSK_UNDERWAY = 0x4000
_UNSAFE_FLAGS = {
    VOLUME_IS_DIRTY: "dirty",
    VOLUME_RESIZE_LOG_FILE: "$LogFile resize pending",
    VOLUME_DELETE_USN_UNDERWAY: "USN journal deletion underway",
    VOLUME_REPAIR_OBJECT_ID: "object id repair pending",
    VOLUME_CHKDSK_UNDERWAY: "chkdsk underway",
}
#: First bytes of hiberfil.sys that mean "no image to resume" (libyal libhibr notes).
_HIBER_RESUMED = (b"wake",)
_HIBER_IMAGE = (b"hibr", b"rstr")


def probe(win: Window) -> bool:
    """Cheap test: the NTFS or BitLocker OEM identifier at byte 3."""
    return win.length >= 512 and win.read(3, 8) in (OEM_NTFS, OEM_BITLOCKER)


def _check_volume_flags(mft: Mft) -> None:
    rec = mft.record(VOLUME)
    info = rec.find(r.AT_VOLUME_INFORMATION)
    if len(info) != 1 or not info[0].resident or len(info[0].value) < 12:
        raise VolumeStructureError("$Volume has no $VOLUME_INFORMATION")
    major, minor, flags = struct.unpack_from("<BBH", info[0].value, 8)
    if (major, minor) not in ((1, 2), (3, 0), (3, 1)):
        raise UnsupportedVolumeError(f"NTFS version {major}.{minor}")
    for bit, what in _UNSAFE_FLAGS.items():
        if flags & bit:
            raise VolumeStateRefusal(f"NTFS volume {what} ($Volume flags {flags:#06x})")


def _check_mirror(mft: Mft) -> None:
    """ntfs-3g refuses to mount when $MFTMirr's records differ from $MFT's (mft.c)."""
    mirror = mft.data_segments(mft.record(MFTMIRR), "$MFTMirr")
    size = mft.boot.mft_record_size
    count = min(4, mirror.data_size // size)
    if count < 1:
        raise VolumeStructureError("$MFTMirr holds no record")
    for n in range(count):
        raw = read_runs(mft.win, mirror.runs, mft.boot.cluster_size, n * size, size)
        copy = r.apply_fixups(raw, b"FILE", f"$MFTMirr record {n}")
        used = struct.unpack_from("<I", copy, 0x18)[0]
        if copy[:used] != mft.fixed(n)[:used]:
            raise VolumeStructureError(f"$MFTMirr record {n} differs from $MFT")


def _check_hibernation(mft: Mft) -> None:
    """Find hiberfil.sys in the root directory and refuse when it holds an image."""
    root = mft.record(ROOT)
    roots = root.find(r.AT_INDEX_ROOT, "$I30")
    if len(roots) != 1 or not roots[0].resident:
        raise VolumeStructureError("root directory has no $I30 index root")
    found = [n for n, fn in index.root_entries(roots[0].value)
             if fn.name.lower() == "hiberfil.sys"]
    alloc = mft.attribute(root, r.AT_INDEX_ALLOCATION, "$I30")
    if alloc is not None:
        bs = _index_block_size(roots[0].value)
        # An index is never sparse (a sparse block reads as zeros, no INDX); with the sizes
        # checked against the runs when gathered, the block count is bounded by the volume.
        if any(run.lcn is None for run in alloc.runs):
            raise VolumeStructureError("root directory's $I30 index allocation is sparse")
        blocks = alloc.data_size // bs
        bitmap = mft.attribute(root, r.AT_BITMAP_ATTR, "$I30")
        # libfsntfs "Index": the $BITMAP has one bit per index block; a short one would
        # leave blocks unread (a hiberfil.sys unseen).
        need = -(-blocks // 8)
        if bitmap is None or bitmap.data_size < need:
            raise VolumeStructureError("root directory's $I30 bitmap does not cover its "
                                       f"{blocks} index blocks")
        used = mft.read_value(bitmap, need)
        for i in _set_bits(used, blocks):  # a free block's stale entries are not listed
            raw = read_runs(mft.win, alloc.runs, mft.boot.cluster_size, i * bs, bs)
            found += [n for n, fn in index.block_entries(raw, i)
                      if fn.name.lower() == "hiberfil.sys"]
    for number in found:
        rec = mft.record(number)
        if not rec.in_use:
            continue
        data = mft.attribute(rec, r.AT_DATA, "")
        if data is None or data.initialized_size == 0:
            continue
        head = mft.read_value(data, 512)
        if head[:4].lower() in _HIBER_IMAGE:
            raise VolumeStateRefusal("Windows is hibernated or Fast Startup holds the "
                                     "volume (hiberfil.sys in use)")
        if head[:4].lower() not in _HIBER_RESUMED and any(head):
            raise VolumeStateRefusal("hiberfil.sys holds an unknown header")


def _set_bits(bitmap: bytes, count: int) -> Iterator[int]:
    """The set bits among the first ``count`` of ``bitmap``; zero bytes are skipped whole."""
    for byte_at, byte in enumerate(bitmap):
        if byte:
            for bit in range(8):
                if byte >> bit & 1 and byte_at * 8 + bit < count:
                    yield byte_at * 8 + bit


def _index_block_size(value: bytes) -> int:
    (size,) = struct.unpack_from("<I", value, 8)
    if size < 512 or size > 65536 or size & (size - 1):
        raise VolumeStructureError(f"index block size {size}")
    return size


def _require_used(bitmap: bytes, runs: list[Range], what: str) -> None:
    """Every cluster of ``runs`` must be marked used in ``bitmap`` (bits past its end read
    as free): :func:`~vhdlib.volume.ranges.first_clear` tests a run's bits at once (a
    file of gigabytes has millions of clusters)."""
    for lcn, length in runs:
        clear = first_clear(bitmap, lcn, length)
        if clear is not None:
            raise VolumeStructureError(f"$Bitmap marks cluster {clear} of {what} free")


def _require_files_used(mft: Mft, bitmap: bytes) -> None:
    """Every cluster any in-use file record maps (its non-resident attributes' runs) must
    be marked used: a bitmap that calls a file's cluster free is damaged, and believing it
    would drop the file's data. Records never used or free are skipped; an in-use record
    that does not parse keeps the volume whole. Each record is read once and parsed
    without the $MFT's cache (a walk over millions of files would keep them all)."""
    for number in range(mft.count):
        raw = mft.raw(number)
        if not r.marked_in_use(raw):
            continue
        rec = r.MftRecord.parse(raw, number, mft.boot.total_clusters)
        for attr in rec.attributes:
            runs = [(run.lcn, run.length) for run in attr.runs if run.lcn is not None]
            if runs:
                _require_used(bitmap, runs, f"MFT record {number}")


def read(win: Window) -> FsMap:
    """The allocation map of the NTFS volume in ``win``; raises one of
    :data:`vhdlib.volume.errors.KEEP_ERRORS` when it must be kept whole."""
    boot = BootSector.parse(win.read(0, 512))
    if boot.volume_bytes > win.length:
        raise VolumeStructureError(
            f"NTFS volume of {boot.volume_bytes} bytes exceeds its partition "
            f"({win.length} bytes)")
    mft = Mft(win, boot)
    _check_mirror(mft)
    _check_volume_flags(mft)
    log = mft.data_segments(mft.record(LOGFILE), "$LogFile")
    check_clean(lambda off, n: mft.read_value(log, n, off), log.data_size)
    _check_hibernation(mft)
    bm_attr = mft.data_segments(mft.record(BITMAP), "$Bitmap")
    need = -(-boot.total_clusters // 8)
    if bm_attr.initialized_size < need:
        raise VolumeStructureError(
            f"$Bitmap holds {bm_attr.initialized_size} bytes, the volume needs {need}")
    bitmap = mft.read_value(bm_attr, need)
    system = [(0, 1)]  # the boot sector's cluster
    for number, what in ((MFT, "$MFT"), (MFTMIRR, "$MFTMirr"), (LOGFILE, "$LogFile"),
                         (BITMAP, "$Bitmap"), (BOOT, "$Boot")):
        seg = mft.data_segments(mft.record(number), what)
        system += [(run.lcn, run.length) for run in seg.runs if run.lcn is not None]
    _require_used(bitmap, system, "a system file")
    _require_files_used(mft, bitmap)
    cs = boot.cluster_size
    free = tuple((lcn * cs, (lcn + n) * cs) for lcn, n in clear_runs(bitmap, boot.total_clusters))
    return FsMap("ntfs", cs, free)
