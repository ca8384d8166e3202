"""Sizes a non-resident attribute claims are bounded by its run list, and no loop runs
longer than the runs map (libfsntfs "MFT attribute"; ntfs-3g ntfs_attr_map_whole_runlist).
Volumes from mkntfs/ntfscp, patched by hand; each damaged one is kept whole, quickly."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from tests.vhdlib.volume.test_ntfs import _first_lcn, _kept, _record_offset, build
from tests.vhdlib.volume.timelimit import within
from vhdlib.volume.ntfs import record as r

LIMIT = 10.0  # seconds of CPU time: a clean scan of these volumes takes well under one


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build(tmp_path_factory.mktemp("ntfs-bounds"), 4096).read_bytes()


def _copy(clean: bytes, tmp_path: Path) -> Path:
    image = tmp_path / "ntfs.img"
    image.write_bytes(clean)
    return image


def attr_offset(image: Path, number: int, atype: int) -> tuple[int, int]:
    """(byte offset in the image, length) of record ``number``'s attribute ``atype``."""
    at, size = _record_offset(image, number)
    raw = guests.peek(image, at, size)
    pos = struct.unpack_from("<H", raw, 0x14)[0]
    while True:
        t, length = struct.unpack_from("<II", raw, pos)
        assert t != r.AT_END, f"record {number} has no attribute {atype:#x}"
        if t == atype:
            return at + pos, length
        pos += length


def _patch_sizes(image: Path, at: int, offset: int, *sizes: int) -> None:
    """Write the size fields from ``offset`` (0x28 allocated, 0x30 data, 0x38 initialized)
    of the non-resident attribute header at ``at``, away from fixup positions."""
    assert (at + offset) % 512 < 510 - 8 * len(sizes)
    guests.patch(image, at + offset, struct.pack(f"<{len(sizes)}Q", *sizes))


@pytest.mark.parametrize(("allocated", "data"), [
    (1 << 60, 1 << 60),  # the audit's case: the scan looped 2^48 times over index blocks
    (1 << 40, 1 << 12),  # allocation far beyond the runs, data within them
    (None, None),  # allocation one cluster more than the runs map
])
def test_root_index_allocation_larger_than_its_runs_is_kept(
        clean: bytes, tmp_path: Path, allocated: int | None, data: int | None) -> None:
    image = _copy(clean, tmp_path)
    at, _ = attr_offset(image, 5, r.AT_INDEX_ALLOCATION)
    if allocated is None:
        (allocated,) = struct.unpack_from("<Q", guests.peek(image, at + 0x28, 8))
        allocated += 4096
        data = allocated
    _patch_sizes(image, at, 0x28, allocated, data)
    with within(LIMIT):
        reason = _kept(image)
    assert reason.startswith("attribute 0xa0 of record 5: sizes")
    assert reason.endswith("disagree with its runs (4096 bytes)")


def test_root_index_bitmap_shorter_than_its_blocks_is_kept(clean: bytes, tmp_path: Path) -> None:
    """A $BITMAP with no bit for an index block would leave the block unread (and a
    hiberfil.sys it lists unseen)."""
    image = _copy(clean, tmp_path)
    at, _ = attr_offset(image, 5, r.AT_BITMAP_ATTR)
    assert guests.peek(image, at + 8, 1) == b"\x00"  # resident, as mkntfs writes it
    guests.patch(image, at + 0x10, struct.pack("<I", 0))  # value length
    assert "bitmap does not cover its" in _kept(image)


@pytest.mark.parametrize("size", [0, 8, 19, 1000])
def test_logfile_smaller_than_two_restart_pages_is_kept(clean: bytes, tmp_path: Path,
                                                        size: int) -> None:
    """The audit's case: 8 bytes starting "RSTR" raised struct.error (exit 70) where the
    header's page size was decoded from bytes the log does not have."""
    image = _copy(clean, tmp_path)
    lcn, cluster = _first_lcn(image, 2)
    at, _ = attr_offset(image, 2, r.AT_DATA)
    mirror = _first_lcn(image, 1)[0] * cluster - _record_offset(image, 0)[0]
    for base in (at, at + mirror):  # record 2 is mirrored in $MFTMirr
        _patch_sizes(image, base, 0x30, size, size)
    guests.patch(image, lcn * cluster, b"RSTR")
    with within(LIMIT):
        assert _kept(image) == f"$LogFile of {size} bytes is smaller than its two restart pages"
