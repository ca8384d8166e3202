"""An independent reading of VHD and VHDX BATs (struct only, no vhdlib), for checking the
scanner's growth figures: what a layer occupies once every block is allocated."""

from __future__ import annotations

import os
import struct
import uuid

MiB = 1 << 20
FS_BLOCK = 4096

# MS-VHDX 2.2.3.2 region and 3.5 metadata item GUIDs.
BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _base(path: str) -> int:
    st = os.stat(path)
    return max(_align(st.st_size, FS_BLOCK), st.st_blocks * 512)


def vhd_max_bytes(path: str) -> int:
    """VHD spec: footer (big-endian), dynamic header, BAT of u32 sector offsets."""
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-512:]
    assert footer[:8] == b"conectix"
    disk_type = struct.unpack(">I", footer[60:64])[0]
    if disk_type == 2:
        return _base(path)
    data_offset = struct.unpack(">Q", footer[16:24])[0]
    virtual = struct.unpack(">Q", footer[48:56])[0]
    header = data[data_offset:data_offset + 1024]
    assert header[:8] == b"cxsparse"
    table_offset = struct.unpack(">Q", header[16:24])[0]
    block_size = struct.unpack(">I", header[32:36])[0]
    blocks = -(-virtual // block_size)
    bat = struct.unpack(f">{blocks}I", data[table_offset:table_offset + 4 * blocks])
    unused = sum(1 for e in bat if e == 0xFFFFFFFF)
    bitmap = _align(block_size // 512 // 8, 512)
    # Slots laid out so each block's data is 4 KiB aligned (Hyper-V's stride).
    return _base(path) + unused * _align(bitmap + block_size, 4096)


def vhdx_max_bytes(path: str) -> int:
    """MS-VHDX: region table at 192 KiB, metadata items, BAT of u64 (state in bits 0-2)."""
    with open(path, "rb") as f:
        f.seek(192 * 1024)
        rt = f.read(64 * 1024)
        assert rt[:4] == b"regi"
        count = struct.unpack("<I", rt[8:12])[0]
        regions = {}
        for i in range(count):
            e = rt[16 + 32 * i: 48 + 32 * i]
            regions[uuid.UUID(bytes_le=e[:16])] = struct.unpack("<QI", e[16:28])
        moff, mlen = regions[METADATA_REGION]
        f.seek(moff)
        meta = f.read(mlen)
        assert meta[:8] == b"metadata"
        items = {}
        for i in range(struct.unpack("<H", meta[10:12])[0]):
            e = meta[32 + 32 * i: 64 + 32 * i]
            off, length = struct.unpack("<II", e[16:24])
            items[uuid.UUID(bytes_le=e[:16])] = meta[off:off + length]
        block_size, flags = struct.unpack("<II", items[FILE_PARAMETERS][:8])
        virtual = struct.unpack("<Q", items[VIRTUAL_DISK_SIZE][:8])[0]
        sector = struct.unpack("<I", items[LOGICAL_SECTOR_SIZE][:4])[0]
        has_parent = bool(flags & 2)
        ratio = (1 << 23) * sector // block_size
        blocks = -(-virtual // block_size)
        boff, blen = regions[BAT_REGION]
        f.seek(boff)
        raw = f.read(blen)
    entries = blocks + (blocks - 1) // ratio if not has_parent else \
        -(-blocks // ratio) * (ratio + 1)
    # The 1 MiB padding of the header section, metadata region and the BAT region past
    # its entries is never written: holes there are not growth.
    padding = (_holes(path, 0, MiB) + _holes(path, moff, moff + mlen)
               + _holes(path, boff + _align(entries * 8, 4096), boff + blen))
    states = [e & 7 for e in struct.unpack(f"<{blen // 8}Q", raw)]
    missing = sum(1 for i in range(blocks) if states[i + i // ratio] not in (6, 7))
    extra = 0
    if has_parent:
        chunks = -(-blocks // ratio)
        extra = sum(1 for c in range(chunks) if states[c * (ratio + 1) + ratio] != 6) * MiB
    base = max(_align(os.stat(path).st_size, FS_BLOCK) - padding, os.stat(path).st_blocks * 512)
    return base + missing * block_size + extra


def _holes(path: str, start: int, end: int) -> int:
    """Hole bytes in [start, end), by walking the file's data extents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        covered = 0
        pos = 0
        size = os.fstat(fd).st_size
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            covered += max(0, min(h, end) - max(d, start))
            pos = h
        return (min(end, size) - start) - covered if end > start else 0
    finally:
        os.close(fd)


def max_bytes(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(8)
    return vhdx_max_bytes(path) if head == b"vhdxfile" else vhd_max_bytes(path)
