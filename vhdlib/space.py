"""Free space per volume, checked exactly before writing (fallocate lives in fileio)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vhdlib.errors import InsufficientSpaceError

#: What a journal may grow to (its cursor, identities and per-window digests), reserved
#: on the target's volume so a checkpoint can never be the write that fills it.
JOURNAL_RESERVE = 1 << 20


@dataclass(frozen=True)
class Volume:
    """A host volume, named by a folder on it, identified by ``st_dev``."""

    device: int
    path: str
    block_size: int
    free: int

    def round_up(self, nbytes: int) -> int:
        """Bytes the volume really allocates for a file of ``nbytes`` (whole fs blocks)."""
        bs = self.block_size or 4096
        return -(-nbytes // bs) * bs


def volume_of(path: str) -> Volume:
    """The volume holding ``path`` (or, if it does not exist yet, its folder)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    st = os.stat(probe)
    vfs = os.statvfs(probe)
    # f_bavail: what an unprivileged writer may use; root's reserve is not ours to spend.
    return Volume(st.st_dev, probe, vfs.f_frsize, vfs.f_bavail * vfs.f_frsize)


@dataclass
class SpaceNeed:
    """Extra bytes one volume needs for an operation, with a line per reason."""

    volume: Volume
    needed: int = 0
    reasons: list[str] | None = None

    def add(self, nbytes: int, reason: str) -> None:
        self.needed += nbytes
        if self.reasons is None:
            self.reasons = []
        self.reasons.append(f"{reason}: {nbytes}")

    def to_dict(self) -> dict[str, object]:
        return {"volume": self.volume.path, "device": self.volume.device,
                "needed_bytes": self.needed, "free_bytes": self.volume.free,
                "reasons": list(self.reasons or [])}


class SpaceBudget:
    """Adds up needs per volume (by ``st_dev``) and checks them all before any write."""

    def __init__(self) -> None:
        self.needs: dict[int, SpaceNeed] = {}

    def add(self, path: str, nbytes: int, reason: str) -> None:
        vol = volume_of(path)
        need = self.needs.setdefault(vol.device, SpaceNeed(vol))
        need.add(vol.round_up(nbytes) if nbytes > 0 else 0, reason)

    def to_list(self) -> list[dict[str, object]]:
        return [n.to_dict() for n in self.needs.values()]

    def check(self) -> None:
        """Raise :class:`InsufficientSpaceError` naming both numbers for a short volume."""
        for need in self.needs.values():
            free = volume_of(need.volume.path).free
            if need.needed > free:
                raise InsufficientSpaceError(
                    f"volume of {need.volume.path} needs {need.needed} bytes free but has "
                    f"{free} ({'; '.join(need.reasons or [])})", path=need.volume.path,
                    needed=need.needed, available=free)
