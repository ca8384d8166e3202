"""CHS per the VHD spec appendix, checked against the real images' footers."""

from __future__ import annotations

import pytest

from vhdlib.geometry import Geometry, chs_exact_sizes, chs_for_size


@pytest.mark.parametrize(("size", "chs"), [
    (10485760, (301, 4, 17)),          # dissect fixed.vhd / dynamic.vhd
    (4194304, (120, 4, 17)),           # dfvfs fat-differential.vhd
    (4212736, (121, 4, 17)),           # dfvfs ext2.vhd
    (104448, (3, 4, 17)),              # dfvfs image.vhd
    (136365211648, (65278, 16, 255)),  # qemu-iotests 127 GiB images
    (2040 << 30, (65535, 16, 255)),    # the maximum: pinned
    (512, (0, 4, 17)),                 # smaller than one track
])
def test_chs_for_size(size: int, chs: tuple[int, int, int]) -> None:
    assert chs_for_size(size) == Geometry(*chs)


def test_chs_size_never_exceeds_size() -> None:
    for mib in (1, 7, 17, 100, 1000, 50000):
        assert chs_for_size(mib << 20).size <= mib << 20


def test_chs_exact_sizes() -> None:
    sizes = chs_exact_sizes(20 << 20)
    assert 17825792 in sizes
    assert all(chs_for_size(s).size == s for s in sizes)


def test_geometry_dict() -> None:
    assert Geometry(1, 2, 3).to_dict() == {"cylinders": 1, "heads": 2, "sectors": 3}
    assert Geometry(1, 2, 3).size == 6 * 512
