"""``scan``: observe the host's volumes now (read-only: no chain lock, no journal).

The whole host is scanned (a volume's risk needs every chain on it), each volume's status
and history are updated as a scheduled scan would, and the job's result lists the volumes
holding the folder the job names.
"""

from __future__ import annotations

import os
from typing import Any

from service.errors import PathRefused
from service.kinds.kind import Context, JobKind


def run(ctx: Context) -> dict[str, Any]:
    from service.volumes import alerts, monitor
    if not os.path.isdir(ctx.path):
        raise PathRefused("a scan job names a folder of the root ('.' for the whole root)")
    if ctx.store is None or ctx.settings is None:
        raise PathRefused("a scan job runs on a worker (it needs the store)")
    notify = alerts.Notifier(ctx.store, ctx.settings).on_status
    statuses = monitor.observe(ctx.settings, ctx.store.volumes, on_status=notify)
    from service.volumes.naming import volume_id
    from vhdlib.scan.volumes import mount_point
    here = volume_id(ctx.settings.host or "localhost", mount_point(ctx.path))
    mine = [s for s in statuses if s["id"] == here]
    return {"result": {"volumes": [{k: s[k] for k in (
        "id", "roots", "free_bytes", "growth_bytes", "risk", "reasons", "seconds_to_full")}
        for s in mine], "files_scanned": statuses[0]["files_scanned"] if statuses else 0}}


KIND = JobKind("scan", "Scan the host's volumes now: space, growth, trend, risk, plan",
               run=run, folder=True)
