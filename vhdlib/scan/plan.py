"""The cheapest feasible way out: per volume at risk, ordered steps that leave its chains
unable to grow (each covered chain ends as one fixed disk).

Every figure comes from vhdlib's own exact plan (:func:`vhdlib.ops.prepare`) of the step:
what it needs free on the volume (the check ``vhdmend remediate`` itself makes before
writing) and what the new fixed disk occupies; what a step frees is the old chain's
allocated bytes once it is deleted (``--allow-delete``) or archived on another volume
(``--spare-root``). An archive in place keeps the old chain's bytes (hard links).

Steps are ordered so each fits in the free space the ones before it leave: first those
that free at least what they take (smallest need first), then the rest by what they give
back (largest first), the order that lets the most of them fit. A chain that fits at no
point is listed as infeasible with the reason and what would make it fit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from vhdlib.errors import VhdlibError
from vhdlib.scan.chains import ARCHIVE_PREFIX, ChainFigures
from vhdlib.scan.volumes import VolumeFigures, _human, rate, space_of

PROG = "vhdmend"


@dataclass
class Candidate:
    """One chain's remediation as vhdlib plans it."""

    chain: ChainFigures
    argv: list[str]
    needs: int            # free bytes vhdmend requires on the volume before it starts
    takes: int            # bytes the new fixed disk occupies once done
    frees: int            # bytes the old chain gives back once done
    frees_if_deleted: int
    spare_needs: int = 0  # bytes the archive copy needs on the spare volume
    output: str = ""
    archive: str | None = None

    @property
    def gain(self) -> int:
        return self.frees - self.takes


@dataclass
class VolumePlan:
    """The ordered steps for one volume, what stays infeasible, and the risk left."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    infeasible: list[dict[str, Any]] = field(default_factory=list)
    free_after_bytes: int = 0
    remaining_growth_bytes: int = 0
    remaining_risk: str = "ok"
    remaining_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "infeasible": self.infeasible,
                "free_after_bytes": self.free_after_bytes,
                "remaining_growth_bytes": self.remaining_growth_bytes,
                "remaining_risk": self.remaining_risk,
                "remaining_reasons": list(self.remaining_reasons)}


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _fs_block(path: str) -> int:
    return os.statvfs(path).f_frsize or 4096


def fixed_allocation(spec: dict[str, Any], fs_block: int) -> int:
    """Bytes the fixed output ``spec`` (vhdlib's plan ``details["output"]``) occupies on
    its volume: the reserved data area plus the metadata as really written (measured on
    a sparse probe taken through the same finalize: a VHDX's 1 MiB regions are partly
    never written)."""
    import tempfile

    from vhdlib.ops import output

    probe_spec = output.OutputSpec.from_dict({**spec, "sparse": True})
    with tempfile.TemporaryDirectory(prefix="vhdmend-scan-") as tmp:
        layer = output.create(os.path.join(tmp, "probe"), probe_spec)
        try:
            # The run ends with finalize (VHDX: it zeroes, so allocates, the log region).
            finalize = getattr(layer, "finalize", None)
            if finalize is not None:
                finalize(bytes(16))
            layer.flush()
            first = next(layer.segments(0, layer.logical_sector_size))
            data_start = first.file_offset or 0
            size = os.fstat(layer.fd).st_size
            written = _allocated_below(layer.fd, data_start, fs_block)
        finally:
            layer.close()
    # The data area [data_start, end) is reserved whole (fallocate), footer included.
    return _round_up(size - data_start, fs_block) + written


def _allocated_below(fd: int, end: int, fs_block: int) -> int:
    """Allocated bytes of ``[0, end)`` (SEEK_DATA/SEEK_HOLE; st_blocks where missing)."""
    if end <= 0:
        return 0
    if not hasattr(os, "SEEK_DATA"):
        return min(os.fstat(fd).st_blocks * 512, _round_up(end, fs_block))
    total = pos = 0
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        if start >= end:
            break
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        total += _round_up(stop, fs_block) - (start // fs_block) * fs_block
        pos = stop
    return total


def freed_by_retiring(chain: ChainFigures, device: int) -> int:
    """Bytes the chain's files give back on ``device`` once their names are gone (a file
    with another hard link outside the chain keeps its bytes)."""
    total = 0
    seen: set[int] = set()
    for layer in chain.layers:
        if layer.device != device or layer.inode in seen:
            continue
        seen.add(layer.inode)
        if layer.nlink <= 1:
            total += layer.allocated_bytes
    return total


def archive_folder(spare_root: str, chain: ChainFigures) -> str:
    """A folder of its own per chain (two chains may both have a ``base.vhd``)."""
    base = chain.layers[-1].path
    stem = os.path.splitext(os.path.basename(base))[0]
    tag = hashlib.sha256(base.encode()).hexdigest()[:8]
    return os.path.join(os.path.abspath(spare_root), f"{ARCHIVE_PREFIX}{stem}-{tag}")


class Planner:
    """Plans every volume at risk; the spare volume's free space is shared by all."""

    def __init__(self, *, allow_delete: bool = False, spare_root: str | None = None,
                 reserve: int) -> None:
        self.allow_delete = allow_delete
        self.spare_root = os.path.abspath(spare_root) if spare_root else None
        self.reserve = reserve
        self._with_delete: set[str] = set()
        self.spare_device: int | None = None
        self.spare_free = 0
        if self.spare_root is not None:
            self.spare_device = os.stat(self.spare_root).st_dev
            self.spare_free = space_of(self.spare_root)[1]

    # --- one chain ---------------------------------------------------------------------

    def candidate(self, chain: ChainFigures, vol: VolumeFigures) -> Candidate:
        """vhdlib's own plan of remediating ``chain`` to one fixed disk in place."""
        from vhdlib import ops

        leaf = chain.leaf
        frees_deleted = freed_by_retiring(chain, vol.device)
        options: dict[str, Any] = {"type": "fixed"}
        argv = [PROG, "remediate", leaf, "--type", "fixed"]
        archive: str | None = None
        spare_usable = (self.spare_root is not None and self.spare_device != vol.device)
        if self.allow_delete:
            options["delete"] = True
            argv.append("--delete")
        elif spare_usable:
            assert self.spare_root is not None
            archive = archive_folder(self.spare_root, chain)
            options["archive"] = archive
            argv += ["--archive", archive]
        op = ops.prepare("remediate", leaf, **options)
        plan = op.plan.to_dict()
        needs = spare_needs = 0
        for need in plan["space"]:
            if need["device"] == vol.device:
                needs += int(need["needed_bytes"])
            elif need["device"] == self.spare_device:
                spare_needs += int(need["needed_bytes"])
        block = _fs_block(vol.mount)
        takes = fixed_allocation(plan["details"]["output"], block)
        frees = frees_deleted if (self.allow_delete or archive) else 0
        return Candidate(chain, argv, needs, takes, frees, frees_deleted, spare_needs,
                         str(plan["target"]), archive)

    # --- one volume --------------------------------------------------------------------

    def plan_volume(self, vol: VolumeFigures, chains: list[ChainFigures]) -> VolumePlan:
        result = VolumePlan()
        pending: list[Candidate] = []
        remaining_growth = 0
        for chain in chains:
            if chain.device != vol.device or chain.growth_bytes <= 0:
                continue
            blocked = self._blocked(chain)
            if blocked is not None:
                result.infeasible.append(blocked)
                remaining_growth += chain.growth_bytes
                continue
            try:
                pending.append(self.candidate(chain, vol))
            except VhdlibError as e:
                result.infeasible.append(self._entry(chain, str(e), []))
                remaining_growth += chain.growth_bytes
        free = vol.free_bytes
        order = schedule(pending, free, self.spare_free)
        for pick in order:
            pending.remove(pick)
            if pick.archive and pick.spare_needs > self.spare_free:
                pick = self._in_place(pick)  # the spare volume is full by now
            before = free
            free = free - pick.takes + pick.frees
            self.spare_free -= pick.spare_needs
            result.steps.append(self._step(pick, before, free))
        if pending and not self.allow_delete:
            # Would deleting the old chains have made room? Only then say so.
            self._with_delete = _fixed_if_deleting(result.steps, pending, vol.free_bytes)
        for cand in pending:
            remaining_growth += cand.chain.growth_bytes
            result.infeasible.append(self._infeasible(cand, vol, free))
        result.free_after_bytes = free
        result.remaining_growth_bytes = remaining_growth
        result.remaining_risk, result.remaining_reasons = rate(free, remaining_growth,
                                                               self.reserve)
        return result

    @staticmethod
    def _in_place(cand: Candidate) -> Candidate:
        argv = [a for a in cand.argv if a not in ("--archive", cand.archive)]
        return Candidate(cand.chain, argv, cand.needs, cand.takes, 0,
                         cand.frees_if_deleted, 0, cand.output, None)

    def _blocked(self, chain: ChainFigures) -> dict[str, Any] | None:
        if chain.problems:
            what = ", ".join(sorted({p.code for p in chain.problems}))
            return self._entry(chain, f"the chain has problems ({what}; see the chain)",
                               ["repair or resume it first (vhdmend check, vhdmend resume)"])
        if chain.holders:
            return self._entry(chain, f"in use by {chain.holders}",
                               ["stop the guest that holds it, then scan again"])
        return None

    @staticmethod
    def _entry(chain: ChainFigures, why: str, fixes: list[str]) -> dict[str, Any]:
        return {"leaf": chain.leaf, "why": why, "would_fit_if": fixes,
                "growth_bytes": chain.growth_bytes}

    def _infeasible(self, cand: Candidate, vol: VolumeFigures, free: int
                    ) -> dict[str, Any]:
        # No order of the steps found fits it; after them, this much is missing.
        short = cand.needs - free
        why = (f"needs {_human(cand.needs)} ({cand.needs} bytes) free on {vol.mount} for "
               f"its fixed disk, but {_human(free)} is free after the steps that fit: "
               f"{_human(short)} short")
        fixes = [f"free {_human(short)} ({short} bytes) more on {vol.mount}"]
        if not self.allow_delete and cand.chain.leaf in self._with_delete:
            fixes.append("with --allow-delete it fits: each old chain is deleted once its "
                         "result is verified, so later steps get its space back")
        stem = os.path.basename(cand.chain.layers[-1].path)
        entry = self._entry(cand.chain, why, fixes)
        entry.update({"needs_bytes": cand.needs, "short_bytes": short})
        if self.spare_root is not None and self.spare_device != vol.device \
                and self.spare_free >= cand.needs:
            target = os.path.join(self.spare_root, stem)
            entry["relocate_argv"] = [PROG, "remediate", cand.chain.leaf, "--type", "fixed",
                                      "--output", target]
            fixes.append(f"the spare volume {self.spare_root} has room: relocate_argv "
                         f"writes the fixed disk there (then point the guest at {target} "
                         "and retire the old chain)")
        else:
            fixes.append(f"with --spare-root on a volume with >= {_human(cand.needs)} free, "
                         "the fixed disk can be written there (remediate --output)")
        return entry

    def _step(self, cand: Candidate, before: int, after: int) -> dict[str, Any]:
        retire = ("deleted" if self.allow_delete else
                  f"archived in {cand.archive}" if cand.archive else
                  "archived in place (still occupying its space)")
        return {"chain": cand.chain.leaf, "operation": "remediate", "argv": cand.argv,
                "output": cand.output, "needs_bytes": cand.needs,
                "free_before_bytes": before, "takes_bytes": cand.takes,
                "frees_bytes": cand.frees, "free_after_bytes": after,
                "frees_if_deleted_bytes": cand.frees_if_deleted,
                "spare_needs_bytes": cand.spare_needs,
                "description": f"remediate {cand.chain.leaf} into one fixed disk "
                               f"{cand.output}; the old chain is {retire}"}


#: Orders for the steps that take more than they free (after those that do not):
#: by what each gives back beyond what it consumes (the order in which such a set fits
#: whenever any order does), by least consumed, by least needed.
_LOSER_ORDERS = (
    lambda c: (-(c.needs - c.takes + c.frees), c.chain.leaf),
    lambda c: (c.takes - c.frees, c.needs, c.chain.leaf),
    lambda c: (c.needs, c.chain.leaf),
)


def schedule(pending: list[Candidate], free: int, spare_free: int = 0) -> list[Candidate]:
    """The steps to run, in order, each fitting in the free space the ones before leave.

    Steps that free at least what they take go first, smallest need first (each makes
    room for the next); the rest follow in whichever of a few orders fixes the most
    chains (then covers the most growth, then leaves the most free).
    """
    best: tuple[tuple[int, int, int], list[Candidate]] | None = None
    for order in _LOSER_ORDERS:
        picked = _greedy(pending, free, spare_free, order)
        final = free + sum(c.frees - c.takes for c in picked)
        score = (len(picked), sum(c.chain.growth_bytes for c in picked), final)
        if best is None or score > best[0]:
            best = (score, picked)
    return best[1] if best else []


def _greedy(pending: list[Candidate], free: int, spare_free: int,
            loser_key: Any) -> list[Candidate]:
    left = list(pending)
    picked: list[Candidate] = []
    while left:
        fits = [c for c in left if c.needs <= free]
        if not fits:
            break
        gainers = [c for c in fits if c.gain >= 0]
        pick = (min(gainers, key=lambda c: (c.needs, c.chain.leaf)) if gainers
                else min(fits, key=loser_key))
        left.remove(pick)
        frees = pick.frees
        if pick.archive and pick.spare_needs > spare_free:
            frees = 0  # archived in place instead
        else:
            spare_free -= pick.spare_needs
        free = free - pick.takes + frees
        picked.append(pick)
    return picked


def _fixed_if_deleting(steps: list[dict[str, Any]], pending: list[Candidate],
                       free: int) -> set[str]:
    """Leaves a plan that deletes each old chain would fix (scheduled steps included)."""
    cands = [Candidate(c.chain, c.argv, c.needs, c.takes, c.frees_if_deleted,
                       c.frees_if_deleted) for c in pending]
    for s in steps:
        cands.append(Candidate(ChainFigures(s["chain"], []), [], s["needs_bytes"],
                               s["takes_bytes"], s["frees_if_deleted_bytes"], 0))
    return {c.chain.leaf for c in schedule(cands, free)}


def plan_all(volumes: list[VolumeFigures], chains: list[ChainFigures], *,
             allow_delete: bool = False, spare_root: str | None = None,
             reserve: int) -> None:
    """Attach a plan to every volume at risk (``volume.plan``)."""
    planner = Planner(allow_delete=allow_delete, spare_root=spare_root, reserve=reserve)
    for vol in volumes:
        if vol.risk != "ok":
            vol.plan = planner.plan_volume(vol, chains).to_dict()
