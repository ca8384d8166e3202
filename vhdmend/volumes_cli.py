"""``vhdmend volumes``: the service's watched volumes, riskiest first (GET /v1/volumes).

A table on a terminal, ``--json`` for scripts, ``ID`` for one volume (its chains and the
plan, each step with the job to submit). Exit 0 when every volume shown is ``ok``, 1 when
any is at risk (as ``vhdmend scan``), 2 on a usage error, 69 when the API is unreachable.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from vhdmend.service_cli import EXIT_FAILED, EXIT_OK, _client, call
from vhdmend.sizes import human_size


def add_command(sub: Any, client_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("volumes", help="watched volumes: space, trend, risk, plan")
    p.add_argument("volume_id", nargs="?", help="show one volume in full")
    p.add_argument("--host", dest="volume_host", help="only this storage host")
    p.add_argument("--risk", choices=["ok", "warning", "critical"])
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    client_args(p)
    p.set_defaults(func=cmd_volumes)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from service.volumes.projection import duration
    return duration(seconds)


def table(items: list[dict[str, Any]]) -> str:
    rows = [("VOLUME", "HOST", "ROOTS", "RISK", "FREE", "TOTAL", "GROWTH", "TO RESERVE",
             "WHY")]
    for v in items:
        rows.append((v["id"], v["host"], ",".join(v.get("roots") or []) or "-", v["risk"],
                     human_size(v["free_bytes"]), human_size(v["total_bytes"]),
                     human_size(v["growth_bytes"]), _eta(v.get("seconds_to_full")),
                     (v.get("reasons") or [""])[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True))
                     + "  " + r[-1] for r in rows)


def detail(v: dict[str, Any]) -> str:
    lines = [table([v]), ""]
    for c in v.get("chains") or []:
        lines.append(f"chain {c['root']}:{c['leaf']}  {c['risk']}  growth "
                     f"{human_size(c['growth_bytes'])}  snapshots {c['snapshots']}"
                     + "".join(f"\n  problem {p['code']}: {p['message']}"
                               for p in c.get("problems") or []))
    plan = v.get("plan") or {}
    for i, step in enumerate(plan.get("steps") or [], 1):
        lines.append(f"step {i}: {step['description']} (needs "
                     f"{human_size(step['needs_bytes'])}, free after "
                     f"{human_size(step['free_after_bytes'])})")
        if step.get("job"):
            lines.append(f"  submit: {json.dumps(step['job'], sort_keys=True)}")
    for item in plan.get("infeasible") or []:
        lines.append(f"infeasible: {item['why']}")
    return "\n".join(lines)


@_client
def cmd_volumes(args: argparse.Namespace) -> int:
    """List the volumes (or show one); exit 1 when any is at risk."""
    if args.volume_id:
        v, _ = call(args, "GET", f"/v1/volumes/{urllib.parse.quote(args.volume_id)}")
        print(json.dumps(v, indent=2) if args.json else detail(v))
        return EXIT_OK if v["risk"] == "ok" else EXIT_FAILED
    query = urllib.parse.urlencode({k: v for k, v in (("host", args.volume_host),
                                                       ("risk", args.risk)) if v})
    page, _ = call(args, "GET", "/v1/volumes" + (f"?{query}" if query else ""))
    items = page["items"]
    print(json.dumps(page, indent=2) if args.json else table(items))
    return EXIT_OK if all(v["risk"] == "ok" for v in items) else EXIT_FAILED
