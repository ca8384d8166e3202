"""Grouping scanned layers into chains, by their parent links as :func:`vhdlib.open`
resolves them (locators in order, then a search by id in the child's folder).

A chain's *leaf* is a layer no other scanned file depends on; its layers are listed newest
first. Only the leaf grows (Hyper-V writes the running checkpoint; older layers are
frozen), so a chain's growth is its leaf's growth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from vhdlib import journal
from vhdlib.chain import MAX_CHAIN_DEPTH
from vhdlib.errors import VhdlibError
from vhdlib.scan.layers import LayerFigures

#: Folders vhdmend archives retired chains into (nobody runs them: they do not grow).
ARCHIVE_PREFIX = "vhdmend-archive-"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Why a chain is not what it should be; ``code`` is stable."""

    code: str  # missing_parent, id_mismatch, loop, unreadable, interrupted, partial_output
    message: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass(slots=True)
class ChainFigures:
    """One chain: its layers newest first (empty for an unreadable file)."""

    leaf: str
    layers: list[LayerFigures]
    problems: list[ChainProblem] = field(default_factory=list)
    holders: list[Any] = field(default_factory=list)
    #: The Hyper-V VM whose configuration names a layer (vhdlib.hyperv), and the
    #: checkpoints naming any layer: set by :func:`vhdlib.scan.owners.attach_owners`.
    vm: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    #: Inside a vhdmend archive folder: kept for safety, never written again.
    archived: bool = False
    #: ``scan(reclaimable=True)``: :class:`~vhdlib.scan.reclaimable.Reclaimable` as a dict.
    reclaim: dict[str, Any] | None = None

    @property
    def snapshots(self) -> int:
        return max(0, len(self.layers) - 1)

    @property
    def device(self) -> int | None:
        return self.layers[0].device if self.layers else None

    @property
    def growth_bytes(self) -> int:
        if not self.layers or self.archived:
            return 0
        return self.layers[0].growth_bytes

    @property
    def allocated_bytes(self) -> int:
        return sum(layer.allocated_bytes for layer in self.layers)

    @property
    def max_bytes(self) -> int:
        """What the chain occupies once its leaf has grown to the full."""
        return self.allocated_bytes + self.growth_bytes

    def oldest_snapshot_age(self, now: float) -> float | None:
        """Seconds since the base stopped changing: when the first checkpoint was taken."""
        if self.snapshots == 0:
            return None
        return max(0.0, now - self.layers[-1].mtime)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        leaf = self.layers[0] if self.layers else None
        age = self.oldest_snapshot_age(now)
        return {
            "leaf": self.leaf,
            "layers": [layer.path for layer in self.layers] or [self.leaf],
            "format": leaf.format if leaf else None,
            "type": leaf.type if leaf else None,
            "virtual_size": leaf.virtual_size if leaf else None,
            "allocated_bytes": self.allocated_bytes,
            "max_bytes": self.max_bytes,
            "growth_bytes": self.growth_bytes,
            "snapshots": self.snapshots,
            "oldest_snapshot_age_seconds": None if age is None else int(age),
            "archived": self.archived,
            "problems": [p.to_dict() for p in self.problems],
            "holders": list(self.holders),
            "vm": self.vm,
            "checkpoints": list(self.checkpoints),
            "layer_details": [layer.to_dict() for layer in self.layers],
            **({"reclaim": self.reclaim,
                "reclaimable_bytes": self.reclaim["reclaimable_bytes"]}
               if self.reclaim is not None else {}),
        }


#: Looks up (or measures) the layer at a real path: figures, or why it is unreadable.
Lookup = Callable[[str], "LayerFigures | str"]


class ParentResolver:
    """Finds each differencing layer's parent the way :func:`vhdlib.chain.find_parent`
    does, from figures already measured (a parent outside the roots is measured once)."""

    def __init__(self, lookup: Lookup, known: Container[str] = ()) -> None:
        self.lookup = lookup
        #: Real paths already measured (the walk never passes a symlink, so its paths
        #: are real): a candidate among them needs no realpath/stat round.
        self.known = known

    def _real(self, path: str) -> str:
        if os.path.isabs(path) and ".." not in path:
            norm = os.path.normpath(path)
            if norm in self.known:
                return norm
        return os.path.realpath(path)

    def resolve(self, child: LayerFigures) -> LayerFigures | ChainProblem:
        tried: list[str] = []
        mismatched: list[str] = []
        seen: set[str] = set()
        for label, cand in child.parent_candidates:
            tried.append(f"{label} {cand}")
            real = self._real(cand)
            if real in seen or (real not in self.known and not os.path.isfile(cand)):
                continue
            seen.add(real)
            parent = self.lookup(real)
            if isinstance(parent, str):
                mismatched.append(f"{cand} (not a readable image: {parent})")
                continue
            if child.accepts_parent(parent.link_id):
                return parent
            mismatched.append(f"{cand} (id {parent.link_id})")
        folder = child.search_dir
        if folder and os.path.isdir(folder):
            tried.append(f"search by id in {folder}")
            found = self._search(child, folder, seen)
            if found is not None:
                return found
        if mismatched:
            return ChainProblem("id_mismatch", f"parent id {child.parent_id} not found; "
                                "candidates with other ids: " + ", ".join(mismatched),
                                child.path)
        return ChainProblem("missing_parent", f"parent {child.parent_id} not found (tried "
                            + "; ".join(tried) + ")", child.path)

    def _search(self, child: LayerFigures, folder: str,
                seen: set[str]) -> LayerFigures | None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            cand = os.path.join(folder, name)
            if not name.lower().endswith(child.search_suffixes) or not os.path.isfile(cand):
                continue
            real = self._real(cand)
            if real in seen or real == child.path:
                continue
            parent = self.lookup(real)
            if not isinstance(parent, str) and child.accepts_parent(parent.link_id):
                return parent
        return None


def build_chains(disks: dict[str, LayerFigures], unreadable: dict[str, str],
                 lookup: Lookup) -> list[ChainFigures]:
    """Group ``disks`` (by real path) into chains; ``unreadable`` files become chains of
    their own carrying the problem. Parents found outside the roots join their chains."""
    resolver = ParentResolver(lookup, disks)
    parent_of: dict[str, LayerFigures | ChainProblem] = {}
    # Resolving may measure parents outside the roots: iterate until no new layer shows.
    pending = [fig for fig in disks.values() if fig.is_differencing]
    while pending:
        fig = pending.pop()
        if fig.path in parent_of:
            continue
        got = resolver.resolve(fig)
        parent_of[fig.path] = got
        if isinstance(got, LayerFigures) and got.path not in disks:
            disks[got.path] = got
            if got.is_differencing:
                pending.append(got)
    referenced = {p.path for p in parent_of.values() if isinstance(p, LayerFigures)}
    chains: list[ChainFigures] = []
    placed: set[str] = set()
    for path in sorted(disks):
        if path not in referenced:
            chains.append(_follow(disks[path], parent_of, placed))
    # Whatever no leaf reached lies on a loop (every layer there is someone's parent).
    for path in sorted(disks):
        if path not in placed:
            chain = _follow(disks[path], parent_of, placed)
            if not any(p.code == "loop" for p in chain.problems):
                chain.problems.append(ChainProblem(
                    "loop", "every layer of this chain is another one's parent", path))
            chains.append(chain)
    for path, why in sorted(unreadable.items()):
        chains.append(ChainFigures(path, [], [ChainProblem("unreadable", why, path)]))
    for chain in chains:
        chain.archived = bool(chain.layers) and all(
            os.path.basename(os.path.dirname(layer.path)).startswith(ARCHIVE_PREFIX)
            for layer in chain.layers)
    return chains


def _follow(leaf: LayerFigures, parent_of: dict[str, LayerFigures | ChainProblem],
            placed: set[str]) -> ChainFigures:
    chain = ChainFigures(leaf.path, [])
    seen: set[str] = set()
    fig: LayerFigures | None = leaf
    while fig is not None:
        if fig.path in seen or len(chain.layers) >= MAX_CHAIN_DEPTH:
            chain.problems.append(ChainProblem(
                "loop", f"parent link of {chain.layers[-1].path} leads back to {fig.path}, "
                "already in the chain", chain.layers[-1].path))
            break
        seen.add(fig.path)
        placed.add(fig.path)
        chain.layers.append(fig)
        if not fig.is_differencing:
            break
        got = parent_of.get(fig.path)
        if isinstance(got, ChainProblem):
            chain.problems.append(got)
            break
        fig = got
    return chain


def attach_journals(chains: list[ChainFigures], journals: list[str],
                    partials: list[str]) -> None:
    """A journal (or partial output) of an interrupted vhdmend operation is a problem of
    every chain whose files it names: the operation should be resumed, not started anew."""
    by_path: dict[str, ChainFigures] = {}
    for chain in chains:
        for layer in chain.layers:
            by_path[layer.path] = chain
    covered: set[str] = set()
    for jp in journals:
        try:
            state = journal.load(jp)
        except VhdlibError as e:
            owner = by_path.get(jp[:-len(journal.SUFFIX)])
            if owner is not None:
                owner.problems.append(ChainProblem("interrupted", e.message, jp))
            continue
        names = _journal_paths(state)
        covered.update(p for p in names if p.endswith(".vhdmend-partial"))
        message = (f"an interrupted vhdmend {state.get('operation')} left its journal: run "
                   f"'vhdmend resume {jp}'")
        for chain in {id(c): c for p in names if (c := by_path.get(p)) is not None}.values():
            chain.problems.append(ChainProblem("interrupted", message, jp))
    for partial in partials:
        if partial in covered:
            continue
        beside = by_path.get(partial[:-len(".vhdmend-partial")])
        if beside is not None:
            beside.problems.append(ChainProblem(
                "partial_output", "an unfinished vhdmend output without a journal lies "
                "beside it (safe to delete once nothing runs)", partial))


def _journal_paths(state: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for key in ("target", "base", "partial", "destination"):
        value = state.get(key)
        if isinstance(value, str):
            names.add(os.path.abspath(value))
    for key in ("chain", "archived"):
        for value in state.get(key) or []:
            if isinstance(value, str):
                names.add(os.path.abspath(value))
    for ident in state.get("inputs") or []:
        if isinstance(ident, dict) and isinstance(ident.get("path"), str):
            names.add(os.path.abspath(ident["path"]))
    return names
