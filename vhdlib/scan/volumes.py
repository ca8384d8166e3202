"""Per volume (the filesystem each disk file lives on): space, growth and the risk.

``critical`` when free < reserve (Hyper-V pauses guests under its reserve); ``warning``
when the chains' growth exceeds free - reserve (the disks *can* fill the volume: the
classic over-commit); ``ok`` otherwise. Each rating carries its reasons in words.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vhdlib.scan.chains import ChainFigures
from vhdlib.scan.layers import LayerFigures

#: Hyper-V pauses a VM when its volume's free space drops under about 200 MB; 2 GiB
#: leaves time to act. Configurable per scan.
DEFAULT_RESERVE = 2 << 30

RISK_ORDER = {"critical": 0, "warning": 1, "ok": 2}


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(slots=True)
class VolumeFigures:
    """One filesystem and the disks on it."""

    device: int
    mount: str
    total_bytes: int
    free_bytes: int
    disk_bytes: int
    growth_bytes: int
    reserve_bytes: int
    risk: str = "ok"
    reasons: list[str] = field(default_factory=list)
    #: Leaves of the chains whose leaf lives here.
    chains: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mount": self.mount, "device": self.device, "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes, "disk_bytes": self.disk_bytes,
            "growth_bytes": self.growth_bytes, "reserve_bytes": self.reserve_bytes,
            "risk": self.risk, "reasons": list(self.reasons), "chains": list(self.chains)}
        if self.plan is not None:
            d["plan"] = self.plan
        return d


def rate(free: int, growth: int, reserve: int) -> tuple[str, list[str]]:
    """The risk of a volume with ``free`` bytes whose disks can still grow by ``growth``."""
    reasons: list[str] = []
    risk = "ok"
    if free < reserve:
        risk = "critical"
        reasons.append(f"free space {_human(free)} is below the reserve {_human(reserve)}: "
                       "Hyper-V may pause guests now")
    headroom = free - reserve
    if growth > headroom:
        if risk == "ok":
            risk = "warning"
        reasons.append(f"the disks can grow by {_human(growth)} but only "
                       f"{_human(max(0, headroom))} is free above the reserve "
                       f"(over-committed by {_human(growth - headroom)})")
    if risk == "ok":
        reasons.append(f"the disks can grow by {_human(growth)}; {_human(headroom)} is free "
                       "above the reserve")
    return risk, reasons


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (walk up while st_dev holds)."""
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return path
        try:
            if os.stat(parent).st_dev != dev:
                return path
        except OSError:
            return path
        path = parent


def space_of(path: str) -> tuple[int, int]:
    """(total, free for an unprivileged writer) of the volume holding ``path``."""
    st = os.statvfs(path)
    # f_bavail, as vhdlib.space: root's reserved blocks are not ours to spend.
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def assess(chains: Iterable[ChainFigures], disks: Iterable[LayerFigures],
           reserve: int = DEFAULT_RESERVE) -> list[VolumeFigures]:
    """Volumes holding ``disks``, rated; riskiest first, then by over-commitment."""
    volumes: dict[int, VolumeFigures] = {}
    inodes: set[tuple[int, int]] = set()
    for fig in disks:
        vol = volumes.get(fig.device)
        if vol is None:
            mount = mount_point(os.path.dirname(fig.path))
            total, free = space_of(mount)
            vol = volumes[fig.device] = VolumeFigures(fig.device, mount, total, free, 0, 0,
                                                      reserve)
        if (fig.device, fig.inode) not in inodes:
            inodes.add((fig.device, fig.inode))
            vol.disk_bytes += fig.allocated_bytes
    for chain in chains:
        if chain.device is None or chain.device not in volumes:
            continue
        vol = volumes[chain.device]
        vol.chains.append(chain.leaf)
        vol.growth_bytes += chain.growth_bytes
    for vol in volumes.values():
        vol.risk, vol.reasons = rate(vol.free_bytes, vol.growth_bytes, reserve)
    return sorted(volumes.values(), key=lambda v: (
        RISK_ORDER[v.risk], -(v.growth_bytes - v.free_bytes), v.mount))
