"""One observation of a host's volumes: scan its roots, record a sample per volume, project,
rate, plan, and store each volume's status (what the API, the metrics and alerts read).

Nothing is written to any disk and no lock is taken: the scan reads headers and BATs only.
Its I/O is bounded by the scan's thread count (:data:`SCAN_THREADS` reads in flight).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.config import Settings
from service.volumes.naming import Namer, chain_id, volume_id
from service.volumes.projection import Sample, assess, project, thresholds_of
from service.volumes.store import VolumeStore

log = logging.getLogger(__name__)

#: Header reads in flight during a service scan (the CLI uses more): a bounded share of
#: the host's I/O, so the guests served from the same disks hardly notice.
SCAN_THREADS = 2

#: Called with (previous status or None, new status) after each volume is stored.
OnStatus = Callable[[dict[str, Any] | None, dict[str, Any]], None]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def chain_view(chain: Any, namer: Namer, host: str, now: float, risk: str) -> dict[str, Any]:
    """A chain as the API shows it: root-relative names only."""
    d = chain.to_dict(now)
    leaf = namer.locate(chain.leaf)
    return {
        "id": chain_id(host, chain.leaf),
        "host": host,
        "root": leaf[0] if leaf else None,
        "leaf": leaf[1] if leaf else None,
        "layers": [namer.file(layer.path) for layer in chain.layers],
        "format": d["format"], "type": d["type"], "virtual_size": d["virtual_size"],
        "allocated_bytes": d["allocated_bytes"], "max_bytes": d["max_bytes"],
        "growth_bytes": d["growth_bytes"], "snapshots": d["snapshots"],
        "oldest_snapshot_age_seconds": d["oldest_snapshot_age_seconds"],
        "archived": d["archived"],
        "problems": [{"code": p.code, "message": namer.text(p.message)}
                     for p in chain.problems],
        # A chain that can still grow shares its volume's risk; a problem is a warning.
        "risk": (risk if chain.growth_bytes > 0 else
                 "warning" if chain.problems else "ok"),
        "vm": vm_view(chain.vm, namer),
        "checkpoints": [checkpoint_view(c, namer) for c in chain.checkpoints],
    }


def vm_view(vm: dict[str, Any] | None, namer: Namer) -> dict[str, Any] | None:
    """The scan's owning VM (:mod:`vhdlib.scan.owners`) with root-relative files only.

    ``windows_path`` stays: it is the Hyper-V host's own name for the disk, read from the
    VM's configuration (what ``Set-VMHardDiskDrive -Path`` takes), not a path of this host.
    The checkpoints are the chain's (``checkpoints`` beside ``vm``), not repeated here.
    """
    if vm is None:
        return None
    return {"vm_name": vm.get("vm_name"), "vm_id": vm.get("vm_id"),
            "config": namer.file(str(vm.get("config") or "")),
            "controller_type": vm.get("controller_type"),
            "controller_number": vm.get("controller_number"),
            "controller_location": vm.get("controller_location"),
            "windows_path": vm.get("windows_path"),
            "file": namer.file(str(vm.get("local_path") or "")),
            "mapping": vm.get("mapping"), "generation": vm.get("generation"),
            "notes": [namer.text(str(n)) for n in vm.get("notes") or []]}


def checkpoint_view(c: dict[str, Any], namer: Namer) -> dict[str, Any]:
    """A checkpoint naming one of the chain's layers, with root-relative files only."""
    return {"id": c.get("id"), "name": c.get("name"),
            "config": namer.file(str(c.get("config") or "")),
            "windows_path": c.get("windows_path"),
            "file": namer.file(str(c.get("local_path") or ""))}


def plan_view(plan: dict[str, Any], namer: Namer, host: str) -> dict[str, Any]:
    """Part 1's plan, each step ready to submit as a job (``POST /v1/jobs``)."""
    steps = []
    for step in plan["steps"]:
        where = namer.locate(step["chain"])
        job = None
        if where is not None:
            options: dict[str, Any] = {"type": "fixed"}
            if "--delete" in step["argv"]:
                options["delete"] = True
            job = {"type": "remediate", "host": host, "root": where[0], "path": where[1],
                   "options": options}
        steps.append({"job": job, "operation": step["operation"],
                      "needs_bytes": step["needs_bytes"],
                      "takes_bytes": step["takes_bytes"], "frees_bytes": step["frees_bytes"],
                      "free_before_bytes": step["free_before_bytes"],
                      "free_after_bytes": step["free_after_bytes"],
                      "description": namer.text(step["description"])})
    return {"steps": steps,
            "infeasible": [{"chain": namer.file(i["leaf"]), "why": namer.text(i["why"]),
                            "would_fit_if": [namer.text(f) for f in i["would_fit_if"]]}
                           for i in plan["infeasible"]],
            "free_after_bytes": plan["free_after_bytes"],
            "remaining_risk": plan["remaining_risk"],
            "remaining_reasons": [namer.text(r) for r in plan["remaining_reasons"]]}


def observe(settings: Settings, volumes: VolumeStore, *, now: float | None = None,
            on_status: OnStatus | None = None, plan: bool = True) -> list[dict[str, Any]]:
    """Scan ``settings.roots`` once and store every volume's status; returns them."""
    from vhdlib import scan
    from vhdlib.scan.plan import Planner

    now = time.time() if now is None else now
    host = settings.host or "localhost"
    namer = Namer(settings.roots)
    result = scan.scan(sorted(settings.roots.values()), reserve=settings.reserve,
                       threads=SCAN_THREADS)
    thresholds = thresholds_of(settings)
    planner = Planner(reserve=settings.reserve)
    out = []
    for vol in result.volumes:
        vid = volume_id(host, vol.mount)
        previous = volumes.status(vid)
        volumes.add_sample(vid, Sample(now, vol.free_bytes, vol.disk_bytes, vol.growth_bytes))
        projection = project(volumes.history(vid), settings.reserve,
                             window=settings.projection_window, now=now)
        rated = assess(vol.free_bytes, vol.growth_bytes, projection, thresholds)
        mine = [c for c in result.chains if c.device == vol.device]
        the_plan = None
        if plan and rated.risk != "ok":
            try:
                the_plan = plan_view(planner.plan_volume(vol, mine).to_dict(), namer, host)
            except Exception as e:  # a plan is advice: the status is stored without it
                log.warning("volume %s: planning failed: %s", vid, e)
        status = {
            "id": vid, "host": host, "roots": namer.roots_on(vol.device),
            "total_bytes": vol.total_bytes, "free_bytes": vol.free_bytes,
            "disk_bytes": vol.disk_bytes, "growth_bytes": vol.growth_bytes,
            "reserve_bytes": settings.reserve, "risk": rated.risk,
            "reasons": [namer.text(r) for r in rated.reasons],
            **projection.to_dict(),
            "chains": [chain_view(c, namer, host, now, rated.risk) for c in mine],
            "plan": the_plan,
            "scanned_at": iso(now), "scanned_at_unix": now,
            "scan_seconds": round(result.seconds, 3), "files_scanned": result.files_scanned,
            "risk_since": (previous.get("risk_since", iso(now))
                           if previous and previous.get("risk") == rated.risk else iso(now)),
        }
        if previous and "alert" in previous:
            status["alert"] = previous["alert"]
        if on_status is not None:
            on_status(previous, status)  # may record its alert state in the status
        volumes.put_status(vid, status)
        out.append(status)
    return out
