"""$Bitmap split across two MFT records through an $ATTRIBUTE_LIST (resident, or
non-resident in a cluster of its own as Windows writes a long one), the way Windows stores
a fragmented system file: built by rewriting a mkntfs volume, checked first with ntfs-3g
(which must read the same $Bitmap through the list) and then with vhdlib."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.ntfs import record as r
from vhdlib.volume.ntfs.boot import BootSector

MiB = guests.MiB
EXT = 12  # a reserved record mkntfs leaves for system use


def _attrs(fixed: bytes) -> list[bytes]:
    pos = struct.unpack_from("<H", fixed, 0x14)[0]
    out = []
    while struct.unpack_from("<I", fixed, pos)[0] != r.AT_END:
        length = struct.unpack_from("<I", fixed, pos + 4)[0]
        out.append(fixed[pos:pos + length])
        pos += length
    return out


def _runs(runs: list[tuple[int | None, int]]) -> bytes:
    """Encode (lcn, length) runs (lcn None: sparse); each list starts from LCN 0."""
    out, prev = bytearray(), 0
    for lcn, length in runs:
        ln = length.to_bytes(4, "little", signed=True)
        if lcn is None:
            out += bytes([0x04]) + ln
            continue
        off = (lcn - prev).to_bytes(4, "little", signed=True)
        out += bytes([0x44]) + ln + off
        prev = lcn
    return bytes(out + b"\0").ljust(-(-(len(out) + 1) // 8) * 8, b"\0")


def _nonresident(attr_id: int, first: int, last: int, sizes: tuple[int, int, int],
                 runs: bytes, atype: int = r.AT_DATA) -> bytes:
    head = struct.pack("<IIBBHHHQQHH4xQQQ", atype, 0x40 + len(runs), 1, 0, 0x40, 0,
                       attr_id, first, last, 0x40, 0, *sizes)
    return head + runs


def _record(number: int, base: int, attrs: list[bytes], size: int, seq: int,
            next_id: int) -> bytes:
    """A FILE record (NTFS 3.1 header, update sequence at 0x30) with fixups applied."""
    body = b"".join(attrs) + struct.pack("<II", r.AT_END, 0)
    used = 0x38 + len(body)
    rec = bytearray(size)
    struct.pack_into("<4sHHQHHHHIIQHHI", rec, 0, b"FILE", 0x30, size // 512 + 1, 0, seq, 1,
                     0x38, 1, used, size, base, next_id, 0, number)
    rec[0x38:used] = body
    usn = b"\x02\x00"
    rec[0x30:0x32] = usn
    for i in range(size // 512):
        end = (i + 1) * 512
        rec[0x32 + 2 * i:0x34 + 2 * i] = rec[end - 2:end]
        rec[end - 2:end] = usn
    return bytes(rec)


def _list_entry(atype: int, vcn: int, record: int, seq: int, attr_id: int) -> bytes:
    return struct.pack("<IHBBQQH6x", atype, 32, 0, 0x1A, vcn, record | seq << 48, attr_id)


def _build(tmp_path: Path, sparse_tail: bool = False, nonresident_list: bool = False) -> Path:
    """mkntfs's $Bitmap split in two segments (record 6 and extension record 12) through an
    attribute list, resident in record 6 or non-resident in a free cluster (then marked
    used in $Bitmap, as Windows allocates it)."""
    image = tmp_path / "ntfs.img"
    guests.stale(image, 48 * MiB)
    guests.mkntfs(image, 512)
    src = guests.files(tmp_path / "src", {"a": 2 * MiB})
    guests.ntfscp(image, src / "a", "a")
    boot = BootSector.parse(guests.peek(image, 0, 512))
    size = boot.mft_record_size
    at6 = boot.mft_lcn * boot.cluster_size + 6 * size
    fixed6 = r.apply_fixups(guests.peek(image, at6, size), b"FILE", "record 6")
    seq6 = struct.unpack_from("<H", fixed6, 0x10)[0]
    rec6 = r.MftRecord.parse(guests.peek(image, at6, size), 6, boot.total_clusters)
    (data,) = rec6.find(r.AT_DATA)
    (run,) = data.runs  # mkntfs writes $Bitmap in one run
    assert run.lcn is not None and run.length > 4
    cut = run.length // 2
    keep = [a for a in _attrs(fixed6) if struct.unpack_from("<I", a, 0)[0] != r.AT_DATA]
    first = _nonresident(data.attr_id, 0, cut - 1,
                         (data.allocated_size, data.data_size, data.initialized_size),
                         _runs([(run.lcn, cut)]))
    second = _nonresident(0, cut, run.length - 1, (0, 0, 0), _runs(
        [(None if sparse_tail else run.lcn + cut, run.length - cut)]))
    entries = b"".join(
        [_list_entry(struct.unpack_from("<I", a, 0)[0], 0, 6, seq6,
                     struct.unpack_from("<H", a, 0x0E)[0]) for a in keep]
        + [_list_entry(r.AT_DATA, 0, 6, seq6, data.attr_id),
           _list_entry(r.AT_DATA, cut, EXT, 1, 0)])
    if not nonresident_list:
        alist = struct.pack("<IIBBHHHIH2x", r.AT_ATTRIBUTE_LIST, 0x18 + len(entries), 0, 0,
                            0x18, 0, 15, len(entries), 0x18) + entries
    else:
        cs = boot.cluster_size
        assert len(entries) <= cs
        s, e = max(guests.ntfs_free(image), key=lambda r: r[1] - r[0])
        list_lcn = (s + e) // 2 // cs
        guests.patch(image, list_lcn * cs, entries.ljust(cs, b"\0"))
        alist = _nonresident(15, 0, 0, (cs, len(entries), len(entries)),
                             _runs([(list_lcn, 1)]), atype=r.AT_ATTRIBUTE_LIST)
        bit_at = run.lcn * cs + list_lcn // 8  # $Bitmap's data, one run before the split
        guests.patch(image, bit_at, bytes([guests.peek(image, bit_at, 1)[0]
                                           | 1 << list_lcn % 8]))
    attrs = sorted([*keep, alist, first], key=lambda a: struct.unpack_from("<I", a, 0)[0])
    guests.patch(image, at6, _record(6, 0, attrs, size, seq6, 16))
    at12 = boot.mft_lcn * boot.cluster_size + EXT * size
    guests.patch(image, at12, _record(EXT, 6 | seq6 << 48, [second], size, 1, 1))
    return image


@pytest.fixture
def split_bitmap(tmp_path: Path) -> Path:
    return _build(tmp_path)


@pytest.fixture(scope="module")
def nonresident_list(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The split $Bitmap with its attribute list non-resident: ``(image, list LCN)``, the
    LCN as ntfs-3g reads it."""
    image = _build(tmp_path_factory.mktemp("ntfs-list"), nonresident_list=True)
    info = guests.run("ntfsinfo", "-i", "6", "-v", image).decode()
    section = info[info.index("Dumping attribute $ATTRIBUTE_LIST"):]
    section = section[:section.index("Dumping attribute", 10)]
    assert re.search(r"Resident:\s+No", section)
    (lcn,) = re.findall(r"^\t\t\t0x0\t\t(0x[0-9a-f]+)\t\t0x1$", section, re.M)
    return image, int(lcn, 16)


def test_ntfs3g_reads_a_nonresident_attribute_list(nonresident_list: tuple[Path, int]) -> None:
    image, lcn = nonresident_list
    boot = BootSector.parse(guests.peek(image, 0, 512))
    assert len(guests.run("ntfscat", "-i", "6", image)) >= boot.total_clusters // 8
    # ntfs-3g's reading of $Bitmap (through the list) has the list's cluster used.
    assert not any(s <= lcn * 512 < e for s, e in guests.ntfs_free(image))


def test_nonresident_attribute_list_free_ranges_equal_ntfs3g(
        nonresident_list: tuple[Path, int]) -> None:
    image, _ = nonresident_list
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is None, part.kept
    assert list(part.free_ranges) == guests.ntfs_free(image)


def test_nonresident_attribute_list_marked_free_is_kept(
        nonresident_list: tuple[Path, int], tmp_path: Path) -> None:
    """$Bitmap calling the list's own cluster free: damaged, so the volume is kept whole."""
    image, lcn = nonresident_list
    damaged = tmp_path / "ntfs.img"
    damaged.write_bytes(image.read_bytes())
    # $Bitmap's data: its first run that is not the list's (the list is dumped first).
    bm_lcn = next(start for start, _ in guests.ntfs_runs(damaged, 6) if start != lcn)
    at = bm_lcn * 512 + lcn // 8
    guests.patch(damaged, at, bytes([guests.peek(damaged, at, 1)[0] & ~(1 << lcn % 8)]))
    assert any(s <= lcn * 512 < e for s, e in guests.ntfs_free(damaged))  # ntfs-3g: free
    with FileDisk(damaged) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is not None and "MFT record 6" in part.kept


def test_sparse_bitmap_run_is_kept(tmp_path: Path) -> None:
    """A sparse run reads as zeros, which in $Bitmap would mean "free": refused."""
    image = _build(tmp_path, sparse_tail=True)
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is not None and "sparse" in part.kept


def test_ntfs3g_reads_the_split_bitmap(split_bitmap: Path) -> None:
    """The construction is valid by ntfs-3g's reading: the list is there, and $Bitmap's
    content through it is the whole bitmap."""
    info = guests.run("ntfsinfo", "-i", "6", "-v", split_bitmap).decode()
    assert "$ATTRIBUTE_LIST" in info
    bitmap = guests.run("ntfscat", "-i", "6", split_bitmap)
    boot = BootSector.parse(guests.peek(split_bitmap, 0, 512))
    assert len(bitmap) >= boot.total_clusters // 8  # both segments read
    # The bytes from the second segment's first VCN on are those its run points at.
    vcn, lcn = _second_segment(split_bitmap)
    tail = bitmap[vcn * boot.cluster_size:]
    assert tail == guests.peek(split_bitmap, lcn * boot.cluster_size, len(tail))


def _second_segment(image: Path) -> tuple[int, int]:
    """(first VCN, LCN) of the $DATA segment in the extension record."""
    boot = BootSector.parse(guests.peek(image, 0, 512))
    at = boot.mft_lcn * boot.cluster_size + EXT * boot.mft_record_size
    rec = r.MftRecord.parse(guests.peek(image, at, boot.mft_record_size), EXT,
                            boot.total_clusters)
    (seg,) = rec.find(r.AT_DATA)
    assert seg.runs[0].lcn is not None
    return seg.first_vcn, seg.runs[0].lcn


def test_split_bitmap_free_ranges_equal_ntfs3g(split_bitmap: Path) -> None:
    with FileDisk(split_bitmap) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is None, part.kept
    assert list(part.free_ranges) == guests.ntfs_free(split_bitmap)


def test_extension_record_of_another_file_is_kept(split_bitmap: Path) -> None:
    boot = BootSector.parse(guests.peek(split_bitmap, 0, 512))
    at12 = boot.mft_lcn * boot.cluster_size + EXT * boot.mft_record_size
    guests.patch(split_bitmap, at12 + 0x20, struct.pack("<Q", 7 | 1 << 48))  # base: $Boot
    with FileDisk(split_bitmap) as disk:
        (part,) = scan(disk).partitions
    assert part.kept is not None and "does not belong" in part.kept
