"""NTFS data runs (libfsntfs "Data runs"; flatcap's linux-ntfs "Data Runs").

Each run starts with a header byte: low nibble = bytes of the run length, high nibble =
bytes of the signed LCN delta from the previous run; a zero delta size is a sparse run; a
zero header ends the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStructureError


@dataclass(frozen=True)
class Run:
    """``length`` clusters from ``vcn``; ``lcn`` None for a sparse run."""

    vcn: int
    lcn: int | None
    length: int


def decode(raw: bytes, first_vcn: int, total_clusters: int) -> list[Run]:
    """Decode a run list; each run must lie inside the volume's ``total_clusters``."""
    runs: list[Run] = []
    pos, vcn, lcn = 0, first_vcn, 0
    while True:
        if pos >= len(raw):
            raise VolumeStructureError("NTFS run list runs past its attribute")
        header = raw[pos]
        if header == 0:
            return runs
        len_size, off_size = header & 0x0F, header >> 4
        if not 1 <= len_size <= 8 or off_size > 8 or pos + 1 + len_size + off_size > len(raw):
            raise VolumeStructureError(f"NTFS run header {header:#04x}")
        length = int.from_bytes(raw[pos + 1:pos + 1 + len_size], "little", signed=True)
        if length <= 0:
            raise VolumeStructureError(f"NTFS run of {length} clusters")
        start = pos + 1 + len_size
        if off_size == 0:
            runs.append(Run(vcn, None, length))
        else:
            lcn += int.from_bytes(raw[start:start + off_size], "little", signed=True)
            if lcn < 0 or lcn + length > total_clusters:
                raise VolumeStructureError(
                    f"NTFS run at LCN {lcn}+{length} outside the volume "
                    f"({total_clusters} clusters)")
            runs.append(Run(vcn, lcn, length))
        vcn += length
        pos = start + off_size
