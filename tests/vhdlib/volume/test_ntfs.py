"""NTFS allocation maps against ntfs-3g's own reading of $Bitmap, and every keep case."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.errors import VolumeStructureError
from vhdlib.volume.ntfs import record as r
from vhdlib.volume.ntfs.boot import BootSector
from vhdlib.volume.ntfs.mft import Mft
from vhdlib.volume.source import Window

MiB = guests.MiB


def build(tmp_path: Path, cluster: int | None = None, size: int = 48 * MiB,
          *extra: str, stale: bool = True, files: dict[str, bytes] | None = None) -> Path:
    """A quick-formatted volume over stale bytes holding two files."""
    image = tmp_path / "ntfs.img"
    if stale:
        guests.stale(image, size)
    else:
        image.write_bytes(b"")
        with open(image, "r+b") as f:
            f.truncate(size)
    guests.mkntfs(image, cluster, *extra)
    src = guests.files(tmp_path / "src", {"a": 3 * MiB + 77, "b": 700_000})
    guests.ntfscp(image, src / "a", "a.bin")
    guests.ntfscp(image, src / "b", "b.bin")
    for name, data in (files or {}).items():
        path = tmp_path / "src" / name
        path.write_bytes(data)
        guests.ntfscp(image, path, name)
    return image


def _part(image: Path):
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    return part


@pytest.mark.parametrize(("cluster", "size", "extra", "stale"), [
    (512, 48 * MiB, (), True),
    (1024, 48 * MiB, (), True),
    (4096, 48 * MiB, (), True),
    (4096, 48 * MiB, ("-s", "4096"), True),
    (65536, 64 * MiB, (), True),
    (1024 * 1024, 320 * MiB, (), False),
    (2 * 1024 * 1024, 1024 * MiB, (), False),
], ids=["512", "1k", "4k", "4k-sector4k", "64k", "1m", "2m"])
def test_free_ranges_equal_ntfs3g_bitmap(tmp_path: Path, cluster: int, size: int,
                                         extra: tuple[str, ...], stale: bool) -> None:
    image = build(tmp_path, cluster, size, *extra, stale=stale)
    part = _part(image)
    assert part.kept is None, part.kept
    assert (part.file_system, part.cluster_size) == ("ntfs", cluster)
    assert list(part.free_ranges) == guests.ntfs_free(image)
    assert part.free_bytes > size // 2


def _record_offset(image: Path, number: int) -> tuple[int, int]:
    """(byte offset, size) of an MFT record in the image (records 0-15 are contiguous)."""
    boot = BootSector.parse(guests.peek(image, 0, 512))
    return boot.mft_lcn * boot.cluster_size + number * boot.mft_record_size, boot.mft_record_size


def _attr_value_offset(image: Path, number: int, atype: int) -> int:
    """Byte offset in the image of the resident value of attribute ``atype``."""
    at, size = _record_offset(image, number)
    raw = guests.peek(image, at, size)
    pos = struct.unpack_from("<H", raw, 0x14)[0]
    while True:
        t, length = struct.unpack_from("<II", raw, pos)
        assert t != r.AT_END
        if t == atype:
            return at + pos + struct.unpack_from("<H", raw, pos + 0x14)[0]
        pos += length


def _kept(image: Path) -> str:
    part = _part(image)
    assert part.free_ranges == ()
    assert part.kept is not None
    return part.kept


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One clean volume (no keep reason), copied by the tests that damage one thing."""
    image = build(tmp_path_factory.mktemp("ntfs-clean"))
    assert _part(image).kept is None
    return image.read_bytes()


def _copy(clean: bytes, tmp_path: Path) -> Path:
    image = tmp_path / "ntfs.img"
    image.write_bytes(clean)
    return image


def _set_volume_flags(image: Path, flags: int) -> None:
    flags_at = _attr_value_offset(image, 3, r.AT_VOLUME_INFORMATION) + 0x0A
    assert flags_at % 512 < 510  # not a fixup position
    guests.patch(image, flags_at, struct.pack("<H", flags))
    # Windows writes records 0-3 to $MFTMirr as well.
    boot = BootSector.parse(guests.peek(image, 0, 512))
    mft_at, _ = _record_offset(image, 0)
    mirror_at = boot.mftmirr_lcn * boot.cluster_size + flags_at - mft_at
    guests.patch(image, mirror_at, struct.pack("<H", flags))


def test_dirty_volume_is_kept(clean: bytes, tmp_path: Path) -> None:
    image = _copy(clean, tmp_path)
    _set_volume_flags(image, 0x0001)
    # ntfs-3g agrees: without --force it refuses a volume "scheduled for check".
    assert "Volume Flags: 0x0001" in guests.run("ntfsinfo", "-f", "-m", image).decode()
    assert "dirty" in _kept(image)


@pytest.mark.parametrize(("flags", "reason"), [
    (0x0001, "dirty"),
    (0x0002, "$LogFile resize pending"),
    (0x0010, "USN journal deletion underway"),
    (0x0020, "object id repair pending"),
    (0x4000, "chkdsk underway"),
    (0x0000, None),  # the same patch with no flag: the flag alone keeps the volume
    (0x8000, None),  # "modified by chkdsk": a finished repair, nothing pending
], ids=["dirty", "resize-log", "usn-delete", "objid-repair", "chkdsk", "none", "modified"])
def test_each_volume_flag_alone(clean: bytes, tmp_path: Path, flags: int,
                                reason: str | None) -> None:
    image = _copy(clean, tmp_path)
    _set_volume_flags(image, flags)
    assert f"Volume Flags: {flags:#06x}" in guests.run("ntfsinfo", "-f", "-m", image).decode()
    if reason is None:
        assert _part(image).kept is None
    else:
        assert f"NTFS volume {reason} ($Volume flags {flags:#06x})" == _kept(image)


def _first_lcn(image: Path, number: int) -> tuple[int, int]:
    """(first LCN, cluster size) of a system file's $DATA, as vhdlib maps it."""
    with FileDisk(image) as disk:
        win = Window(disk, 0, disk.virtual_size)
        mft = Mft(win, BootSector.parse(win.read(0, 512)))
        lcn = mft.data_segments(mft.record(number), "system file").runs[0].lcn
        assert lcn is not None
        return lcn, mft.boot.cluster_size


def _restart_page(size: int, in_use: int, flags: int, lsn: int) -> bytes:
    """A restart page as ntfs-3g's logfile.h lays it out, with its update sequence."""
    page = bytearray(size)
    usa_count = size // 512 + 1
    struct.pack_into("<4sHHQIIHhh", page, 0, b"RSTR", 0x1E, usa_count, 0, size, 4096, 0x30,
                     1, 1)
    struct.pack_into("<QHHHH", page, 0x30, lsn, 1, 0xFFFF, in_use, flags)
    usn = b"\x01\x00"
    page[0x1E:0x20] = usn
    for i in range(size // 512):
        end = (i + 1) * 512
        page[0x20 + 2 * i:0x22 + 2 * i] = page[end - 2:end]
        page[end - 2:end] = usn
    return bytes(page)


@pytest.mark.parametrize(("in_use", "flags", "kept"), [
    (0, 0, True),  # a client in use, not clean: Windows would replay
    (0, 0x0002, False),  # RESTART_VOLUME_IS_CLEAN
    (0xFFFF, 0, False),  # no client
])
def test_logfile_state(tmp_path: Path, in_use: int, flags: int, kept: bool) -> None:
    image = build(tmp_path)
    lcn, cluster = _first_lcn(image, 2)
    at = lcn * cluster
    for n, lsn in ((0, 100), (1, 50)):
        guests.patch(image, at + n * 4096, _restart_page(4096, in_use, flags, lsn))
    part = _part(image)
    if kept:
        assert part.kept is not None and "$LogFile not clean" in part.kept
    else:
        assert part.kept is None, part.kept


@pytest.mark.parametrize(("newest_clean", "kept"), [(True, False), (False, True)])
def test_logfile_newest_restart_area_decides(clean: bytes, tmp_path: Path, newest_clean: bool,
                                             kept: bool) -> None:
    """Two restart pages disagree: the one with the higher current LSN is the state."""
    image = _copy(clean, tmp_path)
    lcn, cluster = _first_lcn(image, 2)
    clean_page = {"in_use": 0, "flags": 0x0002}
    dirty_page = {"in_use": 0, "flags": 0}
    pages = (clean_page, dirty_page) if newest_clean else (dirty_page, clean_page)
    for n, (page, lsn) in enumerate(zip(pages, (200, 100), strict=True)):
        guests.patch(image, lcn * cluster + n * 4096, _restart_page(4096, lsn=lsn, **page))
    part = _part(image)
    assert (part.kept is not None) is kept, part.kept
    if kept:
        assert part.kept is not None and "$LogFile not clean" in part.kept


def test_logfile_left_by_chkdsk_is_kept(clean: bytes, tmp_path: Path) -> None:
    """A restart page whose magic is "CHKD": chkdsk stopped half way (ntfs-3g logfile.h)."""
    image = _copy(clean, tmp_path)
    lcn, cluster = _first_lcn(image, 2)
    for n, lsn in ((0, 100), (1, 50)):
        page = bytearray(_restart_page(4096, 0xFFFF, 0x0002, lsn))
        page[:4] = b"CHKD"
        guests.patch(image, lcn * cluster + n * 4096, bytes(page))
    assert "unfinished chkdsk" in _kept(image)


@pytest.mark.parametrize(("head", "kept"), [
    (b"HIBR", True), (b"hibr", True), (b"RSTR", True), (b"wake", False), (b"\0\0\0\0", False),
    (b"ABCD", True),
])
def test_hiberfil_in_use_is_kept(tmp_path: Path, head: bytes, kept: bool) -> None:
    image = build(tmp_path, files={"hiberfil.sys": head + bytes(8188)})
    part = _part(image)
    if kept:
        assert part.kept is not None and "hiberfil.sys" in part.kept
    else:
        assert part.kept is None, part.kept


def test_bitlocker_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path)
    guests.patch(image, 3, b"-FVE-FS-")
    assert "BitLocker" in _kept(image)


def test_mft_mirror_mismatch_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path)
    boot = BootSector.parse(guests.peek(image, 0, 512))
    at = boot.mftmirr_lcn * boot.cluster_size + 0x100  # inside record 0's attributes
    guests.patch(image, at, bytes([guests.peek(image, at, 1)[0] ^ 0xFF]))
    assert "$MFTMirr" in _kept(image)


def test_bitmap_freeing_a_system_cluster_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path)
    lcn, cluster = _first_lcn(image, 6)
    at = lcn * cluster
    guests.patch(image, at, bytes([guests.peek(image, at, 1)[0] & 0xFE]))  # cluster 0
    assert "free" in _kept(image)


def test_volume_larger_than_partition_is_kept(tmp_path: Path) -> None:
    image = build(tmp_path)
    with open(image, "r+b") as f:
        f.truncate(32 * MiB)
    assert "exceeds" in _kept(image)


def test_torn_record_is_kept(tmp_path: Path) -> None:
    """A fixup mismatch (a torn write) in $Bitmap's record."""
    image = build(tmp_path)
    at, _ = _record_offset(image, 6)
    guests.patch(image, at + 510, b"\xAB\xCD")
    assert "update sequence" in _kept(image)


@pytest.mark.parametrize(("offset", "value"), [
    (0x0B, b"\x00\x03"),  # 768 bytes per sector
    (0x0D, b"\x03"),  # 3 sectors per cluster
    (0x0D, b"\xEB"),  # 2^21 sectors per cluster
    (0x40, b"\x00"),  # zero record size
    (0x30, b"\xff" * 8),  # $MFT beyond the volume
])
def test_bad_boot_sector_is_a_structure_error(tmp_path: Path, offset: int,
                                              value: bytes) -> None:
    raw = bytearray(guests.peek(build(tmp_path), 0, 512))
    raw[offset:offset + len(value)] = value
    with pytest.raises(VolumeStructureError):
        BootSector.parse(bytes(raw))


def test_bitmap_freeing_a_file_cluster_is_kept(tmp_path: Path) -> None:
    """$Bitmap damaged over a user file's clusters (ntfsfix -n still calls it clean):
    believing it would drop the file's data, so the volume is kept whole."""
    image = build(tmp_path)
    with FileDisk(image) as disk:
        win = Window(disk, 0, disk.virtual_size)
        mft = Mft(win, BootSector.parse(win.read(0, 512)))
        lcns = [run.lcn for n in range(24, mft.count)
                if r.marked_in_use(mft.raw(n))
                for a in mft.record(n).attributes for run in a.runs if run.lcn]
        cluster = mft.boot.cluster_size
    assert lcns  # a.bin and b.bin are non-resident
    bm_lcn, _ = _first_lcn(image, 6)
    byte = bm_lcn * cluster + lcns[0] // 8 + 1  # a whole byte inside the file's first run
    assert guests.peek(image, byte, 1) == b"\xff"
    guests.patch(image, byte, b"\x00")
    assert "free" in _kept(image) and "MFT record" in _kept(image)
