"""``demo``: generate a bloated chain (dynamic base + 3 snapshots) and remediate it
(``--stack``: through a private local service stack, see :mod:`.stack_demo`)."""

from __future__ import annotations

import argparse

import vhdlib
from vhdmend.commands.common import add_json, common_parent
from vhdmend.commands.demo_files import demo_folder, print_sizes, sizes_of
from vhdmend.commands.operations import TYPES, run_with_progress
from vhdmend.output import emit_json, note
from vhdmend.sizes import human_size, size_arg

NAMES = ("demo",)

DEFAULT_SIZE = 512 << 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", parents=[common_parent()], help="remediate a generated bloated chain",
        description="Generate a bloated demo chain (a dynamic base.vhd and three Hyper-V "
                    "snapshots base_<GUID>.avhd with overlapping writes and explicit zero "
                    "blocks), remediate it with a progress bar, and print the sizes before "
                    "and after.")
    p.add_argument("--dir", help="folder for the chain (default: a new temporary folder); "
                                 "must not already hold a demo")
    p.add_argument("--size", type=size_arg, default=DEFAULT_SIZE,
                   help=f"virtual size of the demo disk (default {human_size(DEFAULT_SIZE)})")
    p.add_argument("--type", choices=TYPES, default="fixed",
                   help="type of the remediated disk (default fixed, as the manual cure)")
    from vhdlib.demo import demo_formats
    p.add_argument("--format", choices=demo_formats(), default="vhd",
                   help="format of the demo chain (default vhd)")
    p.add_argument("--stack", action="store_true",
                   help="through the service: start a private local stack (redis-server, "
                        "the API, one worker), submit a remediate job over HTTP, watch it, "
                        "verify the result, stop the stack (needs the 'service' extra and "
                        "redis-server)")
    add_json(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from vhdlib import demo, ops

    if args.stack:
        from vhdmend.commands.stack_demo import cmd_stack_demo
        return cmd_stack_demo(args)
    folder = demo_folder(args.dir)
    quiet = args.quiet or args.json
    note(f"generating a bloated {args.format} chain in {folder} "
         f"({human_size(args.size)} virtual)", quiet=quiet)
    chain = demo.make_bloated_chain(folder, size=args.size, fmt=args.format)
    newest = chain[-1]
    with vhdlib.open(newest) as disk:
        virtual_size = disk.virtual_size
    before = sizes_of(chain)
    if not quiet:
        print_sizes("before (the chain)", before)

    op = ops.prepare("remediate", str(newest), output=None, type=args.type, archive=None,
                     delete=False)
    outcome = run_with_progress(op, quiet=quiet)

    result = chain[0]  # the result takes the base disk's name
    with vhdlib.open(result) as disk:
        after_info = disk.info()
    after = sizes_of([result])
    saved = before["allocated_bytes"] - after["allocated_bytes"]
    if args.json:
        emit_json({"folder": str(folder), "virtual_size": virtual_size, "before": before,
                   "after": after, "result": after_info, "saved_bytes": saved,
                   "archive": outcome.get("archive")})
        return 0
    if not quiet:
        print_sizes(f"after (one {after_info.get('type')} disk)", after)
        pct = 100 * saved / before["allocated_bytes"] if before["allocated_bytes"] else 0.0
        print(f"virtual size {human_size(virtual_size)}: the result takes "
              f"{human_size(max(saved, 0))} ({pct:.0f}%) less space on the volume than the "
              f"chain did")
        print(f"the old chain is kept in {outcome.get('archive') or folder} until you "
              f"delete it")
    return 0
