"""``create``: a new fixed, dynamic or differencing VHD/VHDX."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from vhdlib import formats
from vhdlib.errors import UsageError
from vhdlib.layer import DiskType
from vhdmend.commands.common import add_json, common_parent
from vhdmend.output import emit_json, note
from vhdmend.sizes import human_size, size_arg

NAMES = ("create",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create", parents=[common_parent()], help="create a new disk",
                       description="Create a fixed (allocated), dynamic or differencing disk.")
    p.add_argument("path", help="the new file (must not exist)")
    p.add_argument("--size", type=size_arg,
                   help="virtual size: bytes or 10G, 512M, 1T (binary units); a "
                        "differencing disk defaults to its parent's size")
    p.add_argument("--type", required=True, choices=[t.value for t in DiskType],
                   help="disk type")
    p.add_argument("--parent", help="parent disk (differencing only)")
    p.add_argument("--block-size", type=size_arg,
                   help="payload block size (dynamic/differencing; default 2M)")
    p.add_argument("--format", choices=formats.writable_names(),
                   help="image format (default: from the file name's suffix, else vhd)")
    p.add_argument("--sparse", action="store_true",
                   help="fixed only: do not allocate the data area (it may later fail "
                        "to write on a full volume)")
    add_json(p)
    p.set_defaults(func=cmd_create)


def format_for(path: str, explicit: str | None) -> str:
    """The format a file name's suffix names (``.vhdx``/``.avhdx``: vhdx...), else vhd
    (unless given)."""
    if explicit:
        return explicit
    return formats.name_from_suffix(path) or formats.VHD.name


def cmd_create(args: argparse.Namespace) -> int:
    disk_type = DiskType(args.type)
    fmt = format_for(args.path, args.format)
    if disk_type is DiskType.DIFFERENCING and not args.parent:
        raise UsageError("a differencing disk needs --parent")
    if disk_type is not DiskType.DIFFERENCING and args.parent:
        raise UsageError("--parent is only for --type differencing")
    if args.sparse and disk_type is not DiskType.FIXED:
        raise UsageError("--sparse is only for --type fixed")
    if args.block_size is not None and disk_type is DiskType.FIXED:
        raise UsageError("--block-size is not for --type fixed")
    if args.size is None and disk_type is not DiskType.DIFFERENCING:
        raise UsageError(f"--size is required for --type {disk_type.value}")
    if os.path.lexists(args.path):
        raise UsageError("already exists; vhdmend never overwrites a disk", path=args.path)

    request = formats.NewDisk(args.size, disk_type, block_size=args.block_size or 0,
                              sparse=args.sparse)
    if disk_type is DiskType.DIFFERENCING:
        parent_layer = formats.open_layer(args.parent)
        try:
            request = replace(request, virtual_size=args.size or parent_layer.virtual_size,
                              parent=parent_layer)
            layer = formats.create(args.path, fmt, request)
        finally:
            parent_layer.close()
    else:
        layer = formats.create(args.path, fmt, request)
    try:
        info = layer.info()
    finally:
        layer.close()
    if args.json:
        emit_json(info)
    else:
        note(f"created {args.path}: {fmt} {disk_type.value}, "
             f"{human_size(int(info['virtual_size']))}", quiet=args.quiet)
    return 0
