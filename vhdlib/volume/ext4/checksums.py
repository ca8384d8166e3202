"""The checksums of ext4 metadata (kernel Documentation/filesystems/ext4/checksums.rst).

The kernel's ``ext4_chksum`` is the raw CRC-32C register update, without the standard
initial and final inversion; :func:`crc32c_raw` maps it onto the standard function.
``uninit_bg`` (``gdt_csum``) descriptors use the kernel's ``crc16`` (polynomial 0x8005,
reflected, lib/crc16.c).
"""

from __future__ import annotations

from vhdlib.checksum import crc32c

_CRC16 = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0xA001 if _c & 1 else _c >> 1
    _CRC16.append(_c)


def crc32c_raw(seed: int, data: bytes | bytearray | memoryview) -> int:
    """``ext4_chksum(seed, data)``: CRC-32C register continued from ``seed``."""
    return crc32c(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def crc16(seed: int, data: bytes) -> int:
    """The kernel's ``crc16(seed, data)`` (lib/crc16.c)."""
    crc = seed
    for b in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ b) & 0xFF]
    return crc
