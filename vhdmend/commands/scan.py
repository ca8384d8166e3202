"""``vhdmend scan PATH...``: which volumes can fill, and (``--plan``) the way out.

Exit 0 when every volume is ``ok`` and no chain has a problem, 1 when a volume is at risk
or a chain has a problem (the alert for cron or a systemd timer), 2 usage, 3 a root that
cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from vhdlib.ops.options import SCAN
from vhdmend.commands.common import add_json, common_parent
from vhdmend.commands.declared import add_options
from vhdmend.output import emit_json
from vhdmend.sizes import human_size

NAMES = ("scan",)

EXIT_AT_RISK = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan", parents=[common_parent()], help="see it coming: volumes that can fill",
        description="Find every VHD/VHDX/AVHD/AVHDX file under PATH (by content), group "
                    "them into chains, and rate each volume: critical (free below the "
                    "reserve), warning (the disks can grow past free minus reserve) or ok. "
                    "Reads headers and BATs only. Exit 0 all ok, 1 at risk or a chain has a "
                    "problem, 2 usage, 3 a PATH cannot be read.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders (or files) to scan")
    add_options(p, SCAN)
    add_json(p)
    p.set_defaults(func=cmd_scan)


class ScanProgressLine:
    """One self-overwriting line on a terminal's stderr while a large tree is walked."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, files: int, disks: int) -> None:
        # Small trees finish before anyone looks: only after a second.
        if not self.enabled or time.monotonic() - self.start < 1.0:
            return
        self.stream.write(f"\rscanning: {files} files, {disks} disks ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def cmd_scan(args: argparse.Namespace) -> int:
    from vhdlib import scan
    from vhdlib.errors import UsageError
    from vhdlib.scan.plan import plan_all

    reserve = scan.DEFAULT_RESERVE if args.reserve is None else args.reserve
    if (args.allow_delete or args.spare_root) and not args.plan:
        raise UsageError("--allow-delete and --spare-root shape the plan: add --plan")
    if args.spare_root:
        import os
        if not os.path.isdir(args.spare_root):
            raise UsageError("--spare-root must be an existing folder", path=args.spare_root)
    line = ScanProgressLine(not (args.quiet or args.json))
    try:
        result = scan.scan(args.paths, reserve=reserve, progress=line,
                           reclaimable=args.reclaimable)
    finally:
        line.close()
    if args.plan:
        plan_all(result.volumes, result.chains, allow_delete=args.allow_delete,
                 spare_root=args.spare_root, reserve=reserve)
    data = result.to_dict()
    if args.json:
        emit_json(data)
    else:
        print_scan(data, plan=args.plan)
    return EXIT_AT_RISK if result.at_risk or result.has_problems else 0


# --- the table ------------------------------------------------------------------------------

def _h(n: Any) -> str:
    return "-" if n is None else human_size(int(n))


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def print_scan(data: dict[str, Any], *, plan: bool, stream: TextIO | None = None) -> None:
    """Volumes riskiest first (with reasons), then chains by growth, then the plans."""
    out = stream or sys.stdout
    vols = data["volumes"]
    if not vols:
        print(f"no disk files found ({data['files_scanned']} files scanned)", file=out)
    else:
        rows = [["VOLUME", "RISK", "TOTAL", "FREE", "DISKS", "GROWTH", "RESERVE"]]
        rows += [[v["mount"], v["risk"].upper() if v["risk"] != "ok" else "ok",
                  _h(v["total_bytes"]), _h(v["free_bytes"]), _h(v["disk_bytes"]),
                  _h(v["growth_bytes"]), _h(v["reserve_bytes"])] for v in vols]
        _table(rows, out)
        for v in vols:
            for reason in v["reasons"]:
                print(f"  {v['mount']}: {reason}", file=out)
    chains = data["chains"]
    if chains:
        print(file=out)
        rows = [["CHAIN (leaf)", "FMT", "VIRTUAL", "ALLOCATED", "MAX", "GROWTH", "SNAPS",
                 "OLDEST", "PROBLEMS"]]
        for c in chains:
            problems = ",".join(p["code"] for p in c["problems"]) or "-"
            if c.get("archived"):
                problems = "archived" if problems == "-" else problems + ",archived"
            rows.append([c["leaf"], c["format"] or "?", _h(c["virtual_size"]),
                         _h(c["allocated_bytes"]), _h(c["max_bytes"]), _h(c["growth_bytes"]),
                         str(c["snapshots"]), _age(c["oldest_snapshot_age_seconds"]),
                         problems])
        _table(rows, out)
        for c in chains:
            for p in c["problems"]:
                print(f"  {c['leaf']}: {p['code']}: {p['message']}", file=out)
            if c.get("vm"):
                print(f"  {c['leaf']}: {_vm_line(c['vm'], c.get('checkpoints') or [])}",
                      file=out)
        for cfg in data.get("unreadable_vm_configs") or []:
            print(f"  VM configuration not read: {cfg['path']}: {cfg['reason']}", file=out)
        for c in chains:
            if "reclaim" in c:
                print_reclaim(c["leaf"], c["reclaim"], out)
    if plan:
        for v in vols:
            if v.get("plan") is not None:
                print_volume_plan(v, out)
    print(f"\n{data['files_scanned']} files scanned, {data['disks_found']} disks, "
          f"{data['seconds']:.2f} s", file=out)


def print_reclaim(leaf: str, r: dict[str, Any], out: TextIO) -> None:
    if r["error"]:
        print(f"  {leaf}: reclaimable: not measured: {r['error']}", file=out)
        return
    print(f"  {leaf}: reclaimable {_h(r['reclaimable_bytes'])} (stored in free clusters; "
          f"file systems free {_h(r['fs_free_bytes'])})", file=out)
    for why in r["kept_whole"]:
        print(f"    kept whole: {why}", file=out)


def _vm_line(vm: dict[str, Any], checkpoints: list[dict[str, Any]]) -> str:
    slot = (f"{vm.get('controller_type') or '?'} {vm.get('controller_number')}:"
            f"{vm.get('controller_location')}")
    line = f"VM {vm.get('vm_name') or '?'} ({vm.get('vm_id') or '?'}), {slot}"
    if checkpoints:
        line += f", {len(checkpoints)} checkpoint(s) reference its layers"
    return line


def print_volume_plan(v: dict[str, Any], out: TextIO) -> None:
    p = v["plan"]
    print(f"\nplan for {v['mount']} ({v['risk']}; free {_h(v['free_bytes'])}):", file=out)
    if not p["steps"]:
        print("  no step fits", file=out)
    for i, s in enumerate(p["steps"], 1):
        print(f"  {i}. {' '.join(_quote(a) for a in s['argv'])}", file=out)
        print(f"     needs {_h(s['needs_bytes'])} free, takes {_h(s['takes_bytes'])}, "
              f"frees {_h(s['frees_bytes'])}: free after {_h(s['free_after_bytes'])}",
              file=out)
    for x in p["infeasible"]:
        print(f"  infeasible: {x['leaf']}: {x['why']}", file=out)
        for fix in x.get("would_fit_if") or []:
            print(f"    - {fix}", file=out)
    print(f"  after the plan: free {_h(p['free_after_bytes'])}, can still grow by "
          f"{_h(p['remaining_growth_bytes'])}: {p['remaining_risk']}", file=out)
    for reason in p["remaining_reasons"]:
        print(f"    {reason}", file=out)


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)
