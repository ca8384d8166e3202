"""Volume risk on real (tmpfs) volumes: over-commit is a warning, below reserve critical."""

from __future__ import annotations

from pathlib import Path

from tests import tmpfs
from tests.chains import build_chain, create
from tests.tmpfs import fill, free_bytes
from vhdlib import scan
from vhdlib.layer import DiskType
from vhdlib.scan.volumes import rate

MiB = 1 << 20

volume = tmpfs.volume  # the fixture: real tmpfs volumes


def test_rating_rules() -> None:
    assert rate(10 * MiB, 4 * MiB, 2 * MiB)[0] == "ok"
    assert rate(10 * MiB, 9 * MiB, 2 * MiB)[0] == "warning"
    risk, reasons = rate(MiB, 0, 2 * MiB)
    assert risk == "critical" and "below the reserve" in reasons[0]
    risk, reasons = rate(MiB, 8 * MiB, 2 * MiB)
    assert risk == "critical" and len(reasons) == 2 and "over-committed" in reasons[1]


def test_overcommit_is_a_warning_and_below_reserve_critical(volume) -> None:  # type: ignore[no-untyped-def]
    vol: Path = volume("v", 96)
    small = build_chain(vol, "vhd", size=16 * MiB, children=1, writes=4)
    big = create("vhdx", vol / "big.vhdx", 256 * MiB, DiskType.DYNAMIC)
    big.close()
    result = scan.scan([str(vol)], reserve=4 * MiB)
    (v,) = result.volumes
    assert v.mount == str(vol)
    assert v.free_bytes == free_bytes(vol)
    assert v.total_bytes == 96 * MiB
    leaves = {c.leaf: c for c in result.chains}
    assert set(v.chains) == {str(small.newest), str(vol / "big.vhdx")}
    assert v.growth_bytes == sum(c.growth_bytes for c in leaves.values())
    assert v.growth_bytes > 256 * MiB - 2 * MiB
    assert v.disk_bytes == sum(f.allocated_bytes for f in result.disks.values())
    assert v.risk == "warning" and "over-committed" in v.reasons[0]

    fill(vol / "hog", 2 * MiB)
    result = scan.scan([str(vol)], reserve=4 * MiB)
    assert result.volumes[0].risk == "critical"
    assert "below the reserve" in result.volumes[0].reasons[0]

    # Fixed disks cannot grow: a volume holding only those is ok with free space left.
    (vol / "hog").unlink()
    for p in [*small.paths, vol / "big.vhdx"]:
        p.unlink()
    create("vhd", vol / "fixed.vhd", 16 * MiB, DiskType.FIXED).close()
    result = scan.scan([str(vol)], reserve=4 * MiB)
    assert result.volumes[0].growth_bytes == 0
    assert result.volumes[0].risk == "ok"


def test_volumes_are_told_apart_riskiest_first(volume) -> None:  # type: ignore[no-untyped-def]
    calm: Path = volume("calm", 64)
    tight: Path = volume("tight", 64)
    create("vhd", calm / "fixed.vhd", 8 * MiB, DiskType.FIXED).close()
    create("vhd", tight / "dyn.vhd", 512 * MiB, DiskType.DYNAMIC).close()
    result = scan.scan([str(calm), str(tight)], reserve=MiB)
    assert [(v.mount, v.risk) for v in result.volumes] == [(str(tight), "warning"),
                                                            (str(calm), "ok")]
