"""CHS geometry of a VHD (VHD spec, Appendix "CHS Calculation").

The footer stores a cylinder/head/sectors-per-track triple next to ``current_size``. Hyper-V,
Disk2vhd and libvhdi take the size from ``current_size``; qemu 7.2 takes it from CHS for
``vpc `` creator images and for fixed disks (MANIFEST section 7), so we report both.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTOR_SIZE = 512
#: The largest CHS the spec's algorithm yields: 65535 cylinders, 16 heads, 255 sectors.
MAX_CHS_SECTORS = 65535 * 16 * 255


@dataclass(frozen=True, slots=True)
class Geometry:
    """A cylinder / head / sectors-per-track triple."""

    cylinders: int
    heads: int
    sectors: int

    @property
    def total_sectors(self) -> int:
        return self.cylinders * self.heads * self.sectors

    @property
    def size(self) -> int:
        """Bytes addressed by this geometry (what qemu calls the CHS size)."""
        return self.total_sectors * SECTOR_SIZE

    def to_dict(self) -> dict[str, int]:
        return {"cylinders": self.cylinders, "heads": self.heads, "sectors": self.sectors}


def chs_for_size(size: int) -> Geometry:
    """The geometry the VHD spec's appendix algorithm assigns to ``size`` bytes.

    The result may address fewer bytes than ``size`` (rounding down): that is why the footer
    keeps ``current_size`` separately.
    """
    total = size // SECTOR_SIZE
    total = min(total, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        # Large disks: the maximum heads and sectors per track.
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return Geometry(cth // heads, heads, spt)


def chs_exact_sizes(limit: int) -> list[int]:
    """Sizes up to ``limit`` bytes, multiples of 1 MiB, whose CHS size equals the size.

    Useful to test against qemu 7.2, which uses the CHS size for fixed disks.
    """
    out = []
    for mib in range(1, limit // (1 << 20) + 1):
        size = mib << 20
        if chs_for_size(size).size == size:
            out.append(size)
    return out
