"""Guest disks built with tools nobody here wrote (e2fsprogs, ntfs-3g, gdisk, fdisk), and
their own view of free space (dumpe2fs, ntfscat -i 6), for the volume-layer tests."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import require_tool

MiB = 1024 * 1024


def run(*args: str | os.PathLike[str], input: bytes | None = None) -> bytes:
    """Run a tool; a failure shows its output."""
    require_tool(str(args[0]))
    proc = subprocess.run([str(a) for a in args], input=input, capture_output=True,
                          check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr.decode()}"
                             f"{proc.stdout.decode()}")
    return proc.stdout


def stale(path: Path, size: int, seed: int = 1) -> None:
    """A file of ``size`` bytes of non-zero junk, standing for deleted data in free space."""
    block = bytes((seed * 37 + i * 151) % 251 + 1 for i in range(4096)) * 256  # 1 MiB
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[:size % len(block)])


def files(folder: Path, sizes: dict[str, int]) -> Path:
    """A source tree of files with random content."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (folder / name).write_bytes(os.urandom(size))
    return folder


def mke2fs(path: Path, *options: str, src: Path | None = None, blocks: str = "") -> None:
    """mke2fs over whatever ``path`` holds (``-E nodiscard`` keeps the stale bytes)."""
    args = ["mke2fs", "-F", "-q", "-E", "nodiscard", *options]
    if src is not None:
        args += ["-d", str(src)]
    args.append(str(path))
    if blocks:
        args.append(blocks)
    run(*args)


def debugfs_w(path: Path, *requests: str) -> None:
    for request in requests:
        run("debugfs", "-w", "-R", request, path)


def inode_blocks(path: Path, name: str) -> tuple[int, dict[str, list[int]]]:
    """Inode number and blocks of ``name`` as ``debugfs stat`` lists them: "data", each
    kind of mapping block ("IND", "DIND", "TIND", "ETB0", "ETB1", ...) and "xattr" (File
    ACL)."""
    out = run("debugfs", "-R", f"stat {name}", path).decode()
    number = int(re.search(r"^Inode: (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    blocks: dict[str, list[int]] = {}
    acl = int(re.search(r"File ACL: (\d+)", out).group(1))  # type: ignore[union-attr]
    if acl:
        blocks["xattr"] = [acl]
    listing = re.search(r"^(?:BLOCKS|EXTENTS):\n(.*)$", out, re.M)
    for key, first, last in re.findall(r"\(([^)]*)\):(\d+)(?:-(\d+))?",
                                       listing.group(1) if listing else ""):
        kind = key if key[:1].isalpha() else "data"
        blocks.setdefault(kind, []).extend(range(int(first), int(last or first) + 1))
    return number, blocks


def free_block(path: Path, block: int) -> None:
    """Mark ``block`` free the way a damaged but consistent bitmap would: ``debugfs freeb``
    (which re-signs the bitmap with metadata_csum), then the group's free count raised to
    match with ``set_bg`` and the descriptor re-signed (e2fsprogs 1.47 freeb leaves the
    count alone, set_bg the checksum), in one debugfs session (bitmap checksums are
    written at its end), so that only the block's owner can tell the block is in use."""
    out = run("dumpe2fs", path).decode()
    first = int(re.search(r"^First block:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    per_group = int(re.search(r"^Blocks per group:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    group = (block - first) // per_group
    counts = re.findall(r"^Group \d+:.*\n(?:.*\n)*?\s+(\d+) free blocks,", out, re.M)
    script = (f"freeb {block}\nset_bg {group} free_blocks_count {int(counts[group]) + 1}\n"
              f"set_bg {group} checksum calc\n")
    run("debugfs", "-w", "-f", "-", path, input=script.encode())


def dumpe2fs_free(path: Path) -> list[tuple[int, int]]:
    """Free byte ranges of an ext2/3/4 image as dumpe2fs lists them ("Free blocks:")."""
    out = run("dumpe2fs", path).decode()
    bsize = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    cluster = re.search(r"^Cluster size:\s+(\d+)", out, re.M)
    # With bigalloc dumpe2fs prints each free cluster by its first block number.
    ratio = int(cluster.group(1)) // bsize if cluster else 1
    ranges = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for item in filter(None, (x.strip() for x in line.split(","))):
            lo, _, hi = item.partition("-")
            first, last = int(lo), int(hi or lo)
            ranges.append((first * bsize, (last + ratio) * bsize))
    return merge(ranges)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def mkntfs(path: Path, cluster: int | None = None, *extra: str) -> None:
    """A quick format (-Q) over whatever ``path`` holds."""
    args = ["mkntfs", "-Q", "-F", "-q"]
    if cluster:
        args += ["-c", str(cluster)]
    run(*args, *extra, path)


def ntfscp(path: Path, src: Path, dest: str) -> None:
    run("ntfscp", "-f", path, src, dest)


def ntfs_free(path: Path) -> list[tuple[int, int]]:
    """Free byte ranges from the $Bitmap as ntfs-3g reads it (``ntfscat -i 6``), with the
    cluster count from ``ntfsinfo -m``; decoded bit by bit, independently of vhdlib."""
    cluster, size = _ntfs_geometry(path)
    bitmap = run("ntfscat", "-i", "6", path)
    ranges = []
    for c in range(size):
        if not bitmap[c // 8] & (1 << (c % 8)):
            ranges.append((c * cluster, (c + 1) * cluster))
    return merge(ranges)


def _ntfs_geometry(path: Path) -> tuple[int, int]:
    """(cluster size, clusters) as ``ntfsinfo -m`` reports them."""
    info = run("ntfsinfo", "-m", path).decode()
    cluster = int(re.search(r"Cluster Size: (\d+)", info).group(1))  # type: ignore[union-attr]
    size = int(re.search(r"Volume Size in Clusters: (\d+)", info).group(1))  # type: ignore[union-attr]
    return cluster, size


def ntfs_runs(path: Path, inode: int) -> list[tuple[int, int]]:
    """``(lcn, length)`` of every non-sparse run of every non-resident attribute of an
    inode, as ``ntfsinfo -v`` prints them."""
    info = run("ntfsinfo", "-i", str(inode), "-v", path).decode()
    runs = []
    for block in re.findall(r"Runlist:\tVCN\t\tLCN\t\tLength\n((?:\t\t\t.*\n)+)", info):
        for lcn, length in re.findall(r"^\t\t\t0x[0-9a-f]+\t\t(0x[0-9a-f]+|<HOLE>)\t\t"
                                      r"(0x[0-9a-f]+)", block, re.M):
            if lcn != "<HOLE>":
                runs.append((int(lcn, 16), int(length, 16)))
    return runs


def ntfs_unmapped_used(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of clusters ``$Bitmap`` marks used that no file maps, by ntfs-3g's
    reading: the files come from ``ntfscluster -c`` over the whole volume (it walks the
    MFT), their runs from ``ntfsinfo -v``."""
    cluster, size = _ntfs_geometry(path)
    listing = run("ntfscluster", "-f", "-c", f"0-{size - 1}", path).decode()
    mapped = bytearray(size)
    for inode in sorted({int(n) for n in re.findall(r"^Inode (\d+) ", listing, re.M)}):
        for lcn, length in ntfs_runs(path, inode):
            mapped[lcn:lcn + length] = b"\1" * length
    free = bytearray(size)
    for s, e in ntfs_free(path):
        free[s // cluster:e // cluster] = b"\1" * (e // cluster - s // cluster)
    return merge([(c * cluster, (c + 1) * cluster) for c in range(size)
                  if not free[c] and not mapped[c]])


def place(disk: Path, offset: int, volume: Path) -> None:
    """Copy a volume image into a disk image at ``offset`` (as dd conv=notrunc would)."""
    with open(disk, "r+b") as out, open(volume, "rb") as src:
        out.seek(offset)
        while chunk := src.read(MiB):
            out.write(chunk)


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def peek(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class PatchedDisk:
    """An image in memory with a few bytes changed (a Readable for vhdlib.volume.scan)."""

    def __init__(self, base: bytes, patches: dict[int, int]) -> None:
        self.base, self.patches = base, patches
        self.virtual_size = len(base)

    def read(self, offset: int, size: int) -> bytes:
        data = bytearray(self.base[offset:offset + size])
        for at, value in self.patches.items():
            if offset <= at < offset + size:
                data[at - offset] = value
        return bytes(data)
