"""The real images in ``../shared/fixtures/real`` and what they must read as (MANIFEST.md).

Images are stored compressed and read-only; :func:`materialize` decompresses one into a
cache folder once per test session (never touching the originals).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("VHDMEND_FIXTURES", REPO.parent / "shared" / "fixtures" / "real"))
ZERO_127G = None  # marker: content all zero (too large to hash; checked through the map)


@dataclass(frozen=True)
class RealImage:
    """One image: where it is stored and what its virtual disk must hash to."""

    name: str              # path relative to FIXTURES, without the compression suffix
    stored: str            # path of the compressed file relative to FIXTURES
    virtual_size: int
    content_sha256: str | None   # None: all zero, checked through the map instead
    file_sha256: str
    lenient: bool = False  # has bad checksums (dfvfs hand edits)
    parent_absent: bool = False
    slow: bool = False
    #: Without log replay (what libvhdi returns): for dirty-log VHDX only.
    stale_sha256: str | None = None

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix


def _img(name: str, stored: str, size: int, content: str | None, file_sha: str,
         **kw: object) -> RealImage:
    return RealImage(name, stored, size, content, file_sha, **kw)  # type: ignore[arg-type]


IMAGES: list[RealImage] = [
    _img("qemu-iotests/virtualpc-dynamic.vhd", "qemu-iotests/virtualpc-dynamic.vhd.bz2",
         136365211648, None,
         "7675fd9bcc5f705f69e69a2c5e948d2a6522eaac044540a0782ae6097a458d6a"),
    _img("qemu-iotests/hyperv2012r2-dynamic.vhd", "qemu-iotests/hyperv2012r2-dynamic.vhd.bz2",
         136365211648, None,
         "1340b8a51517ba5f0112c47694f3c8a4a2bb4f9933336a18cf0392f3490c6674"),
    _img("qemu-iotests/d2v-zerofilled.vhd", "qemu-iotests/d2v-zerofilled.vhd.bz2", 263454720,
         "1ba076be94a8a64541c25aae8d5a5f8b0da758c3797af597e03acb431ff8d143",
         "af175e3c442b659e26b91029aacf2e62f2f7cf054404446db3185aafc38e079f", slow=True),
    _img("qemu-iotests/iotest-dynamic-1G.vhdx", "qemu-iotests/iotest-dynamic-1G.vhdx.bz2",
         1073741824, "d3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478",
         "a4fb24fa51fb4852d5a6bdc2b390a91b0a4e19b47696edc5a00c816067257402"),
    _img("qemu-iotests/iotest-dirtylog-10G-4M.vhdx",
         "qemu-iotests/iotest-dirtylog-10G-4M.vhdx.bz2", 10737418240,
         "179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f",
         "511daba998dba208ffc57a7814194d5dd3afb7c314731b904ff1682e3fb4951a", slow=True,
         stale_sha256="cc3d67a6bfea2ec826b5d0f77ac755bdbca18479ed13f64ee8b3d3f0d64859ca"),
    _img("qemu-iotests/test-disk2vhd.vhdx", "qemu-iotests/test-disk2vhd.vhdx.bz2", 268435456,
         "96d964042be9b58dda1725567abfb0cf9fd8380e2118754afa979c2ad445938a",
         "5b6721d4f26ef13d259c380a7327b794d1c6dd79e386737d77e8d88f43259812", slow=True),
    _img("dissect.hypervisor/fixed.vhd", "dissect.hypervisor/fixed.vhd.gz", 10485760,
         "459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463",
         "80220c551144b2a5d0b1186bd86c48440b0be1c7084550ae057b5b371ee2fdc8"),
    _img("dissect.hypervisor/dynamic.vhd", "dissect.hypervisor/dynamic.vhd.gz", 10485760,
         "ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784",
         "c480b888eb23659772bc4b669a79f1850430e74b4ae5011a68195446a49a67e1"),
    _img("dissect.hypervisor/fixed.vhdx", "dissect.hypervisor/fixed.vhdx.gz", 10485760,
         "bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62",
         "f2d743755f1872335fb1554116feecda67825719080ebb875b97dfacf7c1f590"),
    _img("dissect.hypervisor/dynamic.vhdx", "dissect.hypervisor/dynamic.vhdx.gz", 10485760,
         "8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac",
         "72e9aa1af9cc53c84585a8017246f14f7c9f2dd54bb3f52e3b70919b2af600b9"),
    _img("dissect.hypervisor/differencing.avhdx", "dissect.hypervisor/differencing.avhdx.gz",
         8589934592, None, "a4bf6f9ccaaf8f90b0e9a5b6f964e2b21ca3a9b1675c3a92e73206b04cfb1fbf",
         parent_absent=True),
    _img("dfvfs/ext2.vhd", "dfvfs/ext2.vhd.gz", 4212736,
         "870be7ae16c1fa8faab05c6eb9205dc9a7ae35c5f552c5cf8a267c0bc6a5cb99",
         "225f16a8d65ba442fbd9958606b60bb6001b33be024b90661baffd67f3210230"),
    _img("dfvfs/fat-differential.vhd", "dfvfs/fat-differential.vhd.gz", 4194304, None,
         "17032553d22ecc1fbde8dbac6f21b320c73d09eb2b118e7cf8d3624ce7b7eed4",
         parent_absent=True),
    _img("dfvfs/image.vhd", "dfvfs/image.vhd.gz", 104448,
         "c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25",
         "6438e92bda74f4f2f190cc665ffa5179174a8d614a2e6a38d5eb3a794642a8a8", lenient=True),
    _img("dfvfs/image-differential.vhd", "dfvfs/image-differential.vhd.gz", 104448,
         "c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25",
         "cde4d1356f5c47d697633ed3f5364f53d99ef1bc16867b903d86bdb7637eb7db", lenient=True),
    _img("dfvfs/image.orig-9f3915f.vhd", "dfvfs/image.orig-9f3915f.vhd.gz", 104448,
         "c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25",
         "a9e048435ab119a7f0b2f5b97030c6bcbb3a9f796ddb2fbb4a89ac456a218157"),
    _img("discutils/btrfs.vhdx", "discutils/btrfs.zip", 1073741824,
         "0b959f9cb4e18348ad8b646f152178282542c8304f02fddf765e3fd1a1de6864",
         "e1ec34ba6fea6a047e5b97f6b9355798f4bf22e5d9fb120013d912a41babf2a4"),
    _img("discutils/swap.vhdx", "discutils/swap.zip", 10737418240,
         "60dd30b4c74361427d1089510cabb36e2eeda0cc4747f467ea43173acd358c49",
         "e5427cf8e9a9dfc28f2c1f24e2a7294e62b3e48bcff25b458f51871092540582", slow=True),
    _img("discutils/lvm2.vhdx", "discutils/lvm2.zip", 10737418240,
         "f7dc6812a3b12a35f3ec895ce981bd59ff4558270fc80cd812c9cd522bff1295",
         "2940b9b677e0754da0438505a41ca5c623fb8d3039940a0460c4acdf3c0cc60c", slow=True),
    _img("discutils/xfs.vhdx", "discutils/xfs.zip", 10737418240,
         "8ca2bd2d91f1c6ada47128fc2f8d38587e73954ede5a664fe2bb09c19606060e",
         "caf6bc9f79ea216b9c5c51335d204b066d747b60f8bd2f4deafc707459d0c2ea", slow=True),
    _img("discutils/xfs5.vhdx", "discutils/xfs5.zip", 10737418240,
         "edc5d630b2da0ddb08992afb58ded06ffb56b884e184b4974fda16e31b7e6817",
         "df4069a8cb6ca640abac262f2d1809b9eff0cc78b16aca802f9f92746db77aa3", slow=True),
    _img("discutils/vhdx-log-replay.vhdx", "discutils/vhdx-log-replay.zip", 1073741824,
         "3ba3b309425b7ff5e8e0199edceed95226250f880c53b24e8eae93865f3fad5e",
         "d0805b6f7cdd3908239442900d73053a013079f839656d69bae00a44948983d6",
         stale_sha256="49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"),
    _img("freebsd-mkimg/img-63x255-512-mbr.vhd", "freebsd-mkimg/img-63x255-512-mbr.vhd.gz",
         16450560, "a1dfe4ad1328afa3016dfaeef3ef82a8e9c55e3dd4eb813599eab973df032e11",
         "101675afd83c3f37c93874c9f26845d0706e6bc619999a92772fa5dee299dd36"),
    _img("freebsd-mkimg/img-63x255-512-mbr.vhdf", "freebsd-mkimg/img-63x255-512-mbr.vhdf.gz",
         16777216, "9964109383a99f68cee092eac04e88a81a33be145d10d5cefb24ac183eb78c50",
         "3989fc46dfca7033be488ed2766baff741807a1b792bb192c1d12cbd8c2856ba"),
    _img("freebsd-mkimg/img-63x255-512-mbr.vhdx", "freebsd-mkimg/img-63x255-512-mbr.vhdx.gz",
         16777216, "9964109383a99f68cee092eac04e88a81a33be145d10d5cefb24ac183eb78c50",
         "25860edde095d17f725ccfc3dd07ec5c887926bb568bd054fd0a28b1f421a61e"),
]

BY_NAME = {img.name: img for img in IMAGES}
#: Content of the dfvfs pair merged (MANIFEST section 6).
DFVFS_MERGED_SHA256 = "c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25"
#: Sector numbers present in fat-differential.vhd's block 0 bitmap (MANIFEST section 4).
FAT_DIFF_PRESENT = [134, 143, *range(152, 160), 184, 185, 188, *range(190, 193), 194, 196]
#: differencing.avhdx: sectors its bitmaps mark present (MANIFEST section 3).
AVHDX_PRESENT_SECTORS = 6200
AVHDX_PARENT_LINKAGE = "ff34003b-11ed-4cf8-a166-b2be05e20b80"

CACHE = Path(os.environ.get("VHDMEND_FIXTURE_CACHE", "/tmp/vhdmend-fixture-cache"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def materialize(name: str) -> Path:
    """Decompress image ``name`` into the cache (once) and return a read-only copy's path.

    The cached file is verified against the MANIFEST's file sha256 when first written.
    Tests that write must copy it first (see :func:`scratch_copy`).
    """
    img = BY_NAME[name]
    dest = CACHE / img.name
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = FIXTURES / img.stored
    tmp = dest.with_name(dest.name + ".part")
    if img.stored.endswith(".gz"):
        with gzip.open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 8 << 20)
    elif img.stored.endswith(".bz2"):
        with bz2.open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 8 << 20)
    elif img.stored.endswith(".zip"):
        with zipfile.ZipFile(src) as z, z.open(Path(img.name).name) as fi, \
                open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 8 << 20)
    else:
        raise ValueError(f"unknown compression for {img.stored}")
    got = file_sha256(tmp)
    if got != img.file_sha256:
        tmp.unlink()
        raise AssertionError(f"{img.name}: decompressed sha256 {got} != {img.file_sha256}")
    os.chmod(tmp, 0o444)
    os.replace(tmp, dest)
    return dest


def scratch_copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    """A writable copy of image ``name`` in ``folder`` (sparse where the source is)."""
    src = materialize(name)
    dest = folder / (as_name or Path(name).name)
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        while chunk := fi.read(4 << 20):
            if chunk.count(0) == len(chunk):
                fo.seek(len(chunk), os.SEEK_CUR)
            else:
                fo.write(chunk)
        fo.truncate()
    os.chmod(dest, 0o644)
    return dest


def disk_sha256(disk: object, chunk: int = 8 << 20) -> str:
    """sha256 of a :class:`vhdlib.Disk`'s whole virtual content."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    size = disk.virtual_size  # type: ignore[attr-defined]
    pos = 0
    while pos < size:
        n = min(chunk, size - pos)
        mv = memoryview(buf)[:n]
        disk.readinto(pos, mv)  # type: ignore[attr-defined]
        h.update(mv)
        pos += n
    return h.hexdigest()
