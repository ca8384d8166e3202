"""See it coming: which volumes can fill, and how to get out of it with the space there is.

    from vhdlib import scan
    result = scan.scan(["/var/lib/hyperv"])           # headers and BATs only
    for vol in result.volumes:
        print(vol.mount, vol.risk, vol.reasons)
    plans = scan.plan.plan_all(result, allow_delete=False)

:mod:`~vhdlib.scan.walk` finds disk files by content, :mod:`~vhdlib.scan.layers` measures
each, :mod:`~vhdlib.scan.chains` groups them as :func:`vhdlib.open` resolves parents,
:mod:`~vhdlib.scan.volumes` rates each filesystem, :mod:`~vhdlib.scan.plan` orders the cure.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vhdlib.scan import walk
from vhdlib.scan.chains import ChainFigures, attach_journals, build_chains
from vhdlib.scan.holders import holders, samba_installed
from vhdlib.scan.layers import LayerFigures, measure
from vhdlib.scan.owners import attach_owners
from vhdlib.scan.pool import PROCESS_AFTER, Examined, Item, ProcessFeed, examine_all, workers
from vhdlib.scan.reclaimable import measure as reclaim_measure
from vhdlib.scan.volumes import DEFAULT_RESERVE, VolumeFigures, assess

#: Called now and then with (files seen, disks found) while walking.
ScanProgress = Callable[[int, int], None]

#: Threads examining files (they overlap the reads' waits on a cold cache; each file is
#: a few preads, so more threads mostly add GIL hand-offs), files per task given to one
#: (a future per file cost more locking than its parse), and tasks in flight (the bound
#: keeps memory flat however large the tree).
THREADS = 8
BATCH = 16
IN_FLIGHT = 32


@dataclass
class ScanResult:
    """What :func:`scan` found: volumes riskiest first, chains by growth."""

    roots: list[str]
    volumes: list[VolumeFigures]
    chains: list[ChainFigures]
    disks: dict[str, LayerFigures]
    files_scanned: int
    seconds: float
    unreadable: dict[str, str] = field(default_factory=dict)
    #: Hyper-V configurations found on the roots that could not be read (``.vmcx``...).
    unreadable_configs: list[dict[str, str]] = field(default_factory=list)

    @property
    def at_risk(self) -> bool:
        return any(v.risk != "ok" for v in self.volumes)

    @property
    def has_problems(self) -> bool:
        return any(c.problems for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        now = time.time()
        return {"roots": list(self.roots),
                "volumes": [v.to_dict() for v in self.volumes],
                "chains": [c.to_dict(now) for c in self.chains],
                "files_scanned": self.files_scanned,
                "disks_found": len(self.disks),
                "unreadable_vm_configs": list(self.unreadable_configs),
                "seconds": round(self.seconds, 3)}


def scan(roots: list[str], *, reserve: int = DEFAULT_RESERVE,
         progress: ScanProgress | None = None, threads: int = THREADS,
         processes: int | None = None, reclaimable: bool = False) -> ScanResult:
    """Walk ``roots`` and report every chain and volume (nothing is written, no payload
    is read). A root that cannot be read raises :class:`~vhdlib.errors.NotADiskError`.

    The first files are examined in-process by ``threads`` threads; past
    :data:`~vhdlib.scan.pool.PROCESS_AFTER` files the rest go to ``processes`` worker
    processes (default: one per CPU; 0 or 1: never). ``reclaimable`` (opt-in) also reads
    each chain's guest allocation maps for ``reclaimable_bytes``
    (:mod:`~vhdlib.scan.reclaimable`)."""
    start = time.monotonic()
    real_roots = [os.path.realpath(r) for r in walk.check_roots(roots)]
    disks: dict[str, LayerFigures] = {}
    unreadable: dict[str, str] = {}
    journals: list[str] = []
    partials: list[str] = []
    files = 0

    def take(found: walk.Found | None, fig: LayerFigures | str | None) -> None:
        if found is None:
            return
        if found.kind == "journal":
            journals.append(found.path)
        elif found.kind == "partial":
            partials.append(found.path)
        elif found.kind == "unreadable":
            unreadable[found.path] = found.error
        elif isinstance(fig, str):
            unreadable[found.path] = fig
        elif fig is not None:
            disks[fig.path] = fig

    last = 0.0
    feed = ProcessFeed(workers() if processes is None else processes)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="scan") as pool:
            window: deque[Future[list[Examined]]] = deque()
            batch: list[Item] = []
            for item in walk.files(real_roots):
                if isinstance(item, walk.Found):
                    take(item, None)
                    continue
                files += 1
                if files > PROCESS_AFTER and feed.processes > 1:
                    for got in feed.add(item):
                        take(*got)
                else:
                    batch.append(item)
                    if len(batch) >= BATCH:
                        window.append(pool.submit(examine_all, batch))
                        batch = []
                while len(window) >= IN_FLIGHT or (window and window[0].done()):
                    for got in window.popleft().result():
                        take(*got)
                if progress is not None and time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    progress(files, len(disks))
            if batch:
                window.append(pool.submit(examine_all, batch))
            while window:
                for got in window.popleft().result():
                    take(*got)
            for got in feed.finish():
                take(*got)
    finally:
        feed.close()
    extra: dict[str, LayerFigures | str] = {}

    def lookup(real: str) -> LayerFigures | str:
        fig = disks.get(real)
        if fig is not None:
            return fig
        if real in unreadable:
            return unreadable[real]
        if real not in extra:
            extra[real] = measure(real)
        return extra[real]

    chains = build_chains(disks, unreadable, lookup)
    attach_journals(chains, journals, partials)
    ask_samba = samba_installed()
    for chain in chains:
        chain.holders = holders([layer.path for layer in chain.layers], ask_samba=ask_samba)
        if reclaimable and chain.layers and not chain.problems:
            chain.reclaim = reclaim_measure(chain.leaf).to_dict()
    configs = attach_owners(chains, real_roots)
    chains.sort(key=lambda c: (-c.growth_bytes, c.leaf))
    volumes = assess(chains, disks.values(), reserve)
    if progress is not None:
        progress(files, len(disks))
    return ScanResult(real_roots, volumes, chains, disks, files, time.monotonic() - start,
                      unreadable, configs)


__all__ = ["DEFAULT_RESERVE", "ChainFigures", "LayerFigures", "ScanResult", "VolumeFigures",
           "scan"]
