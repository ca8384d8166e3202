"""ext4 orphan processing, each sign of it alone, keeps the volume whole (issue 13: "ext4
with ... an orphan list being processed"; kernel Documentation/filesystems/ext4/super.rst:
``s_state`` EXT4_ORPHAN_FS 0x0004, ``s_last_orphan``, RO_COMPAT_ORPHAN_PRESENT).

The states are set by debugfs (e2fsprogs re-signs the superblock under metadata_csum), on
copies of one volume built once for the module.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from tests.vhdlib.volume import guests
from vhdlib.volume import FileDisk, scan
from vhdlib.volume.report import PartitionReport

MiB = guests.MiB
STATE_VALID, STATE_ORPHAN = 0x0001, 0x0004  # super.rst "s_state"


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ext4 volume over stale bytes with a file deleted: free space to reclaim."""
    tmp = tmp_path_factory.mktemp("ext4-state")
    image = tmp / "ext.img"
    guests.stale(image, 32 * MiB)
    src = guests.files(tmp / "src", {"keep": 2 * MiB + 7, "gone": 6 * MiB})
    guests.mke2fs(image, "-t", "ext4", src=src)
    guests.debugfs_w(image, "rm gone")
    return image


def _copy(volume: Path, tmp_path: Path, *requests: str) -> Path:
    image = tmp_path / "ext.img"
    shutil.copyfile(volume, image)
    guests.debugfs_w(image, *requests)
    return image


def _partition(image: Path) -> PartitionReport:
    with FileDisk(image) as disk:
        (part,) = scan(disk).partitions
    return part


def _superblock(image: Path) -> tuple[int, int, int]:
    """``(s_state, s_last_orphan, s_feature_ro_compat)`` as written (super.rst offsets)."""
    raw = guests.peek(image, 1024, 1024)
    return (struct.unpack_from("<H", raw, 0x3A)[0], struct.unpack_from("<I", raw, 0xE8)[0],
            struct.unpack_from("<I", raw, 0x64)[0])


def test_the_volume_at_rest_is_read(volume: Path, tmp_path: Path) -> None:
    # The control: the same volume, state set to VALID_FS alone, gives its free space.
    part = _partition(_copy(volume, tmp_path, f"ssv state {STATE_VALID}"))
    assert part.kept is None, part.kept
    assert part.free_bytes > 6 * MiB


def test_the_orphan_state_bit_alone_keeps_it_whole(volume: Path, tmp_path: Path) -> None:
    # Given s_state VALID_FS | ORPHAN_FS, no s_last_orphan, no ORPHAN_PRESENT
    image = _copy(volume, tmp_path, f"ssv state {STATE_VALID | STATE_ORPHAN}")
    state, last_orphan, ro_compat = _superblock(image)
    assert (state, last_orphan, ro_compat & 0x10000) == (STATE_VALID | STATE_ORPHAN, 0, 0)
    # Then the volume is kept whole, saying why
    part = _partition(image)
    assert part.kept is not None and "orphan" in part.kept
    assert part.free_ranges == ()


def test_the_orphan_present_feature_alone_keeps_it_whole(volume: Path,
                                                         tmp_path: Path) -> None:
    # RO_COMPAT_ORPHAN_PRESENT: the orphan file holds inodes still to process.
    image = _copy(volume, tmp_path, "feature orphan_present")
    state, last_orphan, ro_compat = _superblock(image)
    assert (state, last_orphan, ro_compat & 0x10000) == (STATE_VALID, 0, 0x10000)
    part = _partition(image)
    assert part.kept is not None and "orphan" in part.kept
    assert part.free_ranges == ()
