"""Checksums of both formats: the VHD ones'-complement sum and VHDX CRC-32C (Castagnoli)."""

from __future__ import annotations

try:  # The C implementation is ~1000x faster; the pure-Python one is the fallback.
    import crc32c as _crc32c_mod

    def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
        """CRC-32C of ``data`` (MS-VHDX 2.2.2: headers, region tables, log entries)."""
        return int(_crc32c_mod.crc32c(data, value))
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _TABLE = []
    for _i in range(256):
        _c = _i
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
        """CRC-32C of ``data`` (pure-Python fallback)."""
        crc = value ^ 0xFFFFFFFF
        for b in bytes(data):
            crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def vhd_checksum(data: bytes | bytearray | memoryview, skip: tuple[int, int] | None = None) -> int:
    """VHD checksum: ones' complement of the byte sum (VHD spec, "Checksum" field).

    ``skip`` is the ``(start, end)`` of the checksum field itself, counted as zeros.
    """
    total = sum(bytes(data))
    if skip is not None:
        total -= sum(bytes(data[skip[0]:skip[1]]))
    return (~total) & 0xFFFFFFFF
