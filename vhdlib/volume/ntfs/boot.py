"""The NTFS boot sector (libyal libfsntfs "New Technologies File System (NTFS)" format
notes, section "Volume header"; flatcap's linux-ntfs "$Boot").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhdlib.volume.errors import VolumeStateRefusal, VolumeStructureError

OEM_NTFS = b"NTFS    "
OEM_BITLOCKER = b"-FVE-FS-"  # libbde "BitLocker Drive Encryption" notes, volume header
MIN_CLUSTER = 512
MAX_CLUSTER = 2 * 1024 * 1024  # Windows formats NTFS with clusters up to 2 MiB

_BPB = struct.Struct("<3s8sHBH")


def _size_field(value: int, cluster_size: int) -> int:
    """libfsntfs "Volume header": a positive value counts clusters; a negative one
    (signed byte) is log2 of the size in bytes."""
    signed = value - 256 if value >= 128 else value
    if signed < 0:
        if not 8 <= -signed <= 31:
            raise VolumeStructureError(f"record size field {value:#x}")
        return 1 << -signed
    if signed == 0:
        raise VolumeStructureError("record size field is zero")
    return signed * cluster_size


@dataclass(frozen=True)
class BootSector:
    """Decoded NTFS volume header fields."""

    bytes_per_sector: int
    cluster_size: int
    total_sectors: int
    mft_lcn: int
    mftmirr_lcn: int
    mft_record_size: int
    index_record_size: int

    @classmethod
    def parse(cls, raw: bytes) -> BootSector:
        """Decode and bound-check the first sector of the volume."""
        if len(raw) < 512:
            raise VolumeStructureError("NTFS boot sector truncated")
        _jmp, oem, bps, spc_raw, _reserved = _BPB.unpack_from(raw)
        if oem == OEM_BITLOCKER:
            raise VolumeStateRefusal("BitLocker-encrypted volume (-FVE-FS-)")
        if oem != OEM_NTFS:
            raise VolumeStructureError("no NTFS OEM identifier")
        if raw[510:512] != b"\x55\xaa":
            raise VolumeStructureError("NTFS boot sector lacks the 0x55AA signature")
        if bps not in (256, 512, 1024, 2048, 4096):
            raise VolumeStructureError(f"NTFS bytes per sector {bps}")
        # libfsntfs: sectors per cluster > 0x80 (Windows 10 for 128 KiB+ clusters) is the
        # negative log2 of the count.
        spc = 1 << (256 - spc_raw) if spc_raw > 0x80 else spc_raw
        if spc == 0 or spc & (spc - 1):
            raise VolumeStructureError(f"NTFS sectors per cluster {spc_raw:#x}")
        cluster = spc * bps
        if not MIN_CLUSTER <= cluster <= MAX_CLUSTER:
            raise VolumeStructureError(f"NTFS cluster size {cluster}")
        total, mft, mirr = struct.unpack_from("<QQQ", raw, 0x28)
        rec = _size_field(raw[0x40], cluster)
        idx = _size_field(raw[0x44], cluster)
        if not 256 <= rec <= 65536 or rec % 512:
            raise VolumeStructureError(f"NTFS MFT record size {rec}")
        clusters = total * bps // cluster
        if total == 0 or mft >= clusters or mirr >= clusters:
            raise VolumeStructureError("NTFS $MFT or $MFTMirr beyond the volume")
        return cls(bps, cluster, total, mft, mirr, rec, idx)

    @property
    def volume_bytes(self) -> int:
        return self.total_sectors * self.bytes_per_sector

    @property
    def total_clusters(self) -> int:
        """Clusters the $Bitmap describes (ntfs-3g: nr_clusters = sectors / spc)."""
        return self.volume_bytes // self.cluster_size
