"""Corrupt structures never make a used cluster free: hypothesis mutates boot sectors, MFT
records (run lists, attribute lists, fixups), bitmaps, superblocks, descriptors and
partition tables of disks the real tools built, and the scan must keep the partition whole
or report only bytes the tools call free. The scan never raises and never hangs: each
example has a CPU-time bound (hypothesis runs without a deadline), and a reason naming a
"damaged structure" (a decode no check bounded, caught at the scan's boundary) fails."""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.vhdlib.volume import guests
from tests.vhdlib.volume.guests import PatchedDisk
from tests.vhdlib.volume.test_ntfs_bounds import attr_offset
from tests.vhdlib.volume.timelimit import within
from vhdlib.volume import VolumeMap
from vhdlib.volume import scan as scan_disk
from vhdlib.volume.ext4.checksums import crc16, crc32c_raw
from vhdlib.volume.ext4.superblock import Superblock
from vhdlib.volume.ntfs.boot import BootSector
from vhdlib.volume.ranges import clear_runs

MiB = guests.MiB
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


#: Byte changes drawn independently of the image, then mapped into a region, so a saved
#: example replays the same way for every parametrized image.
CHANGES = st.dictionaries(st.integers(0, 1 << 30), st.integers(0, 255), min_size=1, max_size=6)


#: CPU seconds per example: a clean scan of these small volumes takes a fraction of one.
EXAMPLE_LIMIT = 10.0


def scan(disk: PatchedDisk) -> VolumeMap:
    """The scan, bounded in CPU time, and never kept for an unchecked decode."""
    with within(EXAMPLE_LIMIT):
        vmap = scan_disk(disk)
    for part in vmap.partitions:
        assert part.kept is None or "damaged structure" not in part.kept, part.kept
    return vmap


#: NTFS regions are lists of spans: bits 20+ of a change's key pick the span, the low 20
#: bits the byte in it, so an explicit example can patch two copies of one record.
SPAN_BITS = 20


def _key(span: int, offset: int) -> int:
    return span << SPAN_BITS | offset


def _place_spans(changes: dict[int, int], spans: list[tuple[int, int]]) -> dict[int, int]:
    out = {}
    for k, v in changes.items():
        lo, hi = spans[(k >> SPAN_BITS) % len(spans)]
        out[lo + (k & ((1 << SPAN_BITS) - 1)) % (hi - lo)] = v
    return out


#: The audits' cases (issue 13): the root's $I30 allocation claiming 2^60 bytes (the scan
#: looped over 2^48 index blocks), and a $LogFile of 8 bytes starting "RSTR" in both
#: copies of its record (struct.error).
ROOT_ALLOCATION_2_60 = {_key(0, 0x28 + i): b
                        for i, b in enumerate(struct.pack("<QQ", 1 << 60, 1 << 60))}
LOGFILE_8_BYTES = {_key(s, 0x30 + i): b for s in (0, 1)
                   for i, b in enumerate(struct.pack("<QQ", 8, 8))} | {
    _key(2, i): c for i, c in enumerate(b"RSTR")}


def _place(changes: dict[int, int], lo: int, hi: int) -> dict[int, int]:
    return {lo + k % (hi - lo): v for k, v in changes.items()}


def _within(ranges: list[tuple[int, int]], truth: list[tuple[int, int]]) -> bool:
    return all(any(s <= a and b <= e for s, e in truth) for a, b in ranges)


@pytest.fixture(scope="module")
def ntfs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("fuzz-ntfs")
    image = tmp / "ntfs.img"
    guests.stale(image, 12 * MiB)
    guests.mkntfs(image, 1024)
    src = guests.files(tmp / "src", {"a": 300_000, "b": 1_000_000})
    guests.ntfscp(image, src / "a", "a")
    guests.ntfscp(image, src / "b", "b")
    # A leaked cluster: marked used in $Bitmap, mapped by no file (what chkdsk reports as
    # "marked allocated but not in use"). Freeing its bit loses nothing.
    cluster = 1024
    (bm_lcn, _), *_ = guests.ntfs_runs(image, 6)
    s, e = max(guests.ntfs_free(image), key=lambda r: r[1] - r[0])
    leaked = (s + e) // 2 // cluster
    at = bm_lcn * cluster + leaked // 8
    guests.patch(image, at, bytes([guests.peek(image, at, 1)[0] | 1 << leaked % 8]))
    unmapped = guests.ntfs_unmapped_used(image)
    assert unmapped == [(leaked * cluster, (leaked + 1) * cluster)]
    base = image.read_bytes()
    boot = BootSector.parse(base[:512])
    mft = boot.mft_lcn * boot.cluster_size
    mirror = boot.mftmirr_lcn * boot.cluster_size - mft
    # The root directory's index attributes ($INDEX_ROOT, $INDEX_ALLOCATION, $BITMAP, in
    # that order), the $INDEX_ALLOCATION's header first so the example's offsets hold.
    alloc, alloc_len = attr_offset(image, 5, 0xA0)
    iroot, _ = attr_offset(image, 5, 0x90)
    bitmap, bitmap_len = attr_offset(image, 5, 0xB0)
    assert iroot < alloc < bitmap and (alloc + 0x28) % 512 < 494
    # $LogFile: its $DATA header in $MFT and in $MFTMirr, and its first restart page.
    log, log_len = attr_offset(image, 2, 0x80)
    assert (log + 0x30) % 512 < 494
    log_lcn, _ = guests.ntfs_runs(image, 2)[0]
    log_data = log_lcn * boot.cluster_size
    return {"base": base, "truth": guests.ntfs_free(image), "boot": boot,
            "unmapped": unmapped, "leaked_bit": (at, leaked % 8),
            "regions": {"boot": [(0, 512)], "mft": [(mft, mft + 12 * boot.mft_record_size)],
                        "root_index": [(alloc, alloc + alloc_len), (iroot, alloc),
                                       (bitmap, bitmap + bitmap_len)],
                        "logfile": [(log, log + log_len), (log + mirror, log + mirror + log_len),
                                    (log_data, log_data + 512)]}}


@pytest.mark.parametrize("region", ["boot", "mft", "root_index", "logfile"])
@SETTINGS
@given(changes=CHANGES)
@example(changes=ROOT_ALLOCATION_2_60)
@example(changes=LOGFILE_8_BYTES)
def test_ntfs_corruption_never_frees_a_used_cluster(ntfs: dict, region: str,
                                                    changes: dict[int, int]) -> None:
    patches = _place_spans(changes, ntfs["regions"][region])
    vmap = scan(PatchedDisk(ntfs["base"], patches))
    (part,) = vmap.partitions
    assert part.kept is not None or _within(list(part.free_ranges), ntfs["truth"])


def _bitmap_location(ntfs: dict) -> int:
    """Byte offset of $Bitmap's data: the first cluster after the MFT zone mkntfs uses is
    not assumed; the clean scan's own reading is compared against ntfs-3g's instead."""
    from vhdlib.volume.ntfs.mft import Mft
    from vhdlib.volume.source import Window
    disk = PatchedDisk(ntfs["base"], {})
    mft = Mft(Window(disk, 0, disk.virtual_size), ntfs["boot"])
    lcn = mft.data_segments(mft.record(6), "$Bitmap").runs[0].lcn
    assert lcn is not None
    return lcn * ntfs["boot"].cluster_size


@SETTINGS
@given(data=st.data())
def test_ntfs_bitmap_corruption_reports_the_bitmap_or_keeps(ntfs: dict,
                                                            data: st.DataObject) -> None:
    """$Bitmap has no checksum: a flipped bit is believed, unless it frees a cluster some
    in-use file maps (any file: system or user). What is reported free is exactly what the
    damaged bitmap marks free, and only clusters ntfs-3g calls free on the clean volume or
    clusters no file maps (a used bit over one may clear: nothing is lost; a free bit may
    set: less is dropped)."""
    at = _bitmap_location(ntfs)
    boot = ntfs["boot"]
    size = -(-boot.total_clusters // 8)
    changes = data.draw(CHANGES)
    if data.draw(st.booleans()):  # often enough, the leaked cluster's byte too
        leak_at, bit = ntfs["leaked_bit"]
        changes[leak_at - at] = ntfs["base"][leak_at] & ~(1 << bit)
    patches = _place(changes, at, at + size)
    disk = PatchedDisk(ntfs["base"], patches)
    (part,) = scan(disk).partitions
    if part.kept is None:
        bitmap = disk.read(at, size)
        cs = boot.cluster_size
        assert list(part.free_ranges) == [
            (c * cs, (c + n) * cs) for c, n in clear_runs(bitmap, boot.total_clusters)]
        assert _within(list(part.free_ranges), guests.merge(ntfs["truth"] + ntfs["unmapped"]))


def test_ntfs_leaked_cluster_freed_is_believed(ntfs: dict) -> None:
    """The one bitmap change that frees a used cluster and still scans: a cluster no file
    maps (the exception the fuzz above allows is real, and the only one)."""
    leak_at, bit = ntfs["leaked_bit"]
    disk = PatchedDisk(ntfs["base"], {leak_at: ntfs["base"][leak_at] & ~(1 << bit)})
    (part,) = scan(disk).partitions
    assert part.kept is None, part.kept
    (leaked,) = ntfs["unmapped"]
    assert _within([leaked], list(part.free_ranges))
    assert not _within(list(part.free_ranges), ntfs["truth"])


@pytest.fixture(scope="module", params=["metadata_csum", "gdt_csum", "ext2"])
def ext(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    options = {"metadata_csum": ["-t", "ext4", "-b", "1024", "-g", "2048"],
               "gdt_csum": ["-t", "ext4", "-b", "1024", "-g", "2048", "-O",
                            "^metadata_csum,uninit_bg"],
               "ext2": ["-t", "ext2", "-b", "1024", "-g", "2048"]}[request.param]
    tmp = tmp_path_factory.mktemp("fuzz-ext")
    image = tmp / "ext.img"
    guests.stale(image, 12 * MiB)
    src = guests.files(tmp / "src", {"a": 2 * MiB, "b": 900_000, "c": 3000})
    with open(src / "frag", "wb") as f:  # 4 KiB every 64 KiB: an extent tree of depth 1
        for i in range(12):
            f.seek(i * 65536)
            f.write(os.urandom(4096))
    (tmp / "xattr").write_bytes(os.urandom(700))
    guests.mke2fs(image, *options, src=src)
    guests.debugfs_w(image, "rm b", f"ea_set -f {tmp / 'xattr'} c user.big")
    listing = guests.run("dumpe2fs", image).decode()
    # Bitmaps the groups use (a BLOCK_UNINIT group's bitmap block is not read, like the
    # kernel does not read it).
    bitmaps = {int(b) * 1024: int(g) for g, head, b in re.findall(
        r"^Group (\d+):(.*)\n(?:.*\n)*?\s+Block bitmap at (\d+)", listing, re.M)
        if "BLOCK_UNINIT" not in head}
    assert bitmaps
    # Group 0's inode table blocks holding the inodes in use (256 bytes each): the reserved
    # ones, lost+found and the files (b's inode is free).
    table = int(re.search(r"Inode table at (\d+)", listing).group(1))  # type: ignore[union-attr]
    files = {name: guests.inode_blocks(image, name) for name in ("a", "frag", "c")}
    in_use = set(range(1, 12)) | {number for number, _ in files.values()}
    assert max(in_use) <= 16
    # The blocks mapping the files: indirect blocks, the extent tree's leaf, the xattr one.
    tree = [b for _, blocks in files.values() for kind, run in blocks.items()
            if kind != "data" for b in run]
    assert tree
    return {"base": image.read_bytes(), "truth": guests.dumpe2fs_free(image),
            "name": request.param,
            # superblock, descriptor table (block 2), every block bitmap, inodes, trees
            "regions": {"superblock": [(1024, 2048)], "descriptors": [(2048, 3072)],
                        "bitmaps": [(b, b + 256) for b in bitmaps],
                        "inodes": [(table * 1024, (table + 4) * 1024)],
                        "tree": [(b * 1024, (b + 1) * 1024) for b in tree]},
            "bitmap_group": bitmaps, "in_use": in_use}


@pytest.mark.parametrize("region", ["superblock", "descriptors", "bitmaps", "inodes", "tree"])
@SETTINGS
@given(data=st.data())
def test_ext_corruption_never_frees_a_used_block(ext: dict, region: str,
                                                 data: st.DataObject) -> None:
    """Whatever is damaged, nothing the tools call used is reported free. A bitmap bit
    cleared over a used block is caught even without a bitmap checksum, when the group's
    free count was kept: every used block is fixed metadata or owned by an in-use inode."""
    spans = ext["regions"][region]
    lo, hi = spans[data.draw(st.integers(0, 1 << 16)) % len(spans)]
    patches = _place(data.draw(CHANGES), lo, hi)
    patches = {k: v for k, v in patches.items() if ext["base"][k] != v}
    vmap = scan(PatchedDisk(ext["base"], patches))
    (part,) = vmap.partitions
    if region == "bitmaps" and patches and ext["name"] == "metadata_csum":
        assert part.kept is not None  # the bitmap checksum catches every change
    if region == "inodes" and patches and ext["name"] == "metadata_csum":
        assert part.kept is not None or all(  # only inodes not in use may change
            (at - lo) // 256 + 1 not in ext["in_use"] for at in patches)
    assert part.kept is not None or _within(list(part.free_ranges), ext["truth"])


def _resigned_descriptor(base: bytes, group: int, freed: int, bitmap: bytes) -> dict[int, int]:
    """Patches raising ``group``'s free block count by ``freed`` and signing its
    descriptor (and, with metadata_csum, its new bitmap) again as the feature wants."""
    sb = Superblock.parse(base[1024:2048])
    size = sb.descriptor_size
    at = 2048 + group * size  # 1 KiB blocks: the table is block 2
    desc = bytearray(base[at:at + size])
    struct.pack_into("<H", desc, 0xC, struct.unpack_from("<H", desc, 0xC)[0] + freed)
    group_le = struct.pack("<I", group)
    if sb.metadata_csum:
        crc = crc32c_raw(sb.csum_seed, bitmap[:sb.clusters_per_group // 8])
        struct.pack_into("<H", desc, 0x18, crc & 0xFFFF)
        if size >= 0x3A:
            struct.pack_into("<H", desc, 0x38, crc >> 16)
        desc[0x1E:0x20] = b"\0\0"
        struct.pack_into("<H", desc, 0x1E, crc32c_raw(sb.csum_seed, group_le + desc) & 0xFFFF)
    elif sb.gdt_csum:
        crc = crc16(crc16(crc16(0xFFFF, sb.uuid), group_le), bytes(desc[:0x1E]))
        struct.pack_into("<H", desc, 0x1E, crc16(crc, bytes(desc[0x20:])))
    return {at + i: desc[i] for i in range(size) if desc[i] != base[at + i]}


@SETTINGS
@given(data=st.data())
def test_ext_bitmap_clear_with_count_kept_is_caught(ext: dict, data: st.DataObject) -> None:
    """Bits cleared over used blocks with the group's free count raised to match (what
    random byte changes rarely hit): still never reported free."""
    base = ext["base"]
    groups = sorted(ext["bitmap_group"].items())
    at, group = groups[data.draw(st.integers(0, 1 << 16)) % len(groups)]
    bits = [i for i in range(2048) if base[at + i // 8] >> (i % 8) & 1
            and (1 + group * 2048 + i) * 1024 < len(base)]
    chosen = data.draw(st.lists(st.sampled_from(bits), min_size=1, max_size=3, unique=True))
    bitmap = bytearray(base[at:at + 256])
    for i in chosen:
        bitmap[i // 8] &= ~(1 << i % 8)
    patches = {at + i: bitmap[i] for i in range(256) if bitmap[i] != base[at + i]}
    patches |= _resigned_descriptor(base, group, len(chosen), bytes(bitmap))
    vmap = scan(PatchedDisk(base, patches))
    (part,) = vmap.partitions
    assert part.kept is not None or _within(list(part.free_ranges), ext["truth"])


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("fuzz-gpt")
    disk = tmp / "disk.img"
    guests.stale(disk, 16 * MiB)
    guests.run("sgdisk", "-o", "-n", "1:2048:+8M", "-t", "1:8300", disk)
    ext = tmp / "ext.img"
    guests.stale(ext, 8 * MiB)
    guests.mke2fs(ext, "-t", "ext4")
    guests.place(disk, MiB, ext)
    return {"base": disk.read_bytes(),
            "truth": [(MiB + s, MiB + e) for s, e in guests.dumpe2fs_free(ext)]}


@SETTINGS
@given(data=st.data())
def test_partition_table_corruption_never_frees_outside(gpt: dict, data: st.DataObject) -> None:
    patches = _place(data.draw(CHANGES), 0, 34 * 512)
    vmap = scan(PatchedDisk(gpt["base"], patches))
    assert _within(vmap.free_ranges, gpt["truth"])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=8192))
def test_random_disks_are_kept_or_read(blob: bytes) -> None:
    """Any bytes at all: the scan returns (no exception escapes, no hang)."""
    disk = PatchedDisk(blob.ljust(4096, b"\0"), {})
    vmap = scan(disk)
    assert vmap.free_ranges == [] or vmap.partitions
