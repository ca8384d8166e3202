"""Read-only commands: ``info``, ``map``, ``check``."""

from __future__ import annotations

import argparse
from typing import Any

import vhdlib
from vhdmend.commands.common import add_json, add_lenient, common_parent
from vhdmend.output import emit_json, print_info, print_volumes

NAMES = ("info", "map", "check")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parent = common_parent()
    p = sub.add_parser("info", parents=[parent], help="describe a disk and its chain",
                       description="Describe a VHD/VHDX disk and its whole differencing chain.")
    p.add_argument("path", help="the disk (for a chain: the newest file)")
    p.add_argument("--fs", action="store_true",
                   help="also read the guest's partitions and file systems (free space, "
                        "or why a partition would be kept whole by --reclaim fs)")
    add_lenient(p)
    add_json(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("map", parents=[parent], help="which ranges hold data, and where",
                       description="Map the virtual disk: data (which layer, which file "
                                   "offset), explicit zeros, unallocated. Like qemu-img map.")
    p.add_argument("path", help="the disk (for a chain: the newest file)")
    add_lenient(p)
    add_json(p)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("check", parents=[parent], help="check a disk's structures",
                       description="Check checksums, footer copies, BAT, parent link, orphan "
                                   "tail and interrupted operations. Exit 0 clean (notes are shown "
                                   "but do not count), 1 problems.")
    p.add_argument("path", help="the disk file")
    p.add_argument("--repair", action="store_true",
                   help="apply safe repairs only and say what was done")
    add_lenient(p)
    add_json(p)
    p.set_defaults(func=cmd_check)


# --- info -----------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    with vhdlib.open(args.path, lenient=args.lenient) as disk:
        info = disk.info()
        if args.fs:
            from vhdlib.volume import scan
            info["volumes"] = scan(disk).to_dict()
    if args.json:
        emit_json(info)
    else:
        print_info({k: v for k, v in info.items() if k != "volumes"})
        if "volumes" in info:
            print_volumes(info["volumes"])
    return 0


# --- map ------------------------------------------------------------------------------------

def cmd_map(args: argparse.Namespace) -> int:
    with vhdlib.open(args.path, lenient=args.lenient) as disk:
        chain = disk.chain
        extents: list[dict[str, Any]] = []
        for ext in disk.extents():
            d: dict[str, Any] = dict(ext.to_dict())
            if ext.layer is not None:
                d["file"] = chain[ext.layer]
            extents.append(d)
        virtual_size = disk.virtual_size
    if args.json:
        emit_json({"path": args.path, "virtual_size": virtual_size, "chain": chain,
                   "extents": extents})
        return 0
    print(f"{'Offset':<18} {'Length':<18} {'Kind':<12} {'Layer':<6} {'File offset':<18} File")
    for d in extents:
        layer = d.get("layer")
        fo = d.get("file_offset")
        print(f"{d['start']:<#18x} {d['length']:<#18x} {d['kind']:<12} "
              f"{'-' if layer is None else layer!s:<6} "
              f"{'-' if fo is None else hex(int(fo)):<18} {d.get('file', '-')}")
    return 0


# --- check ----------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    from vhdlib import check as check_mod

    # With --repair the report lists what is still wrong after the safe repairs.
    report = check_mod.check(args.path, repair=args.repair, lenient=args.lenient)
    status = 0 if report.clean else 1
    if args.json:
        emit_json(report.to_dict())
        return status
    for r in report.repairs:
        print(f"{args.path}: repaired: {r}")
    for p in report.problems:
        fix = " (repairable with --repair)" if p.repairable and not args.repair else ""
        print(f"{args.path}: {p.code}: {p.message}{fix}")
    for p in report.notes:
        fix = " (repairable with --repair)" if p.repairable and not args.repair else ""
        print(f"{args.path}: note: {p.code}: {p.message}{fix}")
    notes = f", {len(report.notes)} note(s)" if report.notes else ""
    print(f"{args.path}: " + ("clean" if report.clean else
                              f"{len(report.problems)} problem(s)") + notes)
    return status
